package eventlog

import (
	"os"
	"testing"
	"time"
)

// countingProjector counts the records it sees in a bucket of its own.
type countingProjector struct{}

func (countingProjector) Name() string { return "count" }

func (countingProjector) Project(tx *Tx, recs []Record) error {
	b, err := tx.Bucket("count")
	if err != nil {
		return err
	}
	for _, r := range recs {
		if err := b.Put(u64(r.Seq), []byte(r.Stream)); err != nil {
			return err
		}
	}
	return nil
}

// TestScratch projects records into a scratch file, refuses records that
// go back, and leaves no file behind.
func TestScratch(t *testing.T) {
	dir := t.TempDir()
	s, err := OpenScratch(dir)
	if err != nil {
		t.Fatal(err)
	}
	at := time.Unix(1, 0)
	if err := s.Project(countingProjector{}, []Record{{Seq: 1, Stream: "a", Time: at}, {Seq: 2, Stream: "b", Time: at}}); err != nil {
		t.Fatal(err)
	}
	if err := s.Project(countingProjector{}, []Record{{Seq: 4, Stream: "c", Time: at}}); err != nil {
		t.Fatal(err) // a gap: a record the caller stepped over
	}
	if err := s.Project(countingProjector{}, []Record{{Seq: 4, Stream: "d", Time: at}}); err == nil {
		t.Error("a record projected twice was accepted")
	}
	err = s.View(func(tx *Tx) error {
		b, err := tx.Bucket("count")
		if err != nil || b == nil {
			t.Fatalf("bucket %v, %v", b, err)
		}
		if n := b.Stats().KeyN; n != 3 || tx.Checkpoint("count") != 4 || s.Last() != 4 {
			t.Errorf("%d keys, checkpoint %d, last %d", n, tx.Checkpoint("count"), s.Last())
		}
		if names := tx.ViewNames(); len(names) != 1 || names[0] != "count" {
			t.Errorf("view names %v", names)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if left, _ := os.ReadDir(dir); len(left) != 0 {
		t.Errorf("left behind: %v", left)
	}
}
