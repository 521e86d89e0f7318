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
	"sync"
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

func TestAppendReadReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "data", "log.db")
	l, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	res := mustAppend(t, l, Append{Stream: "a", Entries: []Entry{entry(1, "one"), entry(2, "two")}})
	if res != (Result{First: 1, Last: 2, Version: 2}) {
		t.Fatalf("first append = %+v", res)
	}
	res = mustAppend(t, l, Append{Stream: "b", Entries: []Entry{entry(3, "")}})
	if res != (Result{First: 3, Last: 3, Version: 1}) {
		t.Fatalf("second append = %+v", res)
	}
	mustAppend(t, l, Append{Stream: "a", Entries: []Entry{entry(4, "four")}, CheckVersion: true, Version: 2})
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}

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

	l = openTest(t, path, Options{})
	if l.Last() != 4 {
		t.Fatalf("Last after reopen = %d, want 4", l.Last())
	}
	got := collect(t, l, 0)
	want := []Record{
		{Seq: 1, Kind: 1, Stream: "a", Time: t0, Payload: []byte("one")},
		{Seq: 2, Kind: 2, Stream: "a", Time: t0, Payload: []byte("two")},
		{Seq: 3, Kind: 3, Stream: "b", Time: t0},
		{Seq: 4, Kind: 4, Stream: "a", Time: t0, Payload: []byte("four")},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("Records:\n got %+v\nwant %+v", got, want)
	}
	if tail := collect(t, l, 3); len(tail) != 2 || tail[0].Seq != 3 {
		t.Fatalf("Records(3) = %+v", tail)
	}
	a, err := l.Stream("a")
	if err != nil {
		t.Fatal(err)
	}
	if len(a) != 3 || a[0].Seq != 1 || a[1].Seq != 2 || a[2].Seq != 4 {
		t.Fatalf("Stream(a) = %+v", a)
	}
	if s, err := l.Stream("missing"); err != nil || len(s) != 0 {
		t.Fatalf("Stream(missing) = %v, %v", s, err)
	}
	if err := l.Verify(context.Background()); err != nil {
		t.Fatalf("Verify: %v", err)
	}
	// Appends continue the sequence after reopening.
	if res := mustAppend(t, l, Append{Stream: "c", Entries: []Entry{entry(1, "")}}); res.First != 5 {
		t.Fatalf("append after reopen got seq %d, want 5", res.First)
	}
}

func TestRecordsAcrossChunks(t *testing.T) {
	l := openTest(t, filepath.Join(t.TempDir(), "log.db"), Options{})
	n := 3*scanChunk + 7
	entries := make([]Entry, 0, MaxEntries)
	for i := 1; i <= n; i++ {
		entries = append(entries, entry(1, fmt.Sprint(i)))
		if len(entries) == MaxEntries || i == n {
			mustAppend(t, l, Append{Stream: "s", Entries: entries})
			entries = entries[:0]
		}
	}
	got := collect(t, l, 0)
	if len(got) != n {
		t.Fatalf("got %d records, want %d", len(got), n)
	}
	for i, r := range got {
		if r.Seq != uint64(i+1) || string(r.Payload) != fmt.Sprint(i+1) {
			t.Fatalf("record %d = seq %d payload %q", i, r.Seq, r.Payload)
		}
	}
	// Stopping early must not leak or error.
	for range l.Records(0) {
		break
	}
}

func TestIdempotencyKey(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log.db")
	l := openTest(t, path, Options{})
	mustAppend(t, l, Append{Stream: "x", Entries: []Entry{entry(1, "")}})
	a := Append{Stream: "s", Key: "register-42", Entries: []Entry{entry(1, "a"), entry(2, "b")}}
	first := mustAppend(t, l, a)
	if first.Duplicate || first.First != 2 || first.Last != 3 {
		t.Fatalf("first append = %+v", first)
	}
	// A retry, even with other content or stream, writes nothing.
	retry := mustAppend(t, l, Append{Stream: "other", Key: "register-42", Entries: []Entry{entry(9, "zzz")}})
	if !retry.Duplicate || retry.First != 2 || retry.Last != 3 {
		t.Fatalf("retry = %+v, want duplicate of 2..3", retry)
	}
	if l.Last() != 3 {
		t.Fatalf("retry appended: Last = %d", l.Last())
	}
	l.Close()
	l = openTest(t, path, Options{})
	again := mustAppend(t, l, a)
	if !again.Duplicate || again.First != 2 || again.Version != 2 {
		t.Fatalf("retry after reopen = %+v", again)
	}
	recs := collect(t, l, 2)
	if len(recs) != 2 || recs[0].Key != "register-42" || recs[1].Key != "register-42" {
		t.Fatalf("keyed records = %+v", recs)
	}
	if err := l.Verify(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestExpectedVersion(t *testing.T) {
	l := openTest(t, filepath.Join(t.TempDir(), "log.db"), Options{})
	mustAppend(t, l, Append{Stream: "s", CheckVersion: true, Version: 0, Entries: []Entry{entry(1, "")}})
	_, err := l.Append(context.Background(), Append{Stream: "s", CheckVersion: true, Version: 0, Entries: []Entry{entry(1, "")}})
	var ce *ConflictError
	if !errors.As(err, &ce) || !errors.Is(err, ErrConflict) {
		t.Fatalf("append to existing stream with version 0: err = %v, want ConflictError", err)
	}
	if ce.Stream != "s" || ce.Expected != 0 || ce.Actual != 1 {
		t.Fatalf("ConflictError = %+v", ce)
	}
	if l.Last() != 1 {
		t.Fatalf("a conflicting append wrote: Last = %d", l.Last())
	}
	res := mustAppend(t, l, Append{Stream: "s", CheckVersion: true, Version: 1, Entries: []Entry{entry(2, "")}})
	if res.Version != 2 {
		t.Fatalf("version after append = %d", res.Version)
	}
	// Streams sharing a prefix keep separate versions.
	res = mustAppend(t, l, Append{Stream: "s2", CheckVersion: true, Version: 0, Entries: []Entry{entry(1, "")}})
	if res.Version != 1 {
		t.Fatalf("stream s2 version = %d, want 1", res.Version)
	}
}

func TestAppendRejectsBadInput(t *testing.T) {
	l := openTest(t, filepath.Join(t.TempDir(), "log.db"), Options{})
	ok := []Entry{entry(1, "")}
	for name, a := range map[string]Append{
		"empty stream":     {Stream: "", Entries: ok},
		"NUL in stream":    {Stream: "a\x00b", Entries: ok},
		"invalid UTF-8":    {Stream: "a\xffb", Entries: ok},
		"long stream":      {Stream: strings.Repeat("s", MaxStreamLen+1), Entries: ok},
		"long key":         {Stream: "s", Key: strings.Repeat("k", MaxKeyLen+1), Entries: ok},
		"no entries":       {Stream: "s"},
		"huge payload":     {Stream: "s", Entries: []Entry{{Kind: 1, Time: t0, Payload: make([]byte, MaxPayloadLen+1)}}},
		"zero time":        {Stream: "s", Entries: []Entry{{Kind: 1}}},
		"too many entries": {Stream: "s", Entries: make([]Entry, MaxEntries+1)},
	} {
		_, err := l.Append(context.Background(), a)
		if !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: err = %v, want ErrInvalid", name, err)
		}
	}
	if l.Last() != 0 {
		t.Fatalf("refused appends wrote %d records", l.Last())
	}
}

// TestConcurrentAppenders checks that every acknowledged append is stored at
// the sequence numbers it was acknowledged with, in each stream's order.
func TestConcurrentAppenders(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log.db")
	l := openTest(t, path, Options{})
	const writers, each = 16, 40
	acked := make([][]Result, writers)
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			stream := fmt.Sprintf("w%02d", w)
			for i := range each {
				res, err := l.Append(context.Background(), Append{
					Stream:       stream,
					CheckVersion: true,
					Version:      uint64(i),
					Entries:      []Entry{entry(1, fmt.Sprintf("%s/%d", stream, i))},
				})
				if err != nil {
					t.Errorf("%s append %d: %v", stream, i, err)
					return
				}
				acked[w] = append(acked[w], res)
			}
		})
	}
	wg.Wait()
	l.Close()
	l = openTest(t, path, Options{})
	recs := collect(t, l, 0)
	if len(recs) != writers*each {
		t.Fatalf("log holds %d records, want %d", len(recs), writers*each)
	}
	for w, results := range acked {
		stream := fmt.Sprintf("w%02d", w)
		for i, res := range results {
			r := recs[res.First-1]
			if want := fmt.Sprintf("%s/%d", stream, i); string(r.Payload) != want || r.Stream != stream {
				t.Fatalf("acknowledged seq %d holds %s %q, want %q", res.First, r.Stream, r.Payload, want)
			}
			if res.Version != uint64(i+1) {
				t.Fatalf("%s append %d acknowledged version %d", stream, i, res.Version)
			}
		}
	}
	if err := l.Verify(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestWait(t *testing.T) {
	l := openTest(t, filepath.Join(t.TempDir(), "log.db"), Options{})
	got := make(chan uint64)
	go func() {
		last, err := l.Wait(context.Background(), 0)
		if err != nil {
			t.Error(err)
		}
		got <- last
	}()
	mustAppend(t, l, Append{Stream: "s", Entries: []Entry{entry(1, "")}})
	if last := <-got; last != 1 {
		t.Fatalf("Wait returned %d, want 1", last)
	}
	// Already past: returns at once.
	if last, err := l.Wait(context.Background(), 0); err != nil || last != 1 {
		t.Fatalf("Wait(0) = %d, %v", last, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := l.Wait(ctx, 1); !errors.Is(err, context.Canceled) {
		t.Fatalf("Wait with cancelled ctx = %v", err)
	}
	closed := make(chan error)
	go func() {
		_, err := l.Wait(context.Background(), 1)
		closed <- err
	}()
	l.Close()
	if err := <-closed; !errors.Is(err, ErrClosed) {
		t.Fatalf("Wait across Close = %v, want ErrClosed", err)
	}
	if _, err := l.Append(context.Background(), Append{Stream: "s", Entries: []Entry{entry(1, "")}}); !errors.Is(err, ErrClosed) {
		t.Fatalf("Append after Close = %v, want ErrClosed", err)
	}
}

// TestCancelledAppend checks the hand-off between an appender whose context
// ends and the writer: either nothing is written and the caller gets the
// context error, or the append is written and acknowledged. Never both,
// never neither.
func TestCancelledAppend(t *testing.T) {
	l := openTest(t, filepath.Join(t.TempDir(), "log.db"), Options{})
	var acked int
	for i := range 200 {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		var res Result
		var err error
		go func() {
			res, err = l.Append(ctx, Append{Stream: "s", Key: fmt.Sprint("k", i), Entries: []Entry{entry(1, fmt.Sprint(i))}})
			close(done)
		}()
		cancel()
		<-done
		if err == nil {
			acked++
			if res.Duplicate {
				t.Fatalf("append %d reported duplicate", i)
			}
		} else if !errors.Is(err, context.Canceled) {
			t.Fatalf("append %d: %v", i, err)
		}
	}
	// A barrier append: every claimed request has committed before it.
	mustAppend(t, l, Append{Stream: "barrier", Entries: []Entry{entry(1, "")}})
	if got := int(l.Last()) - 1; got != acked {
		t.Fatalf("log holds %d appends, %d were acknowledged", got, acked)
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
