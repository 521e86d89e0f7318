package eventlog

import (
	"bytes"
	"errors"
	"fmt"
	"path/filepath"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// scanned collects what Scan lends from from, each record copied.
func scanned(t *testing.T, l *Log, from uint64) ([]Record, error) {
	t.Helper()
	var out []Record
	err := l.Scan(from, func(r *Record) bool {
		c := *r
		c.Payload = bytes.Clone(r.Payload)
		out = append(out, c)
		return true
	})
	return out, err
}

// TestScanReadsWhatRecordsReads: Scan hands fn the records Records yields,
// field for field, across several read transactions (more than scanChunk
// records), from any sequence number, chunked payloads and idempotency
// keys included; and it does so without an allocation per record (the
// payloads are lent, not copied).
func TestScanReadsWhatRecordsReads(t *testing.T) {
	l := openTest(t, filepath.Join(t.TempDir(), "log.db"), Options{})
	big := bytes.Repeat([]byte("0123456789abcdef"), 1<<12) // chunked
	n := 0
	for i := range 300 {
		entries := make([]Entry, 9)
		for j := range entries {
			entries[j] = entry(uint16(j+1), fmt.Sprintf("payload %d of %d", j, i))
		}
		if i%100 == 7 {
			entries[4].Payload = big
		}
		a := Append{Stream: fmt.Sprintf("stream-%d", i%13), Entries: entries}
		if i%10 == 3 {
			a.Key = fmt.Sprint("key-", i)
		}
		mustAppend(t, l, a)
		n += len(entries)
	}
	for _, from := range []uint64{0, 1, 2, scanChunk, scanChunk + 1, uint64(n), uint64(n) + 1} {
		got, err := scanned(t, l, from)
		if err != nil {
			t.Fatalf("Scan(%d): %v", from, err)
		}
		want := collect(t, l, from)
		if len(got) != len(want) {
			t.Fatalf("Scan(%d) gave %d records, Records %d", from, len(got), len(want))
		}
		for i := range want {
			g, w := got[i], want[i]
			if g.Seq != w.Seq || g.Kind != w.Kind || g.Stream != w.Stream || !g.Time.Equal(w.Time) || g.Key != w.Key || !bytes.Equal(g.Payload, w.Payload) {
				t.Fatalf("Scan(%d): record %d is %+v, Records gives %+v", from, w.Seq, g, w)
			}
		}
	}
	var sum int
	allocs := testing.AllocsPerRun(3, func() {
		if err := l.Scan(1, func(r *Record) bool { sum += len(r.Payload); return true }); err != nil {
			t.Fatal(err)
		}
	})
	if allocs > float64(n)/4 {
		t.Errorf("Scan of %d records made %.0f allocations, want far fewer than one per record", n, allocs)
	}
}

// TestScanStops: fn returning false ends the scan at once, with no error.
func TestScanStops(t *testing.T) {
	l := openTest(t, filepath.Join(t.TempDir(), "log.db"), Options{})
	for i := range 20 {
		mustAppend(t, l, Append{Stream: "s", Entries: []Entry{entry(1, fmt.Sprint(i))}})
	}
	var seqs []uint64
	err := l.Scan(5, func(r *Record) bool {
		seqs = append(seqs, r.Seq)
		return r.Seq < 7
	})
	if err != nil || len(seqs) != 3 || seqs[0] != 5 || seqs[2] != 7 {
		t.Fatalf("Scan(5) stopping at 7 saw %v, %v", seqs, err)
	}
}

// TestScanChecksEveryRecord: a record whose bytes no longer match its
// checksum, and a chunked payload with a damaged chunk, end the scan with
// a *CorruptError naming the record, after fn had the records before it.
func TestScanChecksEveryRecord(t *testing.T) {
	damage := map[string]func(tx *bolt.Tx) error{
		"record": func(tx *bolt.Tx) error {
			v := bytes.Clone(tx.Bucket(bucketEvents).Get(u64(2)))
			v[len(v)-checksumLen-1] ^= 1 // the payload's last byte
			return tx.Bucket(bucketEvents).Put(u64(2), v)
		},
		"chunk": func(tx *bolt.Tx) error {
			b := tx.Bucket(bucketChunks).Bucket(u64(2))
			v := bytes.Clone(b.Get(chunkKey(2, 3)))
			v[0] ^= 1
			return b.Put(chunkKey(2, 3), v)
		},
	}
	for name, fn := range damage {
		t.Run(name, func(t *testing.T) {
			path, _ := chunkedLog(t)
			db, err := bolt.Open(path, 0o600, nil)
			if err != nil {
				t.Fatal(err)
			}
			if err := db.Update(fn); err != nil {
				t.Fatal(err)
			}
			db.Close()
			l := openTest(t, path, Options{ReadOnly: true})
			got, err := scanned(t, l, 1)
			var ce *CorruptError
			if !errors.As(err, &ce) || ce.Seq != 2 || len(got) != 1 || got[0].Seq != 1 {
				t.Fatalf("Scan of a log whose record 2 is damaged read %d records, then %v", len(got), err)
			}
			if got, err := scanned(t, l, 3); err != nil || len(got) != 3 {
				t.Fatalf("Scan(3) after the damaged record: %d records, %v", len(got), err)
			}
		})
	}
}
