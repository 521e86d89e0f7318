package eventlog

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// TestSeal: a sealed log refuses a writer with where it went, while
// readers open it, read its records and verify it; its format byte is one
// that builds before seals refuse. Sealing needs the records copied, and
// again for the same destination changes nothing.
func TestSeal(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log.db")
	l := openTest(t, path, Options{})
	mustAppend(t, l, Append{Stream: "a", Entries: []Entry{entry(1, "a0")}})
	mustAppend(t, l, Append{Stream: "b", Key: "kb", Entries: []Entry{entry(1, "b0"), entry(2, strings.Repeat("b", 3*InlineLen))}})
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 12, 2, 16, 40, 0, 0, time.UTC)
	m := Migrated{To: "etcd http://127.0.0.1:2379 prefix /m/", Log: "etcd log 0a1b at prefix /m/", Records: 3, At: at}

	short := m
	short.Records = 2
	if err := Seal(path, short, Options{}); err == nil || !strings.Contains(err.Error(), "holds 3 records, not the 2 copied") {
		t.Fatalf("a seal after fewer records than the log holds: %v", err)
	}
	l = openTest(t, path, Options{}) // not sealed: writers open it
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}

	if err := Seal(path, m, Options{}); err != nil {
		t.Fatal(err)
	}
	later := m
	later.At = at.Add(time.Hour)
	if err := Seal(path, later, Options{}); err != nil {
		t.Fatalf("sealed again for the same destination: %v", err)
	}
	other := m
	other.Log = "etcd log ffff at prefix /n/"
	if err := Seal(path, other, Options{}); !errors.Is(err, ErrMigrated) {
		t.Fatalf("sealed for another destination: %v", err)
	}

	_, err := Open(path, Options{})
	if !errors.Is(err, ErrMigrated) {
		t.Fatalf("a writer opened a sealed log: %v", err)
	}
	for _, want := range []string{"migrated to etcd http://127.0.0.1:2379 prefix /m/ at 2026-12-02T16:40:00Z", "--etcd", "migrate --from etcd"} {
		if !strings.Contains(err.Error(), want) {
			t.Fatalf("the refusal %q does not say %q", err, want)
		}
	}

	r := openTest(t, path, Options{ReadOnly: true})
	if got := collect(t, r, 1); len(got) != 3 || len(got[2].Payload) != 3*InlineLen {
		t.Fatalf("a reader of the sealed log read %d records", len(got))
	}
	if err := r.Verify(context.Background()); err != nil {
		t.Fatal(err)
	}
	var got *Migrated
	if err := r.View(func(tx *Tx) error { got, err = tx.Migrated(); return err }); err != nil || got == nil || *got != m {
		t.Fatalf("Migrated: %+v, %v; want %+v", got, err, m)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}

	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.View(func(tx *bolt.Tx) error {
		// Builds before seals know formats 1 and 2 only.
		if v := tx.Bucket(bucketMeta).Get(metaFormat); len(v) != 1 || v[0] == 1 || v[0] == 2 || v[0]&^sealedBit != FormatVersion {
			t.Fatalf("format %v: an older build would not refuse it, or its layout changed", v)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}
