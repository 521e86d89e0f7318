package replay_test

import (
	"context"
	"encoding/binary"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/delegations/delegations/eventlog"
	"github.com/delegations/delegations/fsm"
	"github.com/delegations/delegations/projection"
	"github.com/delegations/delegations/replay"
)

// editViews changes the views of the closed store in dir directly, as a
// damaged or edited file would hold them. fn gets the bucket of views.
func editViews(t *testing.T, dir string, fn func(views *bolt.Bucket) error) {
	t.Helper()
	db, err := bolt.Open(filepath.Join(dir, projection.LogFile), 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Update(func(tx *bolt.Tx) error { return fn(tx.Bucket([]byte("views"))) }); err != nil {
		t.Fatal(err)
	}
}

// verifyAlone verifies the data directory with the log opened alone: the
// views are verify's to compare.
func verifyAlone(t *testing.T, dir string, now time.Time) *replay.Report {
	t.Helper()
	l, err := eventlog.Open(filepath.Join(dir, projection.LogFile), eventlog.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	rep, err := replay.Verify(context.Background(), l, dir, replay.Options{Now: now})
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

// mismatches returns the view_mismatch findings by view.
func mismatches(rep *replay.Report) map[string][]replay.Finding {
	out := map[string][]replay.Finding{}
	for _, f := range rep.Findings {
		if f.Code == replay.CodeViewMismatch {
			out[f.View] = append(out[f.View], f)
		}
	}
	return out
}

// TestViewMismatches edits each kind of view entry (a value that differs,
// an entry the log does not explain, one it says is missing, a key that
// holds the wrong time, a view no build writes) and checks that verify
// names each one with its delegation or parent and what differs, in rounds
// of a few entries so that the comparison resumes inside every view.
func TestViewMismatches(t *testing.T) {
	defer replay.SetRoundEntries(3)()
	c := newClock()
	dir := t.TempDir()
	s := open(t, dir, c)
	ids := populate(t, s, c, 16)
	s.Close()
	if rep := verifyAlone(t, dir, c.Now()); !rep.ViewsChecked || len(mismatches(rep)) != 0 {
		t.Fatalf("before the damage:\n%s", rep)
	}
	running := ids[5] // populate leaves i%8 == 5 running
	editViews(t, dir, func(views *bolt.Bucket) error {
		// The cycle of a parent: one more active delegation than the log says.
		cycles := views.Bucket([]byte(projection.ViewCycles))
		k, v := cycles.Cursor().First()
		if err := cycles.Put(k, []byte(strings.Replace(string(v), `"active":`, `"active":9`, 1))); err != nil {
			return err
		}
		// An outbox entry nothing made due.
		if err := views.Bucket([]byte(projection.ViewOutbox)).Put([]byte("terminal:ghost"),
			[]byte(`{"id":"terminal:ghost","kind":"terminal","delegationId":"ghost","parentSessionID":"ses_parent0","seq":3}`)); err != nil {
			return err
		}
		// A text lost: its key is the delegation's ordinal (where its
		// records entry starts) and the text's number.
		ord := views.Bucket([]byte(projection.ViewRecords)).Get([]byte(ids[0]))[:8]
		if err := views.Bucket([]byte(projection.ViewTexts)).Delete(append(append([]byte(nil), ord...), 0)); err != nil {
			return err
		}
		// A deadline moved by a minute: its key holds the time.
		deadlines := views.Bucket([]byte(projection.ViewDeadlines))
		cur := deadlines.Cursor()
		for k, _ := cur.First(); k != nil; k, _ = cur.Next() {
			if strings.HasSuffix(string(k), "\x00"+running) {
				moved := binary.BigEndian.AppendUint64(nil, binary.BigEndian.Uint64(k)+uint64(time.Minute))
				moved = append(append(moved, 0), running...)
				if err := deadlines.Delete(k); err != nil {
					return err
				}
				if err := deadlines.Put(moved, nil); err != nil {
					return err
				}
				break
			}
		}
		// A view this build does not write.
		b, err := views.CreateBucket([]byte("zz-unknown"))
		if err != nil {
			return err
		}
		return b.Put([]byte("key"), []byte("value"))
	})
	rep := verifyAlone(t, dir, c.Now())
	got := mismatches(rep)
	for _, want := range []struct {
		view, delegation, parent, words string
	}{
		{projection.ViewCycles, "", "ses_parent0", "active, "},
		{projection.ViewOutbox, "ghost", "ses_parent0", "the outbox holds notification terminal:ghost, which the log says is not due"},
		{projection.ViewTexts, ids[0], "", "the texts view lacks text 0 of " + ids[0]},
		{projection.ViewDeadlines, running, "", "the deadlines view's entry for " + running + " is wrong: the view has its deadline at"},
		{"zz-unknown", "", "", `holds the entry "key", which the log does not explain`},
	} {
		fs := got[want.view]
		if len(fs) != 1 || fs[0].Delegation != want.delegation || fs[0].Parent != want.parent || !strings.Contains(fs[0].Diagnosis, want.words) {
			t.Errorf("view %s: want one finding about %q/%q saying %q, got %+v", want.view, want.delegation, want.parent, want.words, fs)
		}
		delete(got, want.view)
	}
	if len(got) != 0 || !rep.ViewsChecked || !rep.Failed() {
		t.Errorf("other findings (views checked %v): %+v", rep.ViewsChecked, got)
	}
}

// TestViewMismatchesBounded empties the records view of a store with more
// delegations than replay lists per view: the report lists the first ones
// and says how many more there were.
func TestViewMismatchesBounded(t *testing.T) {
	defer replay.SetRoundEntries(7)()
	c := newClock()
	dir := t.TempDir()
	s := open(t, dir, c)
	populate(t, s, c, 24)
	s.Close()
	editViews(t, dir, func(views *bolt.Bucket) error { return views.DeleteBucket([]byte(projection.ViewRecords)) })
	fs := mismatches(verifyAlone(t, dir, c.Now()))[projection.ViewRecords]
	if len(fs) != 21 || !strings.Contains(fs[0].Diagnosis, "4 more disagreements in the records view are not listed") {
		t.Errorf("%d findings: %+v", len(fs), fs)
	}
}

// TestViewsNotRebuilt writes a record whose payload does not decode past
// the store's guards and marks the views as caught up with it: the store's
// projector refuses it, so the rebuilt views lack what the live ones could
// never have had, and replay says why it did not compare them instead of
// reporting mismatches.
func TestViewsNotRebuilt(t *testing.T) {
	c := newClock()
	dir := t.TempDir()
	s := open(t, dir, c)
	ids := populate(t, s, c, 8)
	s.Close()
	l, err := eventlog.Open(filepath.Join(dir, projection.LogFile), eventlog.Options{})
	if err != nil {
		t.Fatal(err)
	}
	bad := []byte{fsm.PayloadVersion, 0x0b, 0x7f, 'x'} // a field longer than the payload
	res, err := l.Append(context.Background(), eventlog.Append{Stream: ids[5], Entries: []eventlog.Entry{{Kind: uint16(fsm.KindProgressed), Time: c.Now(), Payload: bad}}})
	l.Close()
	if err != nil {
		t.Fatal(err)
	}
	db, err := bolt.Open(filepath.Join(dir, projection.LogFile), 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		cps := tx.Bucket([]byte("checkpoints")) // eventlog's bucket of checkpoints
		return cps.ForEach(func(k, _ []byte) error { return cps.Put(k, binary.BigEndian.AppendUint64(nil, res.Last)) })
	})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	rep := verifyAlone(t, dir, c.Now())
	if rep.ViewsChecked || !strings.Contains(rep.ViewsNote, "refuses record "+strconv.FormatUint(res.Last, 10)) || len(mismatches(rep)) != 0 {
		t.Errorf("views checked %v, note %q, mismatches %v", rep.ViewsChecked, rep.ViewsNote, mismatches(rep))
	}
	if codes(rep)[replay.CodeBadPayload] != 1 {
		t.Errorf("no bad_payload finding:\n%s", rep)
	}
}
