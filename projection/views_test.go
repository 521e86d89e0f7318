package projection

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"math/rand/v2"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/delegations/delegations/eventlog"
	"github.com/delegations/delegations/eventlog/historytest"
	"github.com/delegations/delegations/fsm"
	"github.com/delegations/delegations/projection/artifact"
	"github.com/delegations/delegations/projection/clocktest"
)

// dumpViews copies every view bucket: bucket \0 key → value.
func dumpViews(t *testing.T, s *Store) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := s.log.View(func(tx *eventlog.Tx) error {
		for _, name := range viewBuckets {
			b, err := tx.Bucket(name)
			if err != nil || b == nil {
				return err
			}
			if err := b.ForEach(func(k, v []byte) error {
				out[name+"\x00"+string(k)] = string(v)
				return nil
			}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestViewsUpgradeFromV1 opens a file whose views an older build wrote:
// projector "views/v1", records as JSON, and a stale view entry. The views
// projector is new to the file, so the log replays every record into it;
// it must start from empty views and end byte for byte where a store that
// always ran this build would be.
func TestViewsUpgradeFromV1(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, clock := openManual(t, dir)
	var ids []string
	for i := range 5 {
		d := register(t, s)
		ids = append(ids, d.ID)
		clock.Advance(time.Second)
		switch i {
		case 0: // read
			s.Complete(ctx, d.ID, "first", "", "")
			s.Ack(ctx, TerminalNotificationID(d.ID))
			s.Read(ctx, "ses_root", d.ID, 0)
		case 1: // unread
			s.Progress(ctx, d.ID, "partial")
			s.Timeout(ctx, d.ID)
			s.Ack(ctx, TerminalNotificationID(d.ID))
		case 2: // terminal notification due
			s.Cancel(ctx, d.ID, "")
		case 3: // running
			s.Start(ctx, d.ID, "ses_child")
			s.Progress(ctx, d.ID, "half way")
		}
	}
	r := registration()
	r.RootSessionID, r.ParentSessionID = "ses_root2", "ses_parent2"
	other, err := s.Register(ctx, r)
	if err != nil {
		t.Fatal(err)
	}
	ids = append(ids, other.ID)
	s.Complete(ctx, other.ID, "elsewhere", "", "")
	s.Ack(ctx, TerminalNotificationID(other.ID)) // all-complete of ses_parent2 due

	want := map[string]fsm.Delegation{}
	for _, id := range ids {
		if want[id], err = s.Get(id); err != nil {
			t.Fatal(err)
		}
	}
	wantRunning, wantUnread, err := s.Carried("ses_root", 0)
	if err != nil || len(wantRunning) != 2 || len(wantUnread) != 1 {
		t.Fatalf("carried before: %d running, %d unread, %v", len(wantRunning), len(wantUnread), err)
	}
	wantViews := dumpViews(t, s)
	wantNotes := mustNotifications(t, s)
	s.Close()

	// Make the file look like the v1 build left it. "views" and
	// "checkpoints" are eventlog's buckets of view buckets and checkpoints.
	db, err := bolt.Open(filepath.Join(dir, LogFile), 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	current := views{}.Name()
	err = db.Update(func(tx *bolt.Tx) error {
		views := tx.Bucket([]byte("views"))
		recs := views.Bucket([]byte(bucketRecords))
		old := map[string][]byte{}
		if err := recs.ForEach(func(k, v []byte) error {
			ord, v := binary.BigEndian.Uint64(v), v[8:]
			if v[0] == rootPointerTag {
				v = views.Bucket([]byte(bucketSummaries)).Get(ordKey(string(v[1:]), ord))
			}
			d, err := fsm.UnmarshalDelegation(v)
			if err != nil {
				return err
			}
			old[string(k)], err = json.Marshal(d)
			return err
		}); err != nil {
			return err
		}
		for k, v := range old {
			if err := recs.Put([]byte(k), v); err != nil {
				return err
			}
		}
		ghost := rootTimeKey("ses_root", time.Unix(0, 0), "ghost-blue-tiger")
		if err := views.Bucket([]byte(bucketRunning)).Put(ghost, nil); err != nil {
			return err
		}
		cps := tx.Bucket([]byte("checkpoints"))
		cp := slices.Clone(cps.Get([]byte(current)))
		if len(cp) != 8 {
			t.Errorf("%s checkpoint = %x", current, cp)
		}
		if err := cps.Delete([]byte(current)); err != nil {
			return err
		}
		return cps.Put([]byte("views/v1"), cp)
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	s, err = Open(dir, Options{Now: clocktest.New(clock.Now()).Now})
	if err != nil {
		t.Fatalf("open after the upgrade: %v", err)
	}
	defer s.Close()
	for _, id := range ids {
		got, err := s.Get(id)
		if err != nil {
			t.Fatalf("record %s: %v", id, err)
		}
		if !reflect.DeepEqual(got, want[id]) {
			t.Errorf("record %s:\n got %+v\nwant %+v", id, got, want[id])
		}
	}
	running, unread, err := s.Carried("ses_root", 0)
	if err != nil || !reflect.DeepEqual(running, wantRunning) || !reflect.DeepEqual(unread, wantUnread) {
		t.Errorf("carried after the upgrade: %+v %+v %v", running, unread, err)
	}
	if got := dumpViews(t, s); !reflect.DeepEqual(got, wantViews) {
		for k, v := range got {
			if w, ok := wantViews[k]; !ok || w != v {
				t.Errorf("view entry %q = %q, want %q (present %v)", k, v, w, ok)
			}
		}
		for k := range wantViews {
			if _, ok := got[k]; !ok {
				t.Errorf("view entry %q missing", k)
			}
		}
	}
	if got := mustNotifications(t, s); !reflect.DeepEqual(got, wantNotes) {
		t.Errorf("notifications after the upgrade:\n got %+v\nwant %+v", got, wantNotes)
	}
	if err := s.Log().Verify(ctx); err != nil {
		t.Errorf("verify after the upgrade: %v", err)
	}

	// The store keeps working on the rebuilt views.
	if d, err := s.Complete(ctx, ids[3], "done", "", ""); err != nil || d.State != fsm.Complete || d.Progress != "half way" {
		t.Fatalf("complete after the upgrade: %+v %v", d, err)
	}
	if running, _, err := s.Carried("ses_root", 0); err != nil || len(running) != 1 || running[0].ID != ids[4] {
		t.Fatalf("running after the upgrade: %+v %v", running, err)
	}
}

// TestRecordsViewIsBinary pins what the views hold of a record: the
// summaries view the binary form of the record without its texts, under
// its root and ordinal (the sequence number of its registration), which
// decodes to what Get returns without them; the records view its ordinal
// and a pointer to it; the roots view its ordinal under its root and id;
// the texts view, under its ordinal, the events that hold the texts.
func TestRecordsViewIsBinary(t *testing.T) {
	s := openStore(t, t.TempDir())
	register(t, s)
	d := register(t, s)
	const ord = 2 // the second registration, the second record
	err := s.log.View(func(tx *eventlog.Tx) error {
		b, err := tx.Bucket(bucketRecords)
		if err != nil {
			return err
		}
		if ptr := b.Get([]byte(d.ID)); string(ptr) != "\x00\x00\x00\x00\x00\x00\x00\x02\x00"+d.RootSessionID {
			t.Errorf("records view holds %q, want ordinal 2 and a pointer to root %q", ptr, d.RootSessionID)
		}
		roots, err := tx.Bucket(bucketRoots)
		if err != nil {
			return err
		}
		if v := roots.Get(pairKey(d.RootSessionID, d.ID)); string(v) != string(be64(ord)) {
			t.Errorf("roots view holds %q, want ordinal 2", v)
		}
		sums, err := tx.Bucket(bucketSummaries)
		if err != nil {
			return err
		}
		raw := sums.Get([]byte(d.RootSessionID + "\x00\x00\x00\x00\x00\x00\x00\x00\x02"))
		if len(raw) == 0 || raw[0] != fsm.RecordVersion {
			t.Errorf("summaries view holds %q", raw)
		}
		got, err := fsm.UnmarshalDelegation(raw)
		if want := d.Summary(); err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("decoded %+v, %v; want %+v", got, err, want)
		}
		texts, err := tx.Bucket(bucketTexts)
		if err != nil {
			return err
		}
		// The prompt stays in its event; the texts view names that event.
		v := texts.Get([]byte("\x00\x00\x00\x00\x00\x00\x00\x02\x00"))
		if len(v) != textRefLen+len(d.ID) || string(v[textRefLen:]) != d.ID {
			t.Errorf("texts view holds %q for the prompt, want a reference and the id", v)
		}
		if text, err := readText(tx, v, 0, true); text != d.Prompt || d.Prompt == "" || err != nil {
			t.Errorf("texts view's prompt reads %q, %v; want %q", text, err, d.Prompt)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// writeLog writes a log of the given events (one append each, no
// projectors) into a new data directory, as `delegations recover` does.
func writeLog(t *testing.T, events []fsm.Event) string {
	t.Helper()
	dir := t.TempDir()
	l, err := eventlog.Open(filepath.Join(dir, LogFile), eventlog.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for _, e := range events {
		if _, err := l.Append(context.Background(), eventlog.Append{Stream: e.ID, Entries: []eventlog.Entry{{Kind: uint16(e.Kind), Time: e.At, Payload: e.MarshalPayload()}}}); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// TestViewsUnregisteredDelegation: a recovered log may hold a delegation's
// later events without its registered event (the damage took it). The
// views keep its record and index nothing else (its parent is unknown:
// the projector once put the cycle of parent "" and failed with bbolt's
// bare "key required"), and replay's rules agree with them.
func TestViewsUnregisteredDelegation(t *testing.T) {
	at := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	dir := writeLog(t, []fsm.Event{
		{Kind: fsm.KindStarted, ID: "elegant-blue-tiger", At: at, Registration: fsm.Registration{
			SessionID: "ses_child",
		}},
		{Kind: fsm.KindCompleted, ID: "elegant-blue-tiger", At: at.Add(time.Second), Result: "done"},
		{Kind: fsm.KindNotified, ID: "elegant-blue-tiger", At: at.Add(2 * time.Second)},
	})
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatalf("open a log with an unregistered delegation: %v", err)
	}
	defer s.Close()
	d, err := s.Get("elegant-blue-tiger")
	if err != nil || d.State != fsm.Complete || d.Result != "done" {
		t.Fatalf("its record: %+v, %v", d, err)
	}
	for k := range dumpViews(t, s) {
		// Its record and its texts are its own; nothing indexes it.
		if b, _, _ := strings.Cut(k, "\x00"); b != bucketRecords && b != bucketTexts {
			t.Errorf("view entry for an unregistered delegation: %q", k)
		}
	}
}

// TestViewsUnindexableRecord: an intact record the views cannot key on
// (here a registration naming no parent session, which no build writes)
// stops the catch-up with a CorruptError naming its sequence number, not
// bbolt's bare "key required".
func TestViewsUnindexableRecord(t *testing.T) {
	at := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	dir := writeLog(t, []fsm.Event{
		{Kind: fsm.KindRegistered, ID: "happy-green-frog", At: at, Registration: fsm.Registration{
			ProjectID: "p", RootSessionID: "ses_root", ParentSessionID: "ses_root", Agent: "a",
			Prompt: "p", Timeout: time.Minute,
		}},
		{Kind: fsm.KindRegistered, ID: "sleepy-red-fox", At: at, Registration: fsm.Registration{
			ProjectID: "p", RootSessionID: "ses_root", Agent: "a", Prompt: "p", Timeout: time.Minute,
		}},
	})
	s, err := Open(dir, Options{})
	if err == nil {
		s.Close()
		t.Fatal("a registration with no parent session was projected")
	}
	var ce *eventlog.CorruptError
	if !errors.As(err, &ce) || ce.Seq != 2 || !errors.Is(err, eventlog.ErrCorrupt) {
		t.Fatalf("got %v (%T), want a CorruptError for record 2", err, err)
	}
}

// TestRecordPointerDangling: a records view entry pointing at a summaries
// entry that is not there is an error naming the delegation and the way
// out, for Get and for replay's inspection, never a record made up.
func TestRecordPointerDangling(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	d := register(t, s)
	s.Close()
	db, err := bolt.Open(filepath.Join(dir, LogFile), 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket([]byte("views")).Bucket([]byte(bucketSummaries)).Delete(ordKey(d.RootSessionID, 1))
	})
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
	s = openStore(t, dir)
	if _, err := s.Get(d.ID); err == nil || !strings.Contains(err.Error(), d.ID) || !strings.Contains(err.Error(), "replay") {
		t.Fatalf("Get of a dangling pointer: %v", err)
	}
	var bad error
	err = s.log.View(func(tx *eventlog.Tx) error {
		return InspectViews(tx, func(e ViewEntry) error {
			if e.View == ViewRecords && e.ID == d.ID {
				bad = e.Err
			}
			return nil
		})
	})
	if err != nil || bad == nil {
		t.Fatalf("InspectViews: entry error %v, %v", bad, err)
	}
}

var viewPagesEvents = flag.Int("viewpages.events", 200_000, "events of history in BenchmarkViewPages's large store")

// BenchmarkViewPages: do the pages a command writes follow the live
// delegations, not the history? Two stores, one holding only three
// delegations that stay running, one holding besides them
// -viewpages.events events (200,000 by default) of finished lifecycles in
// the same root and parents (appended through the log, one delegation's 9
// events per append). On each, 16 delegations run whole lifecycles
// (register, start, 3 progress, complete with its artifact, ack, read)
// step by step: each step of the 16 at once, so that the log commits
// their appends together, as it does for a daemon's clients.
// pages/append-* is the pages the commits allocated (eventlog.Log.Allocated)
// over the appends; ratio(≈1) is large over empty. A commit writes a leaf
// page and the branch pages above it for each bucket it changes, however
// many of its appends change that leaf: on a large store, where the trees
// are deeper, appends that write keys far apart in a view write a leaf
// and branches each.
func BenchmarkViewPages(b *testing.B) {
	ctx := context.Background()
	var pages [2]float64
	for i, events := range []int{0, *viewPagesEvents} {
		s := openStore(b, b.TempDir())
		var anchors []fsm.Delegation
		for _, p := range []string{"ses_pA", "ses_pB", "ses_pC"} {
			r := registration()
			r.ParentSessionID, r.Timeout = p, 24*time.Hour
			d, err := s.Register(ctx, r)
			if err != nil {
				b.Fatal(err)
			}
			anchors = append(anchors, d)
		}
		appendHistory(b, s, anchors, events/9)
		var appends, allocated int64
		for range b.N {
			before := s.log.Allocated()
			appends += runInterleaved(b, s, anchors, 16)
			allocated += s.log.Allocated() - before
		}
		pages[i] = float64(allocated) / 4096 / float64(appends)
		s.Close()
	}
	b.ReportMetric(pages[0], "pages/append-empty")
	b.ReportMetric(pages[1], "pages/append-large")
	b.ReportMetric(pages[1]/pages[0], "ratio(≈1)")
}

// appendHistory appends n finished lifecycles (registered to read) of the
// registration's root, under the anchors' parents in turn, each in one
// append, from 16 goroutines.
func appendHistory(b *testing.B, s *Store, anchors []fsm.Delegation, n int) {
	ids := historytest.IDs(fsm.NewIDGenerator(rand.NewChaCha8([32]byte{13})), n)
	start := time.Now().Add(-time.Duration(n) * time.Second)
	err := historytest.Append(context.Background(), s.log, n, 16, func(i int) (eventlog.Append, error) {
		id := ids[i]
		r := registration()
		r.ParentSessionID = anchors[i%len(anchors)].ParentSessionID
		rel, _ := artifact.RelPath(r.ProjectID, r.RootSessionID, id)
		events := historytest.Finished(fsm.Registration{ProjectID: r.ProjectID, RootSessionID: r.RootSessionID, ParentSessionID: r.ParentSessionID},
			rel, TerminalNotificationID(id))
		entries := historytest.Entries(id, start.Add(time.Duration(i)*time.Second), time.Millisecond, events)
		return eventlog.Append{Stream: id, Entries: entries, CheckVersion: true}, nil
	})
	if err != nil {
		b.Fatal(err)
	}
}

// runInterleaved runs n whole lifecycles under the anchors' parents, step
// by step, each step of all n at once, and returns how many appends they
// made.
func runInterleaved(b *testing.B, s *Store, anchors []fsm.Delegation, n int) int64 {
	ctx := context.Background()
	ds := make([]fsm.Delegation, n)
	first := s.log.Last()
	steps := []func(i int) error{
		func(i int) (err error) {
			r := registration()
			r.ParentSessionID = anchors[i%len(anchors)].ParentSessionID
			ds[i], err = s.Register(ctx, r)
			return err
		},
		func(i int) error { _, err := s.Start(ctx, ds[i].ID, "ses_child"); return err },
		func(i int) error { _, err := s.Progress(ctx, ds[i].ID, "step 0: reading the retry layer"); return err },
		func(i int) error { _, err := s.Progress(ctx, ds[i].ID, "step 1: reading the retry layer"); return err },
		func(i int) error { _, err := s.Progress(ctx, ds[i].ID, "step 2: reading the retry layer"); return err },
		func(i int) error {
			_, err := s.Complete(ctx, ds[i].ID, "TestLock races the token refresh.", "Flaky test", "The refresh races the logout.")
			return err
		},
		func(i int) error { _, err := s.Ack(ctx, TerminalNotificationID(ds[i].ID)); return err },
		func(i int) error { _, err := s.Read(ctx, ds[i].RootSessionID, ds[i].ID, 0); return err },
	}
	for _, step := range steps {
		var wg sync.WaitGroup
		errs := make(chan error, n)
		for i := range ds {
			wg.Go(func() {
				if err := step(i); err != nil {
					errs <- err
				}
			})
		}
		wg.Wait()
		close(errs)
		if err := <-errs; err != nil {
			b.Fatal(err)
		}
	}
	// One append per event: no command here appends two in one.
	return int64(s.log.Last() - first)
}
