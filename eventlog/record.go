package eventlog

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"time"
	"unicode/utf8"

	"github.com/cespare/xxhash/v2"
)

// FormatVersion is the version of the file's layout, kept in its meta
// bucket. Version 2 added payloads stored in chunks (chunks.go), version 3
// chunks whose checksums are in their record (recordListed); a file of
// version 1 or 2 is read as it is, and a writer marks it version 3 when it
// opens it: an older build refuses it rather than meet records it cannot
// read. Records carry their own version byte (recordInline, recordChunked
// or recordListed); one with another version is refused rather than
// guessed at.
const FormatVersion = 3

// Limits on what one record may hold. They keep a single append from
// producing a transaction bbolt handles badly and make hostile sizes fail
// early with a clear error.
const (
	MaxStreamLen  = 255      // bytes in a stream id
	MaxKeyLen     = 255      // bytes in an idempotency key
	MaxPayloadLen = 16 << 20 // bytes in one record's payload
	MaxEntries    = 1024     // records in one append
)

// Record is one event as stored in the log.
type Record struct {
	Seq     uint64    // position in the log, contiguous from 1
	Kind    uint16    // what happened; meaning belongs to the caller
	Stream  string    // the stream (entity) the record belongs to
	Time    time.Time // when it happened, as given by the appender (UTC, nanoseconds)
	Key     string    // idempotency key of the append that wrote it, if any
	Payload []byte    // opaque to the log
}

// Layout of an encoded record (all integers big-endian):
//
//	version  1 byte  (recordInline; recordListed: see appendListedRecord)
//	kind     2 bytes
//	time     8 bytes (Unix nanoseconds, signed)
//	stream   1 byte length + bytes
//	key      1 byte length + bytes
//	payload  4 bytes length + bytes
//	checksum 8 bytes xxhash64 of the sequence number (8 bytes) and every byte above
//
// The sequence number is part of the checksum so that a record copied to the
// wrong key fails verification too.
const (
	headerLen   = 1 + 2 + 8
	checksumLen = 8
	minRecord   = headerLen + 1 + 1 + 4 + checksumLen
)

func encodedLen(streamLen, keyLen, payloadLen int) int {
	return minRecord + streamLen + keyLen + payloadLen
}

// appendRecord appends the encoding of r (with sequence seq) to dst.
// The caller has validated the field sizes.
func appendRecord(dst []byte, seq uint64, kind uint16, unixNano int64, stream, key string, payload []byte) []byte {
	start := len(dst)
	dst = appendHead(dst, recordInline, kind, unixNano, stream, key)
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(payload)))
	dst = append(dst, payload...)
	return binary.BigEndian.AppendUint64(dst, checksum(seq, dst[start:]))
}

// appendHead appends the fields every record starts with, inline or
// chunked: version, kind, time, stream and key.
func appendHead(dst []byte, version byte, kind uint16, unixNano int64, stream, key string) []byte {
	dst = append(dst, version)
	dst = binary.BigEndian.AppendUint16(dst, kind)
	dst = binary.BigEndian.AppendUint64(dst, uint64(unixNano))
	dst = append(dst, byte(len(stream)))
	dst = append(dst, stream...)
	dst = append(dst, byte(len(key)))
	return append(dst, key...)
}

func checksum(seq uint64, body []byte) uint64 {
	var d xxhash.Digest
	d.Reset()
	var s [8]byte
	binary.BigEndian.PutUint64(s[:], seq)
	_, _ = d.Write(s[:])
	_, _ = d.Write(body)
	return d.Sum64()
}

// decodeRecord decodes the record stored under seq, which must hold its
// payload (a chunked one is a *CorruptError: use decodeWith). The returned
// record owns its memory: nothing in it aliases b, which may be bbolt's mmap.
func decodeRecord(seq uint64, b []byte) (Record, error) {
	return decodeWith(seq, b, nil)
}

// decodeWith decodes the record stored under seq, reading a chunked
// payload from src.
func decodeWith(seq uint64, b []byte, src chunkSource) (Record, error) {
	r, chunked, err := decodeHead(seq, b)
	if err != nil || chunked.length == 0 {
		return r, err
	}
	if r.Payload, err = chunked.assemble(seq, src); err != nil {
		return Record{}, err
	}
	return r, nil
}

// decodeHead decodes and checks the record stored under seq without
// reading chunks: for a chunked record the payload is left nil and
// chunked says where it is (chunked.length is 0 for an inline payload).
func decodeHead(seq uint64, b []byte) (r Record, chunked chunkedPayload, err error) {
	r, chunked, err = lendHead(seq, b, "")
	if len(r.Payload) > 0 {
		r.Payload = append([]byte(nil), r.Payload...)
	}
	chunked.sums = bytes.Clone(chunked.sums)
	return r, chunked, err
}

// lendHead is decodeHead without the copy: an inline payload is r.Payload
// aliasing b. When the stream id equals prev, r.Stream is prev itself, so
// that a scan of consecutive records of one stream allocates no string.
func lendHead(seq uint64, b []byte, prev string) (r Record, chunked chunkedPayload, err error) {
	if len(b) < minRecord {
		return Record{}, chunked, corrupt(seq, "record is %d bytes, shorter than the smallest record (%d)", len(b), minRecord)
	}
	body, sum := b[:len(b)-checksumLen], binary.BigEndian.Uint64(b[len(b)-checksumLen:])
	if got := checksum(seq, body); got != sum {
		return Record{}, chunked, corrupt(seq, "checksum mismatch: stored %016x, computed %016x", sum, got)
	}
	if body[0] != recordInline && body[0] != recordChunked && body[0] != recordListed {
		return Record{}, chunked, corrupt(seq, "unknown record format version %d (this build reads %d, %d and %d)", body[0], recordInline, recordChunked, recordListed)
	}
	kind := binary.BigEndian.Uint16(body[1:3])
	nanos := int64(binary.BigEndian.Uint64(body[3:11]))
	rest := body[headerLen:]

	stream, rest, ok := cutShort(rest)
	if !ok {
		return Record{}, chunked, corrupt(seq, "stream length runs past the record")
	}
	key, rest, ok := cutShort(rest)
	if !ok {
		return Record{}, chunked, corrupt(seq, "idempotency key length runs past the record")
	}
	if len(rest) < 4 {
		return Record{}, chunked, corrupt(seq, "payload length missing")
	}
	n := binary.BigEndian.Uint32(rest)
	rest = rest[4:]
	if body[0] != recordInline {
		if len(rest) < 4 {
			return Record{}, chunked, corrupt(seq, "chunked payload: the chunk length is missing")
		}
		chunked = chunkedPayload{length: int(n), chunkLen: int(binary.BigEndian.Uint32(rest))}
		if chunked.length == 0 || chunked.length > MaxPayloadLen || chunked.chunkLen == 0 {
			return Record{}, chunkedPayload{}, corrupt(seq, "chunked payload of %d bytes in chunks of %d", chunked.length, chunked.chunkLen)
		}
		want := 8 // format 2: the payload's hash
		if body[0] == recordListed {
			want = 8 * chunked.chunks() // each chunk's checksum
		}
		if rest = rest[4:]; len(rest) != want {
			return Record{}, chunkedPayload{}, corrupt(seq, "chunked payload: %d bytes after the chunk length, want %d", len(rest), want)
		}
		if body[0] == recordListed {
			chunked.sums = rest
		} else {
			chunked.hash = binary.BigEndian.Uint64(rest)
		}
		rest = nil
	} else if uint64(n) != uint64(len(rest)) {
		return Record{}, chunked, corrupt(seq, "payload length %d does not match the %d bytes stored", n, len(rest))
	}
	if len(stream) == 0 {
		return Record{}, chunkedPayload{}, corrupt(seq, "empty stream id")
	}
	r = Record{
		Seq:    seq,
		Kind:   kind,
		Stream: prev,
		Time:   time.Unix(0, nanos).UTC(),
		Key:    string(key),
	}
	if string(stream) != prev {
		r.Stream = string(stream)
	}
	if len(rest) > 0 {
		r.Payload = rest
	}
	return r, chunked, nil
}

// cutShort splits a one-byte-length-prefixed field off b.
func cutShort(b []byte) (field, rest []byte, ok bool) {
	if len(b) < 1 || len(b)-1 < int(b[0]) {
		return nil, nil, false
	}
	n := int(b[0])
	return b[1 : 1+n], b[1+n:], true
}

func validStream(s string) error {
	switch {
	case s == "":
		return fmt.Errorf("%w: empty stream id", ErrInvalid)
	case len(s) > MaxStreamLen:
		return fmt.Errorf("%w: stream id is %d bytes, the limit is %d", ErrInvalid, len(s), MaxStreamLen)
	case !utf8.ValidString(s):
		return fmt.Errorf("%w: stream id %q is not valid UTF-8", ErrInvalid, s)
	}
	for i := 0; i < len(s); i++ {
		if s[i] == 0 {
			return fmt.Errorf("%w: stream id %q contains a NUL byte", ErrInvalid, s)
		}
	}
	return nil
}
