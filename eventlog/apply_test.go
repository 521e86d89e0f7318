package eventlog

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
)

// TestApplySplitAppend: a replica's follower may apply one append's
// records in two batches; the idempotency key then covers the whole
// append, as on the shared log, and the file verifies. A key the file
// holds for records that are not the ones just before is another log's.
func TestApplySplitAppend(t *testing.T) {
	l := openTest(t, filepath.Join(t.TempDir(), "log.db"), Options{})
	recs := []Record{
		{Seq: 1, Kind: 1, Stream: "s", Time: t0, Key: "k", Payload: []byte("a")},
		{Seq: 2, Kind: 2, Stream: "s", Time: t0, Key: "k", Payload: []byte("b")},
		{Seq: 3, Kind: 3, Stream: "s", Time: t0, Key: "k", Payload: []byte("c")},
	}
	if err := l.apply(recs[:1]); err != nil {
		t.Fatal(err)
	}
	if err := l.apply(recs[1:]); err != nil {
		t.Fatalf("the rest of the append: %v", err)
	}
	res := mustAppend(t, l, Append{Stream: "other", Key: "k", Entries: []Entry{entry(1, "x")}})
	if !res.Duplicate || res.First != 1 || res.Last != 3 {
		t.Fatalf("the key covers %+v, want records 1-3", res)
	}
	if err := l.Verify(context.Background()); err != nil {
		t.Fatalf("Verify: %v", err)
	}
	mustAppend(t, l, Append{Stream: "s", Entries: []Entry{entry(1, "y")}})
	err := l.apply([]Record{{Seq: 5, Kind: 1, Stream: "s", Time: t0, Key: "k", Payload: []byte("d")}})
	if !errors.Is(err, ErrCorrupt) {
		t.Fatalf("a key held for earlier records, not the last one: %v, want ErrCorrupt", err)
	}
	err = l.apply([]Record{{Seq: 9, Kind: 1, Stream: "s", Time: t0, Payload: []byte("gap")}})
	if !errors.Is(err, ErrCorrupt) {
		t.Fatalf("a record after a gap: %v, want ErrCorrupt", err)
	}
	if l.Last() != 4 {
		t.Fatalf("refused records were written: Last = %d", l.Last())
	}
}
