package eventlog

import (
	"encoding/binary"
	"fmt"

	"github.com/cespare/xxhash/v2"
	bolt "go.etcd.io/bbolt"

	"github.com/delegations/delegations/eventlog/uncleared"
)

// Large payloads are stored in chunks, apart from their record.
//
// bbolt keeps a value inside its leaf page, spilling the leaf into overflow
// pages when the value is large, and writes the whole leaf again whenever
// any key in it changes. The events bucket's last leaf takes every append,
// so a large payload stored there is written again by the appends that
// follow it. A payload longer than InlineLen is therefore cut into chunks
// of ChunkLen bytes, stored in a bucket of their own under the chunks
// bucket, before the record that names them, in the same transaction; the
// record then holds the payload's length, the chunk length and each
// chunk's checksum instead of the payload. No later append adds a key
// beside a chunk, so a chunk is written once, in one run of pages, and
// never again: an append costs its own bytes, whatever came before it. No
// value is larger than ChunkLen, which is also what a store with a bound
// on its request size needs.
//
//	chunks: sequence number (8 bytes) → bucket:
//	        sequence number (8 bytes) + chunk number (4 bytes) → data
//
// A chunk's key repeats the sequence number so that a chunk found outside
// the tree (Salvage) says whose it is. Its checksum, xxhash64 of its data,
// is in its record (recordListed), which has its own checksum: a chunk
// copied under another key fails it, and so does a chunk of another
// payload under the right key, such as one a failed commit of another
// record with the same sequence number left in free pages (see ErrBroken),
// which Salvage finds beside the live one and must tell apart. A chunk that
// is missing or fails its checksum makes its record a *CorruptError, as a
// damaged record is.
//
// A chunk is its data alone, stored as a slice of the appended payload,
// which its caller keeps until the commit (Append returns after it); its
// checksum does not depend on the sequence number, so Append computes it
// before the writer takes the append. The writer's work for a payload of
// megabytes is then the commit's own (bbolt's page buffer, the write):
// format 2's chunks, each its data and a checksum of its key, the payload's
// hash and its data, cost the writer a copy of the payload and two hashes
// of it (recordChunked; read, not written, by this build).
var bucketChunks = []byte("chunks")

// InlineLen is the longest payload kept inside its record.
const InlineLen = 2000

// ChunkLen is the most payload bytes one chunk holds: two chunks, with
// bbolt's element headers and keys, fill 64 KiB of pages. A record holds
// its chunk length, so a change applies to the records written after it.
const ChunkLen = 32<<10 - chunkOverhead

// chunkOverhead is what a chunk costs in a leaf page beside its data:
// bbolt's element header, the key and half a page header.
const chunkOverhead = 16 + chunkKeyLen + 16/2

// Record format versions: the first byte of every stored record.
const (
	recordInline  = 1 // the payload follows its length
	recordChunked = 2 // format 2: the payload's length and the chunk length (4 bytes each) and the payload's xxhash64; each chunk its data and its checksum (chunkChecksum)
	recordListed  = 3 // the payload's length, the chunk length and each chunk's checksum; each chunk its data (appendListedRecord)
)

// putRecord stores the record seq in events, its payload in chunks first
// when it is longer than InlineLen. sums, if not nil, are the chunks'
// checksums (chunkSums).
func putRecord(events *bolt.Bucket, seq uint64, kind uint16, nanos int64, stream, key string, payload, sums []byte) error {
	if len(payload) <= InlineLen {
		// bbolt keeps the value slice until commit: each record needs its own.
		val := appendRecord(make([]byte, 0, encodedLen(len(stream), len(key), len(payload))),
			seq, kind, nanos, stream, key, payload)
		return events.Put(u64(seq), val)
	}
	all, err := events.Tx().CreateBucketIfNotExists(bucketChunks)
	if err != nil {
		return err
	}
	// Keys only ever grow at the end: fill pages completely.
	all.FillPercent = 1.0
	chunks, err := all.CreateBucket(u64(seq))
	if err != nil {
		return fmt.Errorf("chunks of record %d: %w", seq, err)
	}
	if sums == nil {
		sums = chunkSums(payload)
	}
	p := chunkedPayload{length: len(payload), chunkLen: ChunkLen, sums: sums}
	if err := putChunks(chunks, seq, payload, p); err != nil {
		return err
	}
	return events.Put(u64(seq), appendListedRecord(nil, seq, kind, nanos, stream, key, p))
}

// chunkSums returns the checksums of payload's chunks of ChunkLen bytes,
// 8 bytes each, as a recordListed record holds them, or nil for a payload
// kept inline.
func chunkSums(payload []byte) []byte {
	if len(payload) <= InlineLen {
		return nil
	}
	n := chunkCount(len(payload), ChunkLen)
	sums := make([]byte, 0, 8*n)
	for i := range n {
		sums = binary.BigEndian.AppendUint64(sums, xxhash.Sum64(payload[i*ChunkLen:min(len(payload), (i+1)*ChunkLen)]))
	}
	return sums
}

// putChunks stores payload, described by p, in b as the chunks of record
// seq: each a slice of payload, which bbolt keeps until the commit, and
// which is not changed before it (Append's caller keeps it until Append
// returns; Restore and a replica keep the records they write).
func putChunks(b *bolt.Bucket, seq uint64, payload []byte, p chunkedPayload) error {
	b.FillPercent = 1.0
	n := p.chunks()
	// bbolt keeps every key until the commit: they share one allocation.
	keys := make([]byte, 0, n*chunkKeyLen)
	for i := range n {
		start := len(keys)
		keys = binary.BigEndian.AppendUint64(keys, seq)
		keys = binary.BigEndian.AppendUint32(keys, uint32(i))
		end := min(len(payload), (i+1)*p.chunkLen)
		if err := b.Put(keys[start:len(keys):len(keys)], payload[i*p.chunkLen:end:end]); err != nil {
			return err
		}
	}
	return nil
}

const chunkKeyLen = 8 + 4

func chunkCount(payloadLen, chunkLen int) int { return (payloadLen + chunkLen - 1) / chunkLen }

// chunkChecksum is a format 2 chunk's checksum: xxhash64 of its key, the
// payload hash of the record it belongs to (8 bytes) and its data.
func chunkChecksum(key []byte, payloadHash uint64, data []byte) uint64 {
	var d xxhash.Digest
	d.Reset()
	_, _ = d.Write(key)
	var h [8]byte
	binary.BigEndian.PutUint64(h[:], payloadHash)
	_, _ = d.Write(h[:])
	_, _ = d.Write(data)
	return d.Sum64()
}

// appendListedRecord appends the encoding of a record whose payload is in
// chunks: the layout of appendRecord with version recordListed and, in
// place of the payload, its length and the chunk length (4 bytes each)
// and the checksum of each chunk (8 bytes each, p.sums), which a reader
// checks each chunk against.
func appendListedRecord(dst []byte, seq uint64, kind uint16, unixNano int64, stream, key string, p chunkedPayload) []byte {
	start := len(dst)
	dst = appendHead(dst, recordListed, kind, unixNano, stream, key)
	dst = binary.BigEndian.AppendUint32(dst, uint32(p.length))
	dst = binary.BigEndian.AppendUint32(dst, uint32(p.chunkLen))
	dst = append(dst, p.sums...)
	return binary.BigEndian.AppendUint64(dst, checksum(seq, dst[start:]))
}

// chunkSource returns the stored value (data and checksum) of chunk i of
// record seq's payload, or nil when there is none.
type chunkSource func(seq uint64, i uint32) []byte

// txChunks reads chunks from tx's chunks bucket (a file without one holds
// no chunked record).
func txChunks(tx *bolt.Tx) chunkSource {
	var (
		all    *bolt.Bucket
		opened bool // all is opened when first asked for: most records have no chunks
		last   uint64
		b      *bolt.Bucket
	)
	return func(seq uint64, i uint32) []byte {
		if !opened {
			all, opened = tx.Bucket(bucketChunks), true
		}
		if all == nil {
			return nil
		}
		if b == nil || seq != last {
			last, b = seq, all.Bucket(u64(seq))
		}
		if b == nil {
			return nil
		}
		return b.Get(chunkKey(seq, i))
	}
}

func chunkKey(seq uint64, i uint32) []byte {
	k := make([]byte, chunkKeyLen)
	binary.BigEndian.PutUint64(k, seq)
	binary.BigEndian.PutUint32(k[8:], i)
	return k
}

// readRecord decodes the record stored under seq in tx, its payload read
// from its chunks when it has them.
func readRecord(tx *bolt.Tx, seq uint64, b []byte) (Record, error) {
	return decodeWith(seq, b, txChunks(tx))
}

// chunkedPayload is what a chunked record says of its payload.
type chunkedPayload struct {
	length, chunkLen int
	// sums (recordListed) are the chunks' checksums, 8 bytes each; a
	// format 2 record (recordChunked) has none, but hash, the payload's
	// xxhash64, which every chunk's own checksum includes.
	sums []byte
	hash uint64
}

func (p chunkedPayload) chunks() int { return chunkCount(p.length, p.chunkLen) }

// sum is chunk i's checksum in a recordListed record.
func (p chunkedPayload) sum(i int) uint64 { return binary.BigEndian.Uint64(p.sums[8*i:]) }

// valueLen is the length of chunk i's stored value: its data, and in
// format 2 its checksum.
func (p chunkedPayload) valueLen(i int) int {
	if p.sums != nil {
		return p.chunkSize(i)
	}
	return p.chunkSize(i) + checksumLen
}

// assemble reads and checks the chunks of record seq's payload.
func (p chunkedPayload) assemble(seq uint64, src chunkSource) ([]byte, error) {
	return p.assembleTo(nil, seq, src)
}

// assembleTo is assemble into dst's memory, grown as needed: for a scan
// that lends each payload until the next (Log.Scan) and reuses it. A
// chunk's checksum (recordListed) is checked as it is copied, while it is
// in the cache; in format 2 the payload's own checksum covers every chunk,
// so it is the one computed on every read, and each chunk's checksum only
// when that one fails, to say which chunk is damaged or belongs to another
// payload.
func (p chunkedPayload) assembleTo(dst []byte, seq uint64, src chunkSource) ([]byte, error) {
	if src == nil {
		return nil, corrupt(seq, "the payload is in %d chunks, which were not read", p.chunks())
	}
	if cap(dst) < p.length {
		dst = uncleared.Make(p.length) // written over whole below
	}
	out := dst[:0]
	n := p.chunks()
	for i := range n {
		v := src(seq, uint32(i))
		if v == nil {
			return nil, corrupt(seq, "payload chunk %d of %d is missing", i, n)
		}
		if want := p.valueLen(i); len(v) != want {
			return nil, corrupt(seq, "payload chunk %d of %d is %d bytes, want %d", i, n, len(v), want)
		}
		if p.sums == nil {
			out = append(out, v[:len(v)-checksumLen]...)
			continue
		}
		out = append(out, v...)
		if got := xxhash.Sum64(out[len(out)-len(v):]); got != p.sum(i) {
			return nil, corrupt(seq, "payload chunk %d of %d: checksum mismatch: stored %016x, computed %016x (the chunk is damaged or belongs to another payload)", i, n, p.sum(i), got)
		}
	}
	if p.sums != nil {
		return out, nil
	}
	if got := xxhash.Sum64(out); got != p.hash {
		for i := range n {
			v := src(seq, uint32(i))
			data, sum := v[:len(v)-checksumLen], binary.BigEndian.Uint64(v[len(v)-checksumLen:])
			if got := chunkChecksum(chunkKey(seq, uint32(i)), p.hash, data); got != sum {
				return nil, corrupt(seq, "payload chunk %d of %d: checksum mismatch: stored %016x, computed %016x (the chunk is damaged or belongs to another payload)", i, n, sum, got)
			}
		}
		return nil, corrupt(seq, "payload checksum mismatch: stored %016x, computed %016x, though every chunk passes its own", p.hash, got)
	}
	return out, nil
}

// chunkSize is how many payload bytes chunk i holds.
func (p chunkedPayload) chunkSize(i int) int {
	if i == p.chunks()-1 {
		return p.length - i*p.chunkLen
	}
	return p.chunkLen
}

// holds reports whether v, a stored chunk value, is chunk i of this
// payload of record seq: its length is that chunk's and it passes its
// checksum, which the record holds (format 2: which is bound to the
// payload's hash).
func (p chunkedPayload) holds(seq uint64, i int, v []byte) bool {
	if len(v) != p.valueLen(i) {
		return false
	}
	if p.sums != nil {
		return xxhash.Sum64(v) == p.sum(i)
	}
	data := v[:len(v)-checksumLen]
	return chunkChecksum(chunkKey(seq, uint32(i)), p.hash, data) == binary.BigEndian.Uint64(v[len(data):])
}

// chunkShaped reports whether a key/value pair found outside the tree
// (Salvage) has a chunk's shape. Whether it is a chunk of a given record
// can only be told with that record's checksums (holds).
func chunkShaped(key, value []byte) bool {
	return len(key) == chunkKeyLen && len(value) > 0 && len(value) <= MaxPayloadLen+checksumLen
}
