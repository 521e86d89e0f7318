package replay

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/delegations/delegations/eventlog"
	"github.com/delegations/delegations/eventlog/historytest"
	"github.com/delegations/delegations/fsm"
	"github.com/delegations/delegations/projection"
)

// TestArtifactOfFinalOwner: on a log shared by several daemons, an
// artifact is the care of the daemon that owns its delegation at the end
// of the replay (or at Until), not of the one that persisted it. Daemon
// "A" persists two artifacts; "B" takes both delegations over, one while
// its notification waits, the other once it was settled (and dropped by
// the fold, which brings it back for the owned event). With the files
// missing, verify, replay and diagnose through B find them missing,
// through A nothing; through no daemon in particular (a single-daemon
// store), both are missing, as always.
func TestArtifactOfFinalOwner(t *testing.T) {
	dir := t.TempDir()
	l, err := eventlog.Open(filepath.Join(dir, projection.LogFile), eventlog.Options{Projectors: []eventlog.Projector{projection.ViewsProjector()}})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	ids := historytest.IDs(fsm.NewIDGenerator(nil), 2)
	t0 := time.Date(2026, 11, 21, 10, 0, 0, 0, time.UTC)
	owned := func(id string, at time.Time) eventlog.Entry {
		e := fsm.Event{Kind: fsm.KindOwned, ID: id, At: at, Owner: "B"}
		return eventlog.Entry{Kind: uint16(e.Kind), Time: at, Payload: e.MarshalPayload()}
	}
	var files []string
	var waiting, settled []eventlog.Entry
	for i, id := range ids {
		entries, rel, file := benchHistory(id, i, t0)
		files = append(files, filepath.Join(dir, rel))
		if err := os.MkdirAll(filepath.Dir(files[i]), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(files[i], file, 0o600); err != nil {
			t.Fatal(err)
		}
		reg, err := fsm.UnmarshalPayload(fsm.KindRegistered, id, entries[0].Time, entries[0].Payload)
		if err != nil {
			t.Fatal(err)
		}
		reg.Owner = "A"
		entries[0].Payload = reg.MarshalPayload()
		if i == 0 {
			// Taken over after its persisted event (the 7th), before its
			// notification.
			waiting = slices.Insert(entries, 7, owned(id, entries[6].Time.Add(time.Millisecond)))
		} else {
			settled = entries
		}
	}
	ctx := context.Background()
	for _, a := range []eventlog.Append{
		{Stream: ids[0], Entries: waiting},
		{Stream: ids[1], Entries: settled},
		{Stream: ids[1], Entries: []eventlog.Entry{owned(ids[1], t0.Add(time.Hour))}},
	} {
		if _, err := l.Append(ctx, a); err != nil {
			t.Fatal(err)
		}
	}
	persisted0 := uint64(7) // the first delegation's persisted event, owned by A then

	// missing returns the delegations whose artifact rep finds missing
	// (a replay also finds the first one not notified: it never was).
	missing := func(rep *Report) []string {
		var out []string
		for _, f := range rep.Findings {
			switch f.Code {
			case CodeArtifactMissing:
				out = append(out, f.Delegation)
			case CodeArtifactChanged, CodeArtifactUnreadable, CodeArtifactNotReproduced:
				t.Errorf("unexpected finding %s of %s: %s", f.Code, f.Delegation, f.Diagnosis)
			}
		}
		return out
	}
	check := func(what string, rep *Report, err error, want []string) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		if got := missing(rep); !slices.Equal(got, want) {
			t.Errorf("%s: artifacts missing %v, want %v", what, got, want)
		}
		if rep.Artifacts != 2 && rep.Until.IsZero() {
			t.Errorf("%s: %d artifacts checked, want 2", what, rep.Artifacts)
		}
	}
	now := t0.Add(2 * time.Hour)
	rep, err := Verify(ctx, l, dir, Options{Now: now, Self: "B"})
	check("files there, verify through B", rep, err, nil)

	for _, f := range files {
		if err := os.Remove(f); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []struct {
		self string
		want []string
	}{
		{"", ids},
		{"A", nil},
		{"B", ids},
	} {
		rep, err := Verify(ctx, l, dir, Options{Now: now, Self: c.self})
		check("verify through "+quote(c.self), rep, err, c.want)
		rep, err = Run(ctx, l, dir, Options{Now: now, Self: c.self, Until: Point{Seq: persisted0}})
		want := ids[:1] // A owned the first delegation then; the second was not persisted
		if c.self == "B" {
			want = nil
		}
		check("replay through "+quote(c.self)+" until the first persisted event", rep, err, want)
		for i, id := range ids {
			fs, err := Diagnose(ctx, l, dir, id, Options{Now: now, Self: c.self})
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, f := range fs {
				if f.Code == CodeArtifactMissing {
					got = append(got, f.Delegation)
				}
			}
			if want := ids[i : i+1]; c.self == "A" && got != nil || c.self != "A" && !slices.Equal(got, want) {
				t.Errorf("diagnose %s through %q: artifacts missing %v", id, c.self, got)
			}
		}
	}
}
