package eventlog

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

var t0 = time.Date(2026, 11, 21, 10, 38, 45, 282_000_000, time.UTC)

func openTest(t testing.TB, path string, opts Options) *Log {
	t.Helper()
	l, err := Open(path, opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func entry(kind uint16, payload string) Entry {
	return Entry{Kind: kind, Time: t0, Payload: []byte(payload)}
}

func mustAppend(t testing.TB, l *Log, a Append) Result {
	t.Helper()
	res, err := l.Append(context.Background(), a)
	if err != nil {
		t.Fatalf("Append(%q): %v", a.Stream, err)
	}
	return res
}

func collect(t testing.TB, l *Log, from uint64) []Record {
	t.Helper()
	var out []Record
	for r, err := range l.Records(from) {
		if err != nil {
			t.Fatalf("Records(%d): %v", from, err)
		}
		out = append(out, r)
	}
	return out
}

// TestFileModes: the log and the directory Open makes for it are the
// owner's alone. The rest of what a log promises is its contract
// (contract_test.go).
func TestFileModes(t *testing.T) {
	path := filepath.Join(t.TempDir(), "data", "log.db")
	openTest(t, path, Options{})
	for _, mode := range []struct {
		path string
		want os.FileMode
	}{{path, 0o600}, {filepath.Dir(path), 0o700}} {
		fi, err := os.Stat(mode.path)
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode().Perm(); got != mode.want {
			t.Errorf("%s mode = %o, want %o", mode.path, got, mode.want)
		}
	}
}

func TestLockedByAnotherOpen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log.db")
	openTest(t, path, Options{})
	_, err := Open(path, Options{LockTimeout: 50 * time.Millisecond})
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("second Open = %v, want ErrLocked", err)
	}
	if !strings.Contains(err.Error(), path) {
		t.Fatalf("lock error does not name the file: %v", err)
	}
}

// TestVerifyNamesCorruptRecord flips one byte of one record in the file
// and expects Verify and readers to name that record's sequence number.
func TestVerifyNamesCorruptRecord(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log.db")
	l := openTest(t, path, Options{})
	for i := 1; i <= 50; i++ {
		payload := fmt.Sprintf("payload-%03d", i)
		if i == 37 {
			payload = "needle-in-the-log"
		}
		mustAppend(t, l, Append{Stream: fmt.Sprint("s", i%5), Entries: []Entry{entry(1, payload)}})
	}
	l.Close()

	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// Copy-on-write may leave stale copies of the page in free pages: damage
	// every copy so that the live one is certainly hit.
	marker := []byte("needle-in-the-log")
	if !bytes.Contains(raw, marker) {
		t.Fatal("marker payload not found in the file")
	}
	raw = bytes.ReplaceAll(raw, marker, []byte("Needle-in-the-log"))
	if err := os.WriteFile(path, raw, 0o600); err != nil {
		t.Fatal(err)
	}

	l = openTest(t, path, Options{})
	err = l.Verify(context.Background())
	var ce *CorruptError
	if !errors.As(err, &ce) || ce.Seq != 37 || !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Verify = %v, want CorruptError for record 37", err)
	}
	if !strings.Contains(err.Error(), "record 37") {
		t.Fatalf("error does not name the record: %v", err)
	}
	var n int
	var readErr error
	for _, err := range l.Records(0) {
		if err != nil {
			readErr = err
			break
		}
		n++
	}
	if !errors.As(readErr, &ce) || ce.Seq != 37 || n != 36 {
		t.Fatalf("Records stopped after %d records with %v, want 36 then record 37", n, readErr)
	}
	if _, err := l.Stream("s2"); !errors.As(err, &ce) || ce.Seq != 37 {
		t.Fatalf("Stream(s2) = %v, want the corrupt record 37", err)
	}
}

// TestVerifyIndexes damages the indexes directly and checks each problem
// is reported.
func TestVerifyIndexes(t *testing.T) {
	cases := []struct {
		name   string
		damage func(tx *bolt.Tx) error
		want   string
	}{
		{"missing stream entry", func(tx *bolt.Tx) error {
			return tx.Bucket(bucketVersions).Delete(versionKey(1, 2))
		}, "skips from version 1 to 3"},
		{"stream entry to other stream", func(tx *bolt.Tx) error {
			return tx.Bucket(bucketVersions).Put(versionKey(1, 2), u64(2))
		}, `points at a record of stream "b"`},
		{"stream without entries", func(tx *bolt.Tx) error {
			return tx.Bucket(bucketStreams).Put([]byte("ghost"), u64(77))
		}, `stream "ghost" has a number but no index entries`},
		{"dangling idempotency key", func(tx *bolt.Tx) error {
			return tx.Bucket(bucketIdempotency).Put([]byte("ghost"), append(u64(3), u64(99)...))
		}, `idempotency key "ghost" covers records 3..99 outside the log`},
		{"record deleted", func(tx *bolt.Tx) error {
			return tx.Bucket(bucketEvents).Delete(u64(2))
		}, "missing: the log jumps from 1 to 3"},
		{"checkpoint ahead", func(tx *bolt.Tx) error {
			return tx.Bucket(bucketCheckpoints).Put([]byte("p"), u64(100))
		}, `projection "p" checkpoint`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			l := openTest(t, filepath.Join(t.TempDir(), "log.db"), Options{})
			mustAppend(t, l, Append{Stream: "a", Entries: []Entry{entry(1, "")}})
			mustAppend(t, l, Append{Stream: "b", Key: "k", Entries: []Entry{entry(1, "")}})
			mustAppend(t, l, Append{Stream: "a", Entries: []Entry{entry(1, ""), entry(2, "")}})
			if err := l.Verify(context.Background()); err != nil {
				t.Fatalf("Verify before damage: %v", err)
			}
			if err := l.db.Update(c.damage); err != nil {
				t.Fatal(err)
			}
			err := l.Verify(context.Background())
			if err == nil || !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Verify = %v, want a problem containing %q", err, c.want)
			}
		})
	}
}

// TestCommitErrorBreaksLog makes the file unwritable under the log and
// checks that the log refuses writes until reopened and loses nothing
// acknowledged.
func TestCommitErrorBreaksLog(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log.db")
	var file *os.File
	l, err := Open(path, Options{OpenFile: func(name string, flag int, perm os.FileMode) (*os.File, error) {
		f, err := os.OpenFile(name, flag, perm)
		file = f
		return f, err
	}})
	if err != nil {
		t.Fatal(err)
	}
	mustAppend(t, l, Append{Stream: "s", Entries: []Entry{entry(1, "kept")}})
	file.Close() // every write from now on fails

	_, err = l.Append(context.Background(), Append{Stream: "s", Key: "k", Entries: []Entry{entry(1, "lost")}})
	if !errors.Is(err, ErrBroken) || !strings.Contains(err.Error(), "reopen") {
		t.Fatalf("append on a failing file = %v, want ErrBroken saying to reopen", err)
	}
	_, err = l.Append(context.Background(), Append{Stream: "s", Entries: []Entry{entry(1, "refused")}})
	if !errors.Is(err, ErrBroken) {
		t.Fatalf("append after a failed commit = %v, want ErrBroken", err)
	}
	l.Close()

	l = openTest(t, path, Options{})
	recs := collect(t, l, 0)
	if len(recs) != 1 || string(recs[0].Payload) != "kept" {
		t.Fatalf("after reopen: %+v", recs)
	}
	if err := l.Verify(context.Background()); err != nil {
		t.Fatal(err)
	}
	// The retry with the same key now reconciles: the commit never landed.
	res := mustAppend(t, l, Append{Stream: "s", Key: "k", Entries: []Entry{entry(1, "lost")}})
	if res.Duplicate {
		t.Fatal("failed commit left an idempotency key behind")
	}
}

func TestFormatVersionChecked(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log.db")
	l, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := l.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketMeta).Put(metaFormat, []byte{9})
	}); err != nil {
		t.Fatal(err)
	}
	l.Close()
	if _, err := Open(path, Options{}); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "cannot read") {
		t.Fatalf("Open of a future format = %v", err)
	}
}

func TestRecordCodec(t *testing.T) {
	enc := appendRecord(nil, 7, 3, t0.UnixNano(), "stream", "key", []byte("payload"))
	if len(enc) != encodedLen(len("stream"), len("key"), len("payload")) {
		t.Fatalf("encoded length %d", len(enc))
	}
	r, err := decodeRecord(7, enc)
	if err != nil {
		t.Fatal(err)
	}
	if r.Seq != 7 || r.Kind != 3 || r.Stream != "stream" || r.Key != "key" || string(r.Payload) != "payload" || !r.Time.Equal(t0) {
		t.Fatalf("decoded %+v", r)
	}
	enc[len(enc)-9] ^= 1 // payload byte
	if _, err := decodeRecord(7, enc); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("flipped payload bit: %v", err)
	}
	enc[len(enc)-9] ^= 1
	if _, err := decodeRecord(8, enc); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("record under the wrong sequence number decoded: %v", err)
	}
	// Decoded records never alias the input.
	r, _ = decodeRecord(7, enc)
	for i := range enc {
		enc[i] = 0
	}
	if string(r.Payload) != "payload" || r.Stream != "stream" {
		t.Fatal("decoded record aliases its input")
	}
}

func FuzzDecodeRecord(f *testing.F) {
	f.Add(uint64(1), appendRecord(nil, 1, 1, t0.UnixNano(), "elegant-blue-tiger", "", []byte("x")))
	f.Add(uint64(2), appendRecord(nil, 2, 14, 0, "s", strings.Repeat("k", 255), nil))
	f.Add(uint64(3), []byte{FormatVersion})
	f.Add(uint64(4), []byte{})
	f.Fuzz(func(t *testing.T, seq uint64, b []byte) {
		r, err := decodeRecord(seq, b)
		if err != nil {
			var ce *CorruptError
			if !errors.As(err, &ce) || ce.Seq != seq {
				t.Fatalf("error %v is not a CorruptError for %d", err, seq)
			}
			return
		}
		// Anything that decodes re-encodes to the same bytes.
		again := appendRecord(nil, seq, r.Kind, r.Time.UnixNano(), r.Stream, r.Key, r.Payload)
		if !bytes.Equal(again, b) {
			t.Fatalf("re-encoding differs:\n%x\n%x", b, again)
		}
		if binary.BigEndian.Uint64(b[len(b)-8:]) != checksum(seq, b[:len(b)-8]) {
			t.Fatal("accepted a bad checksum")
		}
	})
}

// TestRecordMissingIsDamage: a record the tree lacks below the last one
// was lost to damage, and Record says so (a CorruptError, which readers
// turn into "the log is damaged ... delegations recover"); one past the
// last simply is not there yet.
func TestRecordMissingIsDamage(t *testing.T) {
	l := openTest(t, filepath.Join(t.TempDir(), "log.db"), Options{})
	mustAppend(t, l, Append{Stream: "a", Entries: []Entry{entry(1, ""), entry(2, ""), entry(3, "")}})
	if err := l.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketEvents).Delete(u64(2)) }); err != nil {
		t.Fatal(err)
	}
	err := l.View(func(tx *Tx) error {
		var ce *CorruptError
		if _, err := tx.Record(2); !errors.As(err, &ce) || ce.Seq != 2 {
			t.Errorf("Record(2), deleted below the last: %v, want a CorruptError of record 2", err)
		}
		for _, seq := range []uint64{0, 4} {
			if _, err := tx.Record(seq); err == nil || errors.Is(err, ErrCorrupt) {
				t.Errorf("Record(%d), outside the log: %v, want an error that is not damage", seq, err)
			}
		}
		if r, err := tx.Record(3); err != nil || r.Seq != 3 {
			t.Errorf("Record(3) = %v, %v", r.Seq, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
