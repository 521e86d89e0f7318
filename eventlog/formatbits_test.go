package eventlog

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
)

// TestKnownFormat: this build reads layouts 1 to 3 under either flag and
// refuses anything else; the builds before it open a plain file of layout
// 1 or 2, not one of layout 3, and no build before the replica bit opens a
// replica's file.
func TestKnownFormat(t *testing.T) {
	for _, c := range []struct {
		v     byte
		older []bool // OlderBuilds[i] opens it
	}{
		{1, []bool{true, true}},
		{2, []bool{true, true}},
		{2 | sealedBit, []bool{false, true}}, // which refuses to write it (the migrated key)
		{1 | replicaBit, []bool{false, false}},
		{2 | replicaBit, []bool{false, false}},
		{2 | sealedBit | replicaBit, []bool{false, false}},
		{3, []bool{false, false}},
		{3 | sealedBit, []bool{false, false}},
		{3 | replicaBit, []bool{false, false}},
	} {
		if err := knownFormat([]byte{c.v}); err != nil {
			t.Errorf("format %#x: %v", c.v, err)
		}
		for i, old := range OlderBuilds {
			if got := old.Opens(c.v); got != c.older[i] {
				t.Errorf("format %#x: a build %s opens it: %v, want %v", c.v, old.Name, got, c.older[i])
			}
		}
	}
	for _, v := range [][]byte{nil, {}, {0}, {4}, {4 | replicaBit}, {4 | sealedBit}, {0x20 | 2}, {2, 0}} {
		if err := knownFormat(v); !errors.Is(err, ErrCorrupt) {
			t.Errorf("format %v: %v, want it refused", v, err)
		}
	}
}

// TestReplicaBitWithoutItsLog: a file whose format byte marks it a replica
// but which records no upstream is damaged (the two are written together):
// a writer refuses it and so does Seal, saying so, and a reader opens it.
func TestReplicaBitWithoutItsLog(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log.db")
	l := openTest(t, path, Options{})
	mustAppend(t, l, Append{Stream: "a", Entries: []Entry{entry(1, "a0")}})
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := SetFormatByte(path, FormatVersion|replicaBit); err != nil {
		t.Fatal(err)
	}
	var de *DamageError
	if _, err := Open(path, Options{}); !errors.As(err, &de) || !strings.Contains(err.Error(), "not recorded") {
		t.Fatalf("a writer on a replica's file without its upstream: %v, want a DamageError", err)
	}
	if err := Seal(path, Migrated{To: "etcd", Log: "etcd log 1", Records: 1}, Options{}); !errors.As(err, &de) {
		t.Fatalf("Seal of a replica's file without its upstream: %v, want a DamageError", err)
	}
	r := openTest(t, path, Options{ReadOnly: true})
	if got := collect(t, r, 1); len(got) != 1 {
		t.Fatalf("a reader read %d records, want 1", len(got))
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if v, err := FormatByte(path); err != nil || v != FormatVersion|replicaBit {
		t.Fatalf("format byte %#x, %v: the refusals changed it", v, err)
	}
}
