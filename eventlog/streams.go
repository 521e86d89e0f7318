package eventlog

import (
	"encoding/binary"

	bolt "go.etcd.io/bbolt"
)

// The stream index lives in two buckets:
//
//	streams:  stream id → stream number (the sequence number of its first record)
//	versions: stream number (8 bytes) + version (8 bytes) → sequence number
//
// Keying versions by the stream number instead of the id keeps the entries
// of streams that started close together in time on the same pages. Active
// delegations are recent ones, so a commit touching many streams dirties a
// few pages at the tail of the index instead of one page per stream, which
// is what makes group commit pay off (see BenchmarkConcurrentAppenders).
var (
	bucketStreams  = []byte("streams")
	bucketVersions = []byte("versions")
)

type streamIndex struct {
	names, versions *bolt.Bucket
}

func indexOf(tx *bolt.Tx) streamIndex {
	return streamIndex{names: tx.Bucket(bucketStreams), versions: tx.Bucket(bucketVersions)}
}

// lookup returns the stream's number and version; (0, 0) when it has no
// records.
func (ix streamIndex) lookup(stream string) (number, version uint64) {
	v := ix.names.Get([]byte(stream))
	if len(v) != 8 {
		return 0, 0
	}
	number = binary.BigEndian.Uint64(v)
	c := ix.versions.Cursor()
	k, _ := c.Seek(versionKey(number+1, 0))
	if k == nil {
		k, _ = c.Last()
	} else {
		k, _ = c.Prev()
	}
	if len(k) != 16 || binary.BigEndian.Uint64(k) != number {
		return number, 0
	}
	return number, binary.BigEndian.Uint64(k[8:])
}

// add records that stream's version holds record seq. For a new stream
// (version 1) seq becomes the stream number.
func (ix streamIndex) add(stream string, number, version, seq uint64) (uint64, error) {
	if version == 1 {
		number = seq
		if err := ix.names.Put([]byte(stream), u64(seq)); err != nil {
			return 0, err
		}
	}
	return number, ix.versions.Put(versionKey(number, version), u64(seq))
}

// seqs returns the sequence numbers of stream's records in version order.
func (ix streamIndex) seqs(stream string) []uint64 {
	v := ix.names.Get([]byte(stream))
	if len(v) != 8 {
		return nil
	}
	number := binary.BigEndian.Uint64(v)
	var out []uint64
	c := ix.versions.Cursor()
	for k, v := c.Seek(versionKey(number, 0)); len(k) == 16 && binary.BigEndian.Uint64(k) == number; k, v = c.Next() {
		if len(v) == 8 {
			out = append(out, binary.BigEndian.Uint64(v))
		} else {
			out = append(out, 0) // reported as corrupt by the reader
		}
	}
	return out
}

func versionKey(number, version uint64) []byte {
	k := make([]byte, 16)
	binary.BigEndian.PutUint64(k, number)
	binary.BigEndian.PutUint64(k[8:], version)
	return k
}
