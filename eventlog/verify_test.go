package eventlog

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// setRound makes Verify read n entries per round for the test.
func setRound(t *testing.T, n int) {
	t.Helper()
	old := verifyRound
	verifyRound = n
	t.Cleanup(func() { verifyRound = old })
}

// fillVerifyLog appends n records over a few streams, every third with an
// idempotency key, every fifth with a payload long enough to be chunked,
// and sets a checkpoint.
func fillVerifyLog(t *testing.T, l *Log, n int) {
	t.Helper()
	for i := 1; i <= n; i++ {
		a := Append{Stream: fmt.Sprint("s", i%4), Entries: []Entry{entry(1, fmt.Sprint("payload-", i))}}
		if i%3 == 0 {
			a.Key = fmt.Sprint("key-", i)
		}
		if i%5 == 0 {
			a.Entries[0].Payload = bytes.Repeat([]byte{byte(i)}, 3*InlineLen)
		}
		mustAppend(t, l, a)
	}
	if err := l.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketCheckpoints).Put([]byte("p"), u64(uint64(n)))
	}); err != nil {
		t.Fatal(err)
	}
}

// TestVerifyRoundsSeeEachEntryOnce checks that Verify, reading a few
// entries per round, visits every entry of every bucket it checks exactly
// once, and holds no transaction between rounds.
func TestVerifyRoundsSeeEachEntryOnce(t *testing.T) {
	l := openTest(t, filepath.Join(t.TempDir(), "log.db"), Options{})
	fillVerifyLog(t, l, 40)
	setRound(t, 3)
	seen := map[string]int{}
	rounds := 0
	verifyVisit = func(bucket string, k []byte) { seen[bucket+"/"+string(k)]++ }
	verifyBetweenRounds = func() {
		rounds++
		if n := l.db.Stats().OpenTxN; n != 0 {
			t.Errorf("%d read transactions open between rounds", n)
		}
	}
	t.Cleanup(func() { verifyVisit, verifyBetweenRounds = nil, nil })
	if err := l.Verify(context.Background()); err != nil {
		t.Fatalf("Verify: %v", err)
	}

	want := map[string]int{}
	if err := l.db.View(func(tx *bolt.Tx) error {
		for _, name := range [][]byte{bucketEvents, bucketChunks, bucketVersions, bucketStreams, bucketIdempotency, bucketCheckpoints} {
			if err := tx.Bucket(name).ForEach(func(k, _ []byte) error {
				want[string(name)+"/"+string(k)] = 1
				return nil
			}); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	for k, n := range seen {
		if want[k] != n {
			t.Errorf("Verify read %q %d times, want %d", k, n, want[k])
		}
	}
	for k := range want {
		if seen[k] == 0 {
			t.Errorf("Verify never read %q", k)
		}
	}
	// 40 records, 8 chunked, 40 versions, 4 streams, 13 keys, 1 checkpoint.
	if len(want) != 106 {
		t.Fatalf("the log holds %d entries, want 106", len(want))
	}
	// Each of the six buckets starts in a round of its own.
	if rounds < 106/3-6 {
		t.Fatalf("%d rounds for 106 entries in rounds of 3", rounds)
	}
}

// TestVerifyBesideAppends appends between Verify's rounds (to old streams,
// new ones, with keys, and large payloads that make the file grow, so that
// bbolt remaps it: a commit that would wait for a transaction Verify held
// would never return here) and checks that each append commits there and
// that Verify reports nothing.
func TestVerifyBesideAppends(t *testing.T) {
	l := openTest(t, filepath.Join(t.TempDir(), "log.db"), Options{})
	fillVerifyLog(t, l, 30)
	setRound(t, 2)
	appended := 0
	verifyBetweenRounds = func() {
		if n := l.db.Stats().OpenTxN; n != 0 {
			t.Fatalf("%d read transactions open between rounds", n)
		}
		appended++
		a := Append{Stream: fmt.Sprint("s", appended%6), Key: fmt.Sprint("late-", appended),
			Entries: []Entry{entry(1, "late"), entry(2, string(bytes.Repeat([]byte("x"), 64<<10)))}}
		res := mustAppend(t, l, a)
		if res.Duplicate {
			t.Fatalf("append %d was taken for a duplicate", appended)
		}
	}
	t.Cleanup(func() { verifyBetweenRounds = nil })
	if err := l.Verify(context.Background()); err != nil {
		t.Fatalf("Verify beside appends: %v", err)
	}
	if appended < 30 {
		t.Fatalf("only %d appends between rounds", appended)
	}
	verifyBetweenRounds = nil
	if err := l.Verify(context.Background()); err != nil {
		t.Fatalf("Verify after the appends: %v", err)
	}
}

// TestVerifyFindsDamageInAnyRound damages one record's checksum, or deletes
// its stream index entry, at every position of the log in turn, reads in rounds of two with
// appends between them, and checks that Verify names that record.
func TestVerifyFindsDamageInAnyRound(t *testing.T) {
	const n = 12
	damages := []struct {
		name   string
		damage func(tx *bolt.Tx, seq uint64) error
		want   string
	}{
		{"checksum", func(tx *bolt.Tx, seq uint64) error {
			b := tx.Bucket(bucketEvents)
			v := bytes.Clone(b.Get(u64(seq)))
			v[len(v)-1] ^= 1
			return b.Put(u64(seq), v)
		}, "checksum mismatch"},
		{"index entry", func(tx *bolt.Tx, seq uint64) error {
			c := tx.Bucket(bucketVersions).Cursor()
			for k, v := c.First(); k != nil; k, v = c.Next() {
				if bytes.Equal(v, u64(seq)) {
					return c.Delete()
				}
			}
			return fmt.Errorf("no index entry for %d", seq)
		}, "stream index"},
	}
	for _, d := range damages {
		for seq := uint64(1); seq <= n; seq++ {
			t.Run(fmt.Sprint(d.name, "/", seq), func(t *testing.T) {
				l := openTest(t, filepath.Join(t.TempDir(), "log.db"), Options{})
				fillVerifyLog(t, l, n)
				if err := l.db.Update(func(tx *bolt.Tx) error { return d.damage(tx, seq) }); err != nil {
					t.Fatal(err)
				}
				setRound(t, 2)
				i := 0
				verifyBetweenRounds = func() {
					i++
					mustAppend(t, l, Append{Stream: fmt.Sprint("s", i%5), Entries: []Entry{entry(1, "late")}})
				}
				t.Cleanup(func() { verifyBetweenRounds = nil })
				err := l.Verify(context.Background())
				if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), d.want) {
					t.Fatalf("Verify = %v, want %q", err, d.want)
				}
				var ce *CorruptError
				if d.name == "checksum" && (!errors.As(err, &ce) || ce.Seq != seq) {
					t.Fatalf("Verify = %v, want a CorruptError for record %d", err, seq)
				}
			})
		}
	}
}

// TestVerifyFindsPageDamageInAWritableLog damages the freelist page of a
// log open for writing (bbolt reads it only at open, so the log goes on
// working) and checks that Verify's page walk, which holds no transaction
// on a writable log, reports it.
func TestVerifyFindsPageDamageInAWritableLog(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log.db")
	l := openTest(t, path, Options{})
	fillVerifyLog(t, l, 20)
	if err := l.Verify(context.Background()); err != nil {
		t.Fatalf("Verify before damage: %v", err)
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	pf, err := readLayout(f, fi.Size())
	if err != nil || pf.cur.err != nil || pf.cur.freelist == noFreelist {
		t.Fatalf("no freelist page to damage: %v %v", err, pf.cur)
	}
	at := int64(pf.cur.freelist)*int64(pf.pageSize) + 8 // the page's flags
	if _, err := f.WriteAt([]byte{flagLeaf, 0}, at); err != nil {
		t.Fatal(err)
	}
	err = l.Verify(context.Background())
	var de *DamageError
	if !errors.As(err, &de) || de.Page != pf.cur.freelist || !strings.Contains(err.Error(), "freelist page has type") {
		t.Fatalf("Verify = %v, want the freelist page %d named", err, pf.cur.freelist)
	}
}

// TestVerifyIndexDamageInRounds damages the indexes in ways the rounds
// check without a map of streams or chunks, and checks each is reported
// with rounds of one and of two entries.
func TestVerifyIndexDamageInRounds(t *testing.T) {
	cases := []struct {
		name   string
		damage func(tx *bolt.Tx) error
		want   string
	}{
		{"two ids share a number", func(tx *bolt.Tx) error {
			return tx.Bucket(bucketStreams).Put([]byte("twin"), tx.Bucket(bucketStreams).Get([]byte("s1")))
		}, `stream "twin" has number 1, the first record of stream "s1"`},
		{"stream id lost", func(tx *bolt.Tx) error {
			return tx.Bucket(bucketStreams).Delete([]byte("s2"))
		}, "stream number 2 has index entries but no stream id"},
		{"chunks of an unchunked record", func(tx *bolt.Tx) error {
			b, err := tx.Bucket(bucketChunks).CreateBucket(u64(4))
			if err != nil {
				return err
			}
			return b.Put(u64(0), []byte("stray"))
		}, "1 payload chunks stored, the record names 0"},
		{"chunk bucket with a bad key", func(tx *bolt.Tx) error {
			return tx.Bucket(bucketChunks).Put([]byte("odd"), []byte("x"))
		}, "not a record's bucket of chunks"},
		{"key over a record of another key", func(tx *bolt.Tx) error {
			return tx.Bucket(bucketIdempotency).Put([]byte("key-3"), append(u64(3), u64(4)...))
		}, `idempotency key "key-3" covers a record written with key ""`},
		{"key straddling the log's end", func(tx *bolt.Tx) error {
			return tx.Bucket(bucketIdempotency).Put([]byte("late"), append(u64(12), u64(13)...))
		}, `idempotency key "late" covers records 12..13 outside the log`},
	}
	for _, round := range []int{1, 2} {
		for _, c := range cases {
			t.Run(fmt.Sprint(c.name, "/", round), func(t *testing.T) {
				l := openTest(t, filepath.Join(t.TempDir(), "log.db"), Options{})
				fillVerifyLog(t, l, 12)
				if err := l.db.Update(c.damage); err != nil {
					t.Fatal(err)
				}
				setRound(t, round)
				// Appends between rounds: record 13 onwards exists, so the
				// straddling key is caught by the last at Verify's start.
				i := 0
				verifyBetweenRounds = func() {
					i++
					mustAppend(t, l, Append{Stream: fmt.Sprint("late-", i), Entries: []Entry{entry(1, "late")}})
				}
				t.Cleanup(func() { verifyBetweenRounds = nil })
				err := l.Verify(context.Background())
				if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), c.want) {
					t.Fatalf("Verify = %v, want a problem containing %q", err, c.want)
				}
			})
		}
	}
}
