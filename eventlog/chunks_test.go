package eventlog

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/cespare/xxhash/v2"
	bolt "go.etcd.io/bbolt"
)

// chunkedLog writes a log of five records: small, 1 MiB, small and
// ChunkLen+1 bytes (one keyed append), InlineLen+1 bytes. It returns the
// path and the payloads by sequence number.
func chunkedLog(t *testing.T) (string, map[uint64][]byte) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "log.db")
	l := openTest(t, path, Options{})
	big := bytes.Repeat([]byte("0123456789abcdef"), 1<<16)
	big[12345] = 'x' // not periodic in the chunk length
	edge := bytes.Repeat([]byte("e"), ChunkLen+1)
	over := bytes.Repeat([]byte("o"), InlineLen+1)
	payloads := map[uint64][]byte{1: []byte("first"), 2: big, 3: []byte("third"), 4: edge, 5: over}
	mustAppend(t, l, Append{Stream: "a", Entries: []Entry{entry(1, "first")}})
	mustAppend(t, l, Append{Stream: "b", Entries: []Entry{{Kind: 2, Time: t0, Payload: big}}})
	mustAppend(t, l, Append{Stream: "a", Key: "k", Entries: []Entry{entry(3, "third"), {Kind: 4, Time: t0, Payload: edge}}})
	mustAppend(t, l, Append{Stream: "b", Entries: []Entry{{Kind: 5, Time: t0, Payload: over}}})
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return path, payloads
}

func checkPayloads(t *testing.T, recs []Record, want map[uint64][]byte) {
	t.Helper()
	if len(recs) != len(want) {
		t.Fatalf("%d records, want %d", len(recs), len(want))
	}
	for _, r := range recs {
		if !bytes.Equal(r.Payload, want[r.Seq]) {
			t.Errorf("record %d: payload of %d bytes differs from the %d appended", r.Seq, len(r.Payload), len(want[r.Seq]))
		}
	}
}

// TestChunkedPayloads: a payload longer than ChunkLen goes to the chunks
// bucket, and every reader gets it back whole: Records, Stream, Tx.Record,
// after a reopen, read-only; Verify finds nothing wrong.
func TestChunkedPayloads(t *testing.T) {
	path, want := chunkedLog(t)
	for _, ro := range []bool{false, true} {
		l := openTest(t, path, Options{ReadOnly: ro})
		checkPayloads(t, collect(t, l, 1), want)
		recs, err := l.Stream("b")
		if err != nil || len(recs) != 2 || !bytes.Equal(recs[0].Payload, want[2]) {
			t.Fatalf("Stream: %d records, %v", len(recs), err)
		}
		err = l.View(func(tx *Tx) error {
			r, err := tx.Record(4)
			if err == nil && !bytes.Equal(r.Payload, want[4]) {
				err = fmt.Errorf("record 4: %d bytes", len(r.Payload))
			}
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := l.Verify(context.Background()); err != nil {
			t.Fatalf("Verify: %v", err)
		}
		l.Close()
	}
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	_ = db.View(func(tx *bolt.Tx) error {
		for seq, n := range map[uint64]int{2: chunkCount(len(want[2]), ChunkLen), 4: 2, 5: 1} {
			if got := tx.Bucket(bucketChunks).Bucket(u64(seq)).Stats().KeyN; got != n {
				t.Errorf("record %d has %d chunks, want %d", seq, got, n)
			}
		}
		if v, most := tx.Bucket(bucketEvents).Get(u64(2)), 64+8*chunkCount(len(want[2]), ChunkLen); len(v) > most {
			t.Errorf("the 1 MiB record is %d bytes in the events bucket, more than %d", len(v), most)
		}
		if v := tx.Bucket(bucketMeta).Get(metaFormat); !bytes.Equal(v, []byte{FormatVersion}) {
			t.Errorf("format %v", v)
		}
		return nil
	})
}

// TestChunkDamage: a chunk that fails its checksum, is missing, or is cut
// short makes its record a *CorruptError for every reader, never a panic;
// Verify names it; Salvage keeps every record, and never a changed one.
func TestChunkDamage(t *testing.T) {
	cases := map[string]func(b *bolt.Bucket) error{
		"flipped": func(b *bolt.Bucket) error {
			v := append([]byte(nil), b.Get(chunkKey(2, 7))...)
			v[100] ^= 1
			return b.Put(chunkKey(2, 7), v)
		},
		"missing": func(b *bolt.Bucket) error { return b.Delete(chunkKey(2, 7)) },
		// Chunk 7 of another payload of record 2, whole, as a failed
		// commit of another record 2 writes it: the record's checksum of
		// chunk 7 is the other data's.
		"other payload": func(b *bolt.Bucket) error {
			other := bytes.Repeat([]byte("another payload "), 1<<16)
			return b.Put(chunkKey(2, 7), other[7*ChunkLen:8*ChunkLen])
		},
		"short": func(b *bolt.Bucket) error {
			return b.Put(chunkKey(2, 7), b.Get(chunkKey(2, 7))[:ChunkLen-1])
		},
		"swapped": func(b *bolt.Bucket) error {
			v6 := append([]byte(nil), b.Get(chunkKey(2, 6))...)
			v7 := append([]byte(nil), b.Get(chunkKey(2, 7))...)
			if err := b.Put(chunkKey(2, 6), v7); err != nil {
				return err
			}
			return b.Put(chunkKey(2, 7), v6)
		},
	}
	for name, damage := range cases {
		t.Run(name, func(t *testing.T) {
			path, want := chunkedLog(t)
			db, err := bolt.Open(path, 0o600, nil)
			if err != nil {
				t.Fatal(err)
			}
			if err := db.Update(func(tx *bolt.Tx) error { return damage(tx.Bucket(bucketChunks).Bucket(u64(2))) }); err != nil {
				t.Fatal(err)
			}
			db.Close()
			l := openTest(t, path, Options{ReadOnly: true})
			defer l.Close()
			var ce *CorruptError
			var got []Record
			for r, err := range l.Records(1) {
				if err != nil {
					if !errors.As(err, &ce) || ce.Seq != 2 || !strings.Contains(err.Error(), "chunk ") {
						t.Fatalf("Records: %v", err)
					}
					break
				}
				got = append(got, r)
			}
			if len(got) != 1 || ce == nil {
				t.Fatalf("Records read %d before the damaged one, error %v", len(got), ce)
			}
			if err := l.View(func(tx *Tx) error { _, err := tx.Record(2); return err }); !errors.As(err, &ce) || ce.Seq != 2 {
				t.Fatalf("Tx.Record: %v", err)
			}
			if _, err := l.Stream("b"); !errors.As(err, &ce) || ce.Seq != 2 {
				t.Fatalf("Stream: %v", err)
			}
			if err := l.Verify(context.Background()); !errors.As(err, &ce) || ce.Seq != 2 {
				t.Fatalf("Verify: %v", err)
			} else if name == "other payload" && !strings.Contains(err.Error(), "payload chunk 7 of 33: checksum mismatch") {
				t.Fatalf("Verify does not name the chunk of another payload: %v", err)
			}
			s, err := Salvage(path)
			if err != nil {
				t.Fatal(err)
			}
			// The damaging commit freed the page holding the chunk as
			// it was, and Salvage may find that copy and bring record 2
			// back whole. What it must never do is return it changed,
			// or lose another.
			salvaged := map[uint64]bool{}
			for _, r := range s.Records {
				if !bytes.Equal(r.Payload, want[r.Seq]) {
					t.Errorf("salvaged record %d changed: %d bytes", r.Seq, len(r.Payload))
				}
				salvaged[r.Seq] = true
			}
			for seq := range want {
				if !salvaged[seq] && seq != 2 {
					t.Errorf("salvage lost record %d", seq)
				}
			}
		})
	}
}

// TestSalvageRestoreChunked: Salvage finds chunked records whole, through
// the tree and without it, and Restore writes them back in chunks.
func TestSalvageRestoreChunked(t *testing.T) {
	path, want := chunkedLog(t)
	s, err := Salvage(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Damage) != 0 || s.Reachable != len(want) {
		t.Fatalf("salvage of a sound file: damage %v, %d reachable", s.Damage, s.Reachable)
	}
	checkPayloads(t, s.Records, want)
	out := filepath.Join(t.TempDir(), "restored.db")
	if _, err := Restore(out, s.Records); err != nil {
		t.Fatal(err)
	}
	l := openTest(t, out, Options{})
	defer l.Close()
	checkPayloads(t, collect(t, l, 1), want)
	if err := l.Verify(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// TestOpenFormat1: a file of the format before chunks (every payload
// inline) is read as it is, read-only and by a writer, which marks it
// FormatVersion and chunks what it appends.
func TestOpenFormat1(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log.db")
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	big := bytes.Repeat([]byte("inline "), 1000)
	err = db.Update(func(tx *bolt.Tx) error {
		for _, name := range [][]byte{bucketMeta, bucketEvents, bucketStreams, bucketVersions, bucketIdempotency, bucketCheckpoints, bucketViews} {
			if _, err := tx.CreateBucket(name); err != nil {
				return err
			}
		}
		if err := tx.Bucket(bucketMeta).Put(metaFormat, []byte{1}); err != nil {
			return err
		}
		w := newWriteTx(tx)
		if _, err := w.index.add("s", 0, 1, 1); err != nil {
			return err
		}
		return w.events.Put(u64(1), appendRecord(nil, 1, 7, t0.UnixNano(), "s", "", big))
	})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	ro := openTest(t, path, Options{ReadOnly: true})
	checkPayloads(t, collect(t, ro, 1), map[uint64][]byte{1: big})
	ro.Close()
	l := openTest(t, path, Options{})
	mustAppend(t, l, Append{Stream: "s", Entries: []Entry{{Kind: 8, Time: t0, Payload: big}}})
	checkPayloads(t, collect(t, l, 1), map[uint64][]byte{1: big, 2: big})
	if err := l.Verify(context.Background()); err != nil {
		t.Fatal(err)
	}
	_ = l.db.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bucketMeta).Get(metaFormat); !bytes.Equal(v, []byte{FormatVersion}) {
			t.Errorf("format after a writer opened it: %v", v)
		}
		if tx.Bucket(bucketChunks).Bucket(u64(2)) == nil {
			t.Error("the new large record is not in chunks")
		}
		return nil
	})
	l.Close()
}

// TestLargePayloadNotRewritten: the appends after a large payload write
// pages for themselves only; the payload's own append writes about its
// size once.
func TestLargePayloadNotRewritten(t *testing.T) {
	l := openTest(t, filepath.Join(t.TempDir(), "log.db"), Options{})
	defer l.Close()
	for i := range 100 {
		mustAppend(t, l, Append{Stream: fmt.Sprintf("s%d", i%7), Entries: []Entry{entry(1, strings.Repeat("x", 300))}})
	}
	big := bytes.Repeat([]byte("b"), 4<<20)
	a0 := l.Allocated()
	mustAppend(t, l, Append{Stream: "big", Entries: []Entry{{Kind: 2, Time: t0, Payload: big}}})
	bigCost := l.Allocated() - a0
	if bigCost > int64(len(big))*11/10+64<<10 {
		t.Errorf("appending 4 MiB allocated %d KiB", bigCost>>10)
	}
	a0 = l.Allocated()
	for i := range 10 {
		mustAppend(t, l, Append{Stream: "big", Entries: []Entry{entry(3, fmt.Sprint("after ", i))}})
	}
	if after := l.Allocated() - a0; after > 10*64<<10 {
		t.Errorf("10 small appends after a 4 MiB one allocated %d KiB", after>>10)
	}
}

// TestSalvageLosesOnlyTheDamagedChunkedRecord: a chunk damaged in place in
// the file (every copy of it) loses its record and no other.
func TestSalvageLosesOnlyTheDamagedChunkedRecord(t *testing.T) {
	path, want := chunkedLog(t)
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	key := chunkKey(2, 7)
	hits := 0
	for off := 0; ; {
		i := bytes.Index(raw[off:], key)
		if i < 0 {
			break
		}
		raw[off+i+len(key)+100] ^= 1
		hits++
		off += i + 1
	}
	if hits == 0 {
		t.Fatal("chunk 7 of record 2 not found in the file")
	}
	if err := os.WriteFile(path, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := Salvage(path)
	if err != nil {
		t.Fatal(err)
	}
	delete(want, 2)
	checkPayloads(t, s.Records, want)
	if lost := s.Lost(); len(lost) != 1 || lost[0] != 2 {
		t.Errorf("lost %v, want [2]", lost)
	}
	l := openTest(t, path, Options{ReadOnly: true})
	defer l.Close()
	var ce *CorruptError
	if err := l.Verify(context.Background()); !errors.As(err, &ce) || ce.Seq != 2 {
		t.Fatalf("Verify: %v", err)
	}
}

// TestSalvageSkipsStaleChunks builds the file a failed commit leaves: an
// append of record 4 (1 MiB, in chunks) wrote its pages and never became
// part of the tree; then another record 4, of the same length, was
// appended and committed. The failed commit's pages are free pages holding
// a valid record 4 and its chunks, under the same keys as the live ones
// and met first by a scan. With the branch page of the live record's
// chunks damaged, Salvage finds them only by scanning: it must bring back
// the live record byte for byte, take none of the stale chunks, and say
// how many it passed over. Readers and Verify, given a stale chunk in
// place of a live one, name that chunk.
func TestSalvageSkipsStaleChunks(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log.db")
	l := openTest(t, path, Options{})
	for i := 1; i <= 3; i++ {
		mustAppend(t, l, Append{Stream: "a", Entries: []Entry{entry(1, fmt.Sprint("small ", i))}})
	}
	const chunks = 8
	live := bytes.Repeat([]byte("live payload 4  "), chunks*ChunkLen/16)[:chunks*ChunkLen-100]
	stale := bytes.Repeat([]byte("stale payload 4 "), chunks*ChunkLen/16)[:len(live)]
	// The failed commit's pages: record 4 and its chunks as putRecord
	// writes them, in a bucket of their own so that the live append does
	// not reuse their pages, dropped (its pages freed, their bytes kept)
	// once the live record is committed.
	failed := []byte("failed-commit")
	err := l.db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucket(failed)
		if err != nil {
			return err
		}
		p := chunkedPayload{length: len(stale), chunkLen: ChunkLen, sums: chunkSums(stale)}
		if err := b.Put(u64(4), appendListedRecord(nil, 4, 9, t0.UnixNano(), "b", "", p)); err != nil {
			return err
		}
		c, err := b.CreateBucket(bucketChunks)
		if err == nil {
			c, err = c.CreateBucket(u64(4))
		}
		if err != nil {
			return err
		}
		return putChunks(c, 4, stale, p)
	})
	if err != nil {
		t.Fatal(err)
	}
	mustAppend(t, l, Append{Stream: "b", Entries: []Entry{{Kind: 9, Time: t0, Payload: live}}})
	if err := l.db.Update(func(tx *bolt.Tx) error { return tx.DeleteBucket(failed) }); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}

	// The scan must meet the stale copy of every chunk first.
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for i := range chunks {
		key := chunkKey(4, uint32(i))
		firstStale, firstLive := -1, -1
		for off := 0; ; off++ {
			j := bytes.Index(raw[off:], key)
			if j < 0 {
				break
			}
			off += j
			data := raw[off+len(key):]
			if firstStale < 0 && bytes.HasPrefix(data, stale[i*ChunkLen:i*ChunkLen+64]) {
				firstStale = off
			}
			if firstLive < 0 && bytes.HasPrefix(data, live[i*ChunkLen:i*ChunkLen+64]) {
				firstLive = off
			}
		}
		if firstStale < 0 || firstLive < firstStale {
			t.Fatalf("chunk %d: the stale copy (at %d) is not before the live one (at %d)", i, firstStale, firstLive)
		}
	}
	// Damage the branch page of the live record's chunks.
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	fi, _ := f.Stat()
	pf, err := readLayout(f, fi.Size())
	if err != nil {
		t.Fatal(err)
	}
	var branches []uint64
	pf.walk(nil, func(id uint64, leaf bool, bucket []string) {
		if !leaf && len(bucket) == 2 && bucket[0] == string(bucketChunks) && bucket[1] == string(u64(4)) {
			branches = append(branches, id)
		}
	})
	f.Close()
	if len(branches) != 1 {
		t.Fatalf("record 4's chunks have %d branch pages, want 1", len(branches))
	}
	off := int(branches[0]) * pf.pageSize
	copy(raw[off+pageHeaderLen:off+pf.pageSize], bytes.Repeat([]byte{0xff}, pf.pageSize))
	if err := os.WriteFile(path, raw, 0o600); err != nil {
		t.Fatal(err)
	}

	s, err := Salvage(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Damage) == 0 {
		t.Fatal("Salvage reported no damage: the scan was not needed")
	}
	want := map[uint64][]byte{1: []byte("small 1"), 2: []byte("small 2"), 3: []byte("small 3"), 4: live}
	checkPayloads(t, s.Records, want)
	if !slices.Equal(s.ChunkConflicts, []uint64{4}) || s.StaleChunks != chunks {
		t.Errorf("chunk conflicts %v, %d stale chunks passed over; want [4] and %d", s.ChunkConflicts, s.StaleChunks, chunks)
	}
	if len(s.Conflicts) != 0 {
		t.Errorf("conflicts %v: the live record 4 is in the tree", s.Conflicts)
	}
	out := filepath.Join(t.TempDir(), "restored.db")
	if _, err := Restore(out, s.Records); err != nil {
		t.Fatal(err)
	}
	r := openTest(t, out, Options{ReadOnly: true})
	defer r.Close()
	checkPayloads(t, collect(t, r, 1), want)
}

// putFormat2Record stores record seq with payload as format 2 wrote a
// chunked record (recordChunked): each chunk its data and a checksum of
// its key, the payload's hash and its data.
func putFormat2Record(tx *bolt.Tx, seq uint64, kind uint16, stream, key string, payload []byte) error {
	all, err := tx.CreateBucketIfNotExists(bucketChunks)
	if err != nil {
		return err
	}
	b, err := all.CreateBucket(u64(seq))
	if err != nil {
		return err
	}
	const chunkLen = 32<<10 - (16 + chunkKeyLen + checksumLen + 16/2) // format 2's
	hash := xxhash.Sum64(payload)
	for i := range chunkCount(len(payload), chunkLen) {
		data := payload[i*chunkLen : min(len(payload), (i+1)*chunkLen)]
		k := chunkKey(seq, uint32(i))
		if err := b.Put(k, binary.BigEndian.AppendUint64(append([]byte(nil), data...), chunkChecksum(k, hash, data))); err != nil {
			return err
		}
	}
	rec := appendHead(nil, recordChunked, kind, t0.UnixNano(), stream, key)
	rec = binary.BigEndian.AppendUint32(rec, uint32(len(payload)))
	rec = binary.BigEndian.AppendUint32(rec, chunkLen)
	rec = binary.BigEndian.AppendUint64(rec, hash)
	rec = binary.BigEndian.AppendUint64(rec, checksum(seq, rec))
	return tx.Bucket(bucketEvents).Put(u64(seq), rec)
}

// TestFormat2Chunks: a chunked record as format 2 wrote it reads back
// whole in every reader, beside one this build writes after a writer
// opened the file; Verify and Salvage find it whole; a flipped byte in one
// of its chunks makes it a *CorruptError naming the chunk.
func TestFormat2Chunks(t *testing.T) {
	path, want := chunkedLog(t)
	// Records 2 and 4 as format 2 wrote them, in a file of format 2.
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, seq := range []uint64{2, 4} {
			r, _, err := decodeHead(seq, tx.Bucket(bucketEvents).Get(u64(seq)))
			if err != nil {
				return err
			}
			if err := tx.Bucket(bucketChunks).DeleteBucket(u64(seq)); err != nil {
				return err
			}
			if err := putFormat2Record(tx, seq, r.Kind, r.Stream, r.Key, want[seq]); err != nil {
				return err
			}
		}
		return tx.Bucket(bucketMeta).Put(metaFormat, []byte{2})
	})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	l := openTest(t, path, Options{})
	big := bytes.Repeat([]byte("format 3 payload"), 1<<16)
	mustAppend(t, l, Append{Stream: "c", Entries: []Entry{{Kind: 6, Time: t0, Payload: big}}})
	want[6] = big
	checkPayloads(t, collect(t, l, 1), want)
	if err := l.Verify(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := l.db.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bucketMeta).Get(metaFormat); !bytes.Equal(v, []byte{FormatVersion}) {
			return fmt.Errorf("format byte %v after a writer opened the file, want %d", v, FormatVersion)
		}
		for seq, version := range map[uint64]byte{2: recordChunked, 4: recordChunked, 6: recordListed} {
			if v := tx.Bucket(bucketEvents).Get(u64(seq)); v[0] != version {
				return fmt.Errorf("record %d is of version %d, want %d", seq, v[0], version)
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	l.Close()
	s, err := Salvage(path)
	if err != nil {
		t.Fatal(err)
	}
	checkPayloads(t, s.Records, want)

	db, err = bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketChunks).Bucket(u64(2))
		v := append([]byte(nil), b.Get(chunkKey(2, 7))...)
		v[100] ^= 1
		return b.Put(chunkKey(2, 7), v)
	})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	l = openTest(t, path, Options{ReadOnly: true})
	defer l.Close()
	var ce *CorruptError
	if err := l.View(func(tx *Tx) error { _, err := tx.Record(2); return err }); !errors.As(err, &ce) || ce.Seq != 2 || !strings.Contains(err.Error(), "payload chunk 7 of 33: checksum mismatch") {
		t.Fatalf("Tx.Record of a damaged format 2 record: %v", err)
	}
}
