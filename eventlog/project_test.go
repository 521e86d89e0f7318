package eventlog

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// counter is a test projector: it counts records per stream in a view and
// refuses records whose payload is "poison".
type counter struct {
	calls int
}

func (c *counter) Name() string { return "counter" }

func (c *counter) Project(tx *Tx, recs []Record) error {
	c.calls++
	b, err := tx.Bucket("counts")
	if err != nil {
		return err
	}
	for _, r := range recs {
		if string(r.Payload) == "poison" {
			return errors.New("poisoned record")
		}
		var n uint64
		if v := b.Get([]byte(r.Stream)); v != nil {
			n = binary.BigEndian.Uint64(v)
		}
		if err := b.Put([]byte(r.Stream), u64(n+1)); err != nil {
			return err
		}
	}
	return nil
}

func counts(t *testing.T, l *Log) (map[string]uint64, uint64) {
	t.Helper()
	out := map[string]uint64{}
	var cp uint64
	err := l.View(func(tx *Tx) error {
		cp = tx.Checkpoint("counter")
		b, err := tx.Bucket("counts")
		if err != nil || b == nil {
			return err
		}
		return b.ForEach(func(k, v []byte) error {
			out[string(k)] = binary.BigEndian.Uint64(v)
			if got := tx.StreamVersion(string(k)); got != out[string(k)] {
				return fmt.Errorf("view says %s has %d records, the index %d", k, out[string(k)], got)
			}
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	return out, cp
}

func TestProjectorInSameTransaction(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log.db")
	c := &counter{}
	l := openTest(t, path, Options{Projectors: []Projector{c}})
	mustAppend(t, l, Append{Stream: "a", Entries: []Entry{entry(1, ""), entry(1, "")}})
	_, err := l.Append(context.Background(), Append{Stream: "a", Key: "p", Entries: []Entry{entry(1, "ok"), entry(1, "poison")}})
	if err == nil || !errors.Is(err, err) || err.Error() != "projection counter: poisoned record" {
		t.Fatalf("poisoned append = %v", err)
	}
	if l.Last() != 2 {
		t.Fatalf("a refused append left records: Last = %d", l.Last())
	}
	mustAppend(t, l, Append{Stream: "b", Entries: []Entry{entry(1, "")}})
	got, cp := counts(t, l)
	if got["a"] != 2 || got["b"] != 1 || cp != 3 {
		t.Fatalf("counts = %v checkpoint %d", got, cp)
	}
	// The refused key was not recorded: a retry without poison goes through.
	if res := mustAppend(t, l, Append{Stream: "a", Key: "p", Entries: []Entry{entry(1, "ok")}}); res.Duplicate {
		t.Fatal("refused append left its idempotency key")
	}
	if err := l.Verify(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// TestProjectorErrorSparesBatch runs many appenders, some poisoned, so that
// poisoned appends share commits with good ones.
func TestProjectorErrorSparesBatch(t *testing.T) {
	l := openTest(t, filepath.Join(t.TempDir(), "log.db"), Options{Projectors: []Projector{&counter{}}})
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		good = map[string]int{}
	)
	for w := range 16 {
		wg.Go(func() {
			for i := range 30 {
				stream := fmt.Sprintf("w%d", w)
				payload := ""
				if (w+i)%3 == 0 {
					payload = "poison"
				}
				_, err := l.Append(context.Background(), Append{Stream: stream, Entries: []Entry{entry(1, payload)}})
				if (err != nil) != (payload == "poison") {
					t.Errorf("%s/%d: err = %v", stream, i, err)
				}
				if err == nil {
					mu.Lock()
					good[stream]++
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	got, _ := counts(t, l)
	for s, n := range good {
		if got[s] != uint64(n) {
			t.Fatalf("stream %s: %d acknowledged, view counts %d", s, n, got[s])
		}
	}
	for r, err := range l.Records(0) {
		if err != nil || string(r.Payload) == "poison" {
			t.Fatalf("record %d: %q, %v", r.Seq, r.Payload, err)
		}
	}
}

func TestProjectorCatchUp(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log.db")
	l := openTest(t, path, Options{})
	for i := range 2500 {
		mustAppend(t, l, Append{Stream: fmt.Sprint("s", i%7), Entries: []Entry{entry(1, "")}})
	}
	l.Close()

	c := &counter{}
	l = openTest(t, path, Options{Projectors: []Projector{c}})
	got, cp := counts(t, l)
	if cp != 2500 || got["s0"] != 358 || got["s6"] != 357 {
		t.Fatalf("after catch-up: counts %v checkpoint %d", got, cp)
	}
	if c.calls != 3 {
		t.Fatalf("catch-up projected in %d transactions, want 3 chunks", c.calls)
	}
	l.Close()

	c = &counter{}
	openTest(t, path, Options{Projectors: []Projector{c}})
	if c.calls != 0 {
		t.Fatalf("opening an up-to-date log projected %d times", c.calls)
	}
	if _, err := Open(path+"2", Options{Projectors: []Projector{c, c}}); err == nil {
		t.Fatal("two projectors with one name accepted")
	}
}

func TestRebuildViews(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log.db")
	l := openTest(t, path, Options{Projectors: []Projector{&counter{}}})
	for i := range 100 {
		mustAppend(t, l, Append{Stream: fmt.Sprint("s", i%3), Entries: []Entry{entry(1, "")}})
	}
	want, _ := counts(t, l)
	// Damage the view, then rebuild it from the log.
	if err := l.db.Update(func(tx *bolt.Tx) error {
		b, _ := (&Tx{tx: tx}).Bucket("counts")
		return b.Put([]byte("s0"), u64(999))
	}); err != nil {
		t.Fatal(err)
	}
	l.Close()
	c := &counter{}
	l = openTest(t, path, Options{Projectors: []Projector{c}, Rebuild: true})
	got, cp := counts(t, l)
	if fmt.Sprint(got) != fmt.Sprint(want) || cp != 100 || c.calls != 1 {
		t.Fatalf("rebuilt %v (checkpoint %d, %d calls), want %v", got, cp, c.calls, want)
	}
}
