package projection

import (
	"context"
	"testing"

	"github.com/delegations/delegations/eventlog"
	"github.com/delegations/delegations/fsm"
)

// TestInspectViews decodes every view of a store with delegations in every
// step and checks the decoded entries against the records.
func TestInspectViews(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, t.TempDir())
	running := register(t, s)
	if _, err := s.Start(ctx, running.ID, "ses_child"); err != nil {
		t.Fatal(err)
	}
	done := register(t, s)
	if _, err := s.Complete(ctx, done.ID, "result", "", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Ack(ctx, TerminalNotificationID(done.ID)); err != nil {
		t.Fatal(err)
	}
	due := register(t, s)
	if _, err := s.Cancel(ctx, due.ID, ""); err != nil {
		t.Fatal(err)
	}

	// Each delegation's ordinal: the sequence number of its registration.
	ordinals := map[string]uint64{}
	for _, d := range []fsm.Delegation{running, done, due} {
		if err := s.Log().View(func(tx *eventlog.Tx) error {
			first, err := tx.Stream(d.ID)
			if err == nil && len(first) > 0 {
				ordinals[d.ID] = first[0].Seq
			}
			return err
		}); err != nil {
			t.Fatal(err)
		}
	}
	seen := map[string]int{}
	err := s.Log().View(func(tx *eventlog.Tx) error {
		if cp := ViewsCheckpoint(tx); cp != tx.Last() || cp == 0 {
			t.Errorf("checkpoint %d, last %d", cp, tx.Last())
		}
		if d, err := InspectRecord(tx, done.ID); err != nil || d == nil || d.State != fsm.Complete {
			t.Errorf("InspectRecord = %+v, %v", d, err)
		}
		if d, err := InspectRecord(tx, "no-such-one"); err != nil || d != nil {
			t.Errorf("InspectRecord(unknown) = %+v, %v", d, err)
		}
		return InspectViews(tx, func(e ViewEntry) error {
			seen[e.View]++
			if e.Err != nil {
				t.Errorf("%s %q: %v", e.View, e.Key, e.Err)
				return nil
			}
			if len(e.Value) == 0 && (e.View == ViewRecords || e.View == ViewOutbox || e.View == ViewCycles || e.View == ViewMembers) {
				t.Errorf("%s %q: no value", e.View, e.Key)
			}
			d, err := s.Get(e.ID)
			switch e.View {
			case ViewCycles:
				if e.Session != "ses_parent" || e.Cycle == nil {
					t.Errorf("cycles entry %+v", e)
				}
				return nil
			case ViewDue:
				if e.Session != "ses_parent" || e.ID != TerminalNotificationID(due.ID) {
					t.Errorf("due entry %+v", e)
				}
				return nil
			case ViewOutbox:
				if e.Notification == nil || e.Notification.Delegation != e.ID {
					t.Errorf("outbox entry %+v", e)
				}
			}
			if err != nil {
				t.Errorf("%s entry names %q: %v", e.View, e.ID, err)
				return nil
			}
			switch e.View {
			case ViewRecords:
				r, err := fsm.UnmarshalDelegation(e.Record)
				if err != nil || r.ID != d.ID || r.Version != d.Version || e.Ordinal != ordinals[e.ID] {
					t.Errorf("record %+v, %v", r, err)
				}
			case ViewRunning:
				if e.ID != running.ID || e.Session != d.RootSessionID || !e.Time.Equal(d.CreatedAt) {
					t.Errorf("running entry %+v", e)
				}
			case ViewDeadlines:
				if !e.Time.Equal(d.TimeoutAt) {
					t.Errorf("deadlines entry %+v", e)
				}
			case ViewUnread:
				if e.ID != done.ID || e.Session != d.RootSessionID || !e.Time.Equal(d.CompletedAt) {
					t.Errorf("unread entry %+v", e)
				}
			case ViewRoots:
				if e.Session != d.RootSessionID || e.Ordinal != ordinals[e.ID] {
					t.Errorf("roots entry %+v", e)
				}
			case ViewSummaries:
				r, err := fsm.UnmarshalSummary(e.Record)
				if err != nil || e.Session != d.RootSessionID || e.Ordinal != ordinals[e.ID] || r != d.Summary() {
					t.Errorf("summaries entry %+v: %+v, %v", e, r, err)
				}
			case ViewTexts:
				if e.Ordinal != ordinals[e.ID] || string(e.Value) != *d.Texts()[e.Text] {
					t.Errorf("texts entry %+v", e)
				}
			case ViewParents:
				if e.Session != d.ParentSessionID || e.Ordinal != ordinals[e.ID] {
					t.Errorf("parents entry %+v", e)
				}
			case ViewMembers:
				if e.Member == 0 || e.Ordinal != ordinals[e.ID] {
					t.Errorf("members entry %+v", e)
				}
			}
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]int{ViewRecords: 3, ViewRoots: 3, ViewSummaries: 3, ViewTexts: 4, ViewParents: 3, ViewRunning: 1, ViewDeadlines: 1,
		ViewUnread: 1, ViewCycles: 1, ViewMembers: 3, ViewOutbox: 1, ViewDue: 1}
	for v, n := range want {
		if seen[v] != n {
			t.Errorf("view %s: %d entries, want %d", v, seen[v], n)
		}
	}
}

func TestDecodeViewEntryMalformed(t *testing.T) {
	for _, c := range []struct{ view, key, value string }{
		{ViewRoots, "no-nul", ""},
		{ViewRoots, "root\x00id", "short"},
		{ViewRecords, "id", "short"},
		{ViewSummaries, "root\x00short", ""},
		{ViewSummaries, "root\x00\x00\x00\x00\x00\x00\x00\x00\x01", "not a summary"},
		{ViewTexts, "\x00\x00\x00\x00\x00\x00\x00\x01\x00", "short"},
		{ViewTexts, "short", ""},
		{ViewRunning, "root\x00short", ""},
		{ViewDeadlines, "short", ""},
		{ViewCycles, "p", "{not json"},
		{ViewMembers, "id", "123"},
		{ViewMembers, "\x00\x00\x00\x00\x00\x00\x00\x01", "12345678"},
		{ViewParents, "p\x00short", "id"},
		{ViewOutbox, "n", "["},
	} {
		if e := DecodeViewEntry(c.view, []byte(c.key), []byte(c.value)); e.Err == nil {
			t.Errorf("%s %q %q: no error", c.view, c.key, c.value)
		}
	}
}
