package eventlog

import (
	"context"
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestImport copies a log into a new one with Import, an append with a
// key split across two calls, and checks that the copy holds the same
// records, stream versions and keys, passes Verify, and refuses a record
// that does not follow its last.
func TestImport(t *testing.T) {
	dir := t.TempDir()
	src := openTest(t, filepath.Join(dir, "src.db"), Options{})
	mustAppend(t, src, Append{Stream: "a", Entries: []Entry{entry(1, "a0")}})
	mustAppend(t, src, Append{Stream: "b", Key: "kb", Entries: []Entry{entry(1, "b0"), entry(2, strings.Repeat("b", 3*InlineLen)), entry(3, "b2")}})
	mustAppend(t, src, Append{Stream: "a", Key: "ka", Entries: []Entry{entry(2, "a1")}})
	recs := collect(t, src, 1)

	dst := openTest(t, filepath.Join(dir, "dst.db"), Options{})
	if err := dst.Import(recs[2:]); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Import of records that do not follow the last: %v", err)
	}
	if err := dst.Import(recs[:3]); err != nil {
		t.Fatal(err)
	}
	if err := dst.Import(recs[3:]); err != nil {
		t.Fatal(err)
	}
	if got := collect(t, dst, 1); len(got) != len(recs) || got[2].Key != "kb" || string(got[2].Payload) != string(recs[2].Payload) {
		t.Fatalf("copied %+v", got)
	}
	if err := dst.Verify(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, l := range []*Log{src, dst} {
		var heads []StreamHead
		for h, err := range l.StreamHeads() {
			if err != nil {
				t.Fatal(err)
			}
			heads = append(heads, h)
		}
		if want := []StreamHead{{"a", 2}, {"b", 3}}; !slices.Equal(heads, want) {
			t.Fatalf("stream heads %v, want %v", heads, want)
		}
		var keys []KeyEntry
		for k, err := range l.Keys() {
			if err != nil {
				t.Fatal(err)
			}
			keys = append(keys, k)
		}
		if want := []KeyEntry{{"ka", 5, 5}, {"kb", 2, 4}}; !slices.Equal(keys, want) {
			t.Fatalf("keys %v, want %v", keys, want)
		}
	}
	res := mustAppend(t, dst, Append{Stream: "b", Key: "kb", Entries: []Entry{entry(1, "again")}})
	if !res.Duplicate || res.First != 2 || res.Last != 4 {
		t.Fatalf("a retried append on the copy: %+v", res)
	}
}
