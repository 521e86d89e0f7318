package historytest

import (
	"context"
	"errors"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/delegations/delegations/eventlog"
	"github.com/delegations/delegations/fsm"
)

// TestAppend: every lifecycle is appended once, in its own stream, with
// the times Entries gives; the ids IDs draws are distinct and the same
// for the same seed; a lifecycle that fails is what Append returns.
func TestAppend(t *testing.T) {
	l, err := eventlog.Open(filepath.Join(t.TempDir(), "log.db"), eventlog.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	const n = 300
	ids := IDs(fsm.NewIDGenerator(rand.NewChaCha8([32]byte{1})), n)
	again := IDs(fsm.NewIDGenerator(rand.NewChaCha8([32]byte{1})), n)
	seen := map[string]bool{}
	for i, id := range ids {
		if seen[id] || again[i] != id {
			t.Fatalf("id %d %q: drawn twice, or %q from the same seed", i, id, again[i])
		}
		seen[id] = true
	}
	at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	ctx := context.Background()
	events := Finished(fsm.Registration{ProjectID: "p", RootSessionID: "ses_root", ParentSessionID: "ses_parent"}, "p/ses_root/x.md", "terminal:x")
	err = Append(ctx, l, n, 8, func(i int) (eventlog.Append, error) {
		return eventlog.Append{Stream: ids[i], Entries: Entries(ids[i], at, time.Millisecond, events), CheckVersion: true}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := l.Last(), uint64(n*len(events)); got != want {
		t.Fatalf("log holds %d records, want %d", got, want)
	}
	place := map[string]int{} // each stream's records so far
	err = l.View(func(tx *eventlog.Tx) error {
		for seq := uint64(1); seq <= l.Last(); seq++ {
			r, err := tx.Record(seq)
			if err != nil {
				return err
			}
			e, err := fsm.UnmarshalPayload(fsm.Kind(r.Kind), r.Stream, r.Time, r.Payload)
			if err != nil {
				return err
			}
			j := place[r.Stream] // one append a stream: its records in order
			place[r.Stream]++
			if e.ID != r.Stream || j >= len(events) {
				t.Fatalf("record %d: event of %q in stream %s, its %d-th", seq, e.ID, r.Stream, j+1)
			}
			if e.Kind != events[j].Kind || !r.Time.Equal(at.Add(time.Duration(j)*time.Millisecond)) {
				t.Errorf("record %d of %s: %s at %v, want %s at %v", seq, r.Stream, e.Kind, r.Time, events[j].Kind, at.Add(time.Duration(j)*time.Millisecond))
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(place) != n {
		t.Errorf("%d streams, want %d", len(place), n)
	}
	bad := errors.New("lifecycle 7 fails")
	err = Append(ctx, l, n, 8, func(i int) (eventlog.Append, error) {
		if i == 7 {
			return eventlog.Append{}, bad
		}
		return eventlog.Append{Stream: "other-" + ids[i], Entries: Entries("other-"+ids[i], at, 0, events[:1])}, nil
	})
	if !errors.Is(err, bad) {
		t.Fatalf("Append with a failing lifecycle: %v, want %v", err, bad)
	}
}

// TestIDsAt: the ids are distinct, valid, those of one hour share their
// first word and those of the next hour another.
func TestIDsAt(t *testing.T) {
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	const n = 2000 // 1,000 an hour
	ids, err := IDsAt(fsm.NewIDGenerator(rand.NewChaCha8([32]byte{2})), n, func(i int) time.Time {
		return start.Add(time.Duration(i) * time.Hour / (n / 2))
	})
	if err != nil {
		t.Fatal(err)
	}
	first := func(id string) string { return strings.SplitN(id, "-", 2)[0] }
	seen := map[string]bool{}
	for i, id := range ids {
		if err := fsm.ValidateID(id); err != nil || seen[id] {
			t.Fatalf("id %d %q: invalid (%v) or drawn twice", i, id, err)
		}
		seen[id] = true
		if want := first(ids[i/(n/2)*(n/2)]); first(id) != want {
			t.Fatalf("id %d %q of hour %d, want the hour's first word %q", i, id, i/(n/2), want)
		}
	}
	if first(ids[0]) == first(ids[n-1]) {
		t.Errorf("the two hours' ids share their first word %q", first(ids[0]))
	}
}
