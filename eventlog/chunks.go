package eventlog

import (
	"encoding/binary"
	"fmt"
	"slices"

	"github.com/cespare/xxhash/v2"
	bolt "go.etcd.io/bbolt"
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
// record then holds the payload's length and the chunk length instead of
// the payload. No later append adds a key beside a chunk, so a chunk is
// written once, in one run of pages, and never again: an append costs its
// own bytes, whatever came before it. No value is larger than ChunkLen plus
// its checksum, which is also what a store with a bound on its request
// size needs.
//
//	chunks: sequence number (8 bytes) → bucket:
//	        sequence number (8 bytes) + chunk number (4 bytes) → data + checksum
//
// A chunk's key repeats the sequence number so that a chunk found outside
// the tree (Salvage) says whose it is. Its checksum is xxhash64 of its key,
// the payload hash its record holds and its data: a chunk copied under
// another key fails it, and so does a chunk of another payload under the
// right key, such as one a failed commit of another record with the same
// sequence number left in free pages (see ErrBroken), which Salvage finds
// beside the live one and must tell apart. A chunk that is missing or fails
// its checksum makes its record a *CorruptError, as a damaged record is.
//
// Binding the checksum to the payload hash came before format 2 was
// released: no file holds chunks checked the earlier way, so FormatVersion
// stays 2.
var bucketChunks = []byte("chunks")

// InlineLen is the longest payload kept inside its record.
const InlineLen = 2000

// ChunkLen is the most payload bytes one chunk holds: two chunks, with
// bbolt's element headers, keys and checksums, fill 64 KiB of pages.
const ChunkLen = 32<<10 - chunkOverhead

// chunkOverhead is what a chunk costs in a leaf page beside its data:
// bbolt's element header, the key, the checksum, and half a page header.
const chunkOverhead = 16 + chunkKeyLen + checksumLen + 16/2

// Record format versions: the first byte of every stored record.
const (
	recordInline  = 1 // the payload follows its length
	recordChunked = 2 // the payload's length and the chunk length; the payload is in the chunks bucket
)

// putRecord stores the record seq in events, its payload in chunks first
// when it is longer than InlineLen.
func putRecord(events *bolt.Bucket, seq uint64, kind uint16, nanos int64, stream, key string, payload []byte) error {
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
	chunked := chunkedPayload{length: len(payload), chunkLen: ChunkLen, hash: xxhash.Sum64(payload)}
	if err := putChunks(chunks, seq, payload, chunked); err != nil {
		return err
	}
	return events.Put(u64(seq), appendChunkedRecord(nil, seq, kind, nanos, stream, key, chunked))
}

// putChunks stores payload, described by p, in b as the chunks of record
// seq.
func putChunks(b *bolt.Bucket, seq uint64, payload []byte, p chunkedPayload) error {
	b.FillPercent = 1.0
	n := p.chunks()
	// bbolt keeps every key and value until the commit. The keys share
	// one allocation; each value is a make and copy of its data, which the
	// compiler turns into one allocation not cleared first (a buffer for
	// them all would be cleared, then filled).
	keys := make([]byte, 0, n*chunkKeyLen)
	for i := range n {
		data := payload[i*p.chunkLen : min(len(payload), (i+1)*p.chunkLen)]
		start := len(keys)
		keys = binary.BigEndian.AppendUint64(keys, seq)
		keys = binary.BigEndian.AppendUint32(keys, uint32(i))
		k := keys[start:len(keys):len(keys)]
		v := make([]byte, len(data)+checksumLen)
		copy(v, data)
		binary.BigEndian.PutUint64(v[len(data):], chunkChecksum(k, p.hash, data))
		if err := b.Put(k, v); err != nil {
			return err
		}
	}
	return nil
}

const chunkKeyLen = 8 + 4

func chunkCount(payloadLen, chunkLen int) int { return (payloadLen + chunkLen - 1) / chunkLen }

// chunkChecksum is a chunk's checksum: xxhash64 of its key, the payload
// hash of the record it belongs to (8 bytes) and its data.
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

// appendChunkedRecord appends the encoding of a record whose payload is
// in chunks: the layout of appendRecord with version recordChunked and, in
// place of the payload, its length and the chunk length (4 bytes each) and
// the payload's xxhash64 (8 bytes), which a reader checks the chunks put
// together against, and which every chunk's own checksum includes, binding
// the chunk to this payload.
func appendChunkedRecord(dst []byte, seq uint64, kind uint16, unixNano int64, stream, key string, p chunkedPayload) []byte {
	start := len(dst)
	dst = appendHead(dst, recordChunked, kind, unixNano, stream, key)
	dst = binary.BigEndian.AppendUint32(dst, uint32(p.length))
	dst = binary.BigEndian.AppendUint32(dst, uint32(p.chunkLen))
	dst = binary.BigEndian.AppendUint64(dst, p.hash)
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
	hash             uint64 // xxhash64 of the whole payload
}

func (p chunkedPayload) chunks() int { return chunkCount(p.length, p.chunkLen) }

// assemble reads and checks the chunks of record seq's payload. The
// payload's own checksum covers every chunk, so it is the one computed on
// every read; each chunk's checksum is computed only when that one fails,
// to say which chunk is damaged or belongs to another payload.
func (p chunkedPayload) assemble(seq uint64, src chunkSource) ([]byte, error) {
	return p.assembleTo(nil, seq, src)
}

// assembleTo is assemble into dst's memory, grown as needed: for a scan
// that lends each payload until the next (Log.Scan) and reuses it.
func (p chunkedPayload) assembleTo(dst []byte, seq uint64, src chunkSource) ([]byte, error) {
	if src == nil {
		return nil, corrupt(seq, "the payload is in %d chunks, which were not read", p.chunks())
	}
	out := slices.Grow(dst[:0], p.length)
	n := p.chunks()
	for i := range n {
		v := src(seq, uint32(i))
		if v == nil {
			return nil, corrupt(seq, "payload chunk %d of %d is missing", i, n)
		}
		if want := p.chunkSize(i); len(v) != want+checksumLen {
			return nil, corrupt(seq, "payload chunk %d of %d is %d bytes, want %d", i, n, len(v), want+checksumLen)
		}
		out = append(out, v[:len(v)-checksumLen]...)
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
// checksum, which is bound to the payload's hash.
func (p chunkedPayload) holds(seq uint64, i int, v []byte) bool {
	if len(v) != p.chunkSize(i)+checksumLen {
		return false
	}
	data := v[:len(v)-checksumLen]
	return chunkChecksum(chunkKey(seq, uint32(i)), p.hash, data) == binary.BigEndian.Uint64(v[len(data):])
}

// chunkShaped reports whether a key/value pair found outside the tree
// (Salvage) has a chunk's shape. Whether it is a chunk of a given record
// can only be told with that record's payload hash (holds).
func chunkShaped(key, value []byte) bool {
	return len(key) == chunkKeyLen && len(value) > checksumLen && len(value) <= MaxPayloadLen+checksumLen
}
