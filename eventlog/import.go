package eventlog

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"iter"

	bolt "go.etcd.io/bbolt"
)

// Moving a log between stores (delegations migrate): the records go in
// under the sequence numbers, times and idempotency keys another store of
// the same log gave them, and the indexes are read out in a form the other
// store can be compared with.

// StreamHead is a stream and its version: how many records it holds.
type StreamHead struct {
	Stream  string
	Version uint64
}

// KeyEntry is an idempotency key and the records of the append that
// carried it.
type KeyEntry struct {
	Key         string
	First, Last uint64
}

// Import appends records that another store of the log holds (etcd, for
// delegations migrate) under their own sequence numbers: recs[0] must
// follow the log's last record, and the rest follow it without gaps. It
// writes them as a replica applies its upstream's records, in one
// transaction through the append path, projectors included: adjacent
// records of one stream carrying one idempotency key are one append, and
// may go on an append the previous Import began. Nothing else may append
// to the log meanwhile.
func (l *Log) Import(recs []Record) error {
	switch {
	case len(recs) == 0:
		return nil
	case l.readOnly:
		return ErrReadOnly
	case l.upstream != nil:
		return fmt.Errorf("%w: its records come from its upstream", ErrReplica)
	}
	if b := l.broken.Load(); b != nil {
		return b.err
	}
	l.mu.RLock()
	if l.closed {
		l.mu.RUnlock()
		return ErrClosed
	}
	l.inflight.Add(1)
	l.mu.RUnlock()
	defer l.inflight.Done()
	return l.apply(recs)
}

// listRound is how many entries StreamHeads and Keys read per read
// transaction.
const listRound = 4096

// StreamHeads yields every stream with its version, in the byte order of
// the stream ids (etcd's order too), reading in short transactions that
// resume by id. A damaged entry is yielded as a *CorruptError and ends it.
func (l *Log) StreamHeads() iter.Seq2[StreamHead, error] {
	return func(yield func(StreamHead, error) bool) {
		list(l, bucketStreams, func(tx *bolt.Tx, k, v []byte) (StreamHead, error) {
			if len(v) != 8 {
				return StreamHead{}, corrupt(0, "stream %q: index entry is %d bytes, want 8", k, len(v))
			}
			_, version := indexOf(tx).lookup(string(k))
			return StreamHead{Stream: string(k), Version: version}, nil
		}, yield)
	}
}

// Keys yields every idempotency key with the records it covers, in the
// byte order of the keys, reading as StreamHeads does.
func (l *Log) Keys() iter.Seq2[KeyEntry, error] {
	return func(yield func(KeyEntry, error) bool) {
		list(l, bucketIdempotency, func(_ *bolt.Tx, k, v []byte) (KeyEntry, error) {
			if len(v) != 16 {
				return KeyEntry{}, corrupt(0, "idempotency entry %q is %d bytes, want 16", k, len(v))
			}
			return KeyEntry{Key: string(k), First: binary.BigEndian.Uint64(v), Last: binary.BigEndian.Uint64(v[8:])}, nil
		}, yield)
	}
}

// list yields decode of every entry of the top-level bucket name, in key
// order, listRound entries per read transaction.
func list[T any](l *Log, name []byte, decode func(tx *bolt.Tx, k, v []byte) (T, error), yield func(T, error) bool) {
	var after []byte
	for {
		var page []T
		var bad error
		err := guard("list "+string(name), func() error {
			if l.isClosed() {
				return ErrClosed
			}
			return l.db.View(func(tx *bolt.Tx) error {
				defer release(tx)
				b := tx.Bucket(name)
				if b == nil {
					return nil
				}
				c := b.Cursor()
				k, v := c.First()
				if after != nil {
					k, v = c.Seek(after)
					if k != nil && bytes.Equal(k, after) {
						k, v = c.Next()
					}
				}
				for ; k != nil && len(page) < listRound; k, v = c.Next() {
					e, err := decode(tx, k, v)
					if err != nil {
						bad = err
						return nil
					}
					page = append(page, e)
					after = bytes.Clone(k)
				}
				return nil
			})
		})
		if err != nil {
			yield(*new(T), fmt.Errorf("read log %s: %w", l.path, err))
			return
		}
		for _, e := range page {
			if !yield(e, nil) {
				return
			}
		}
		if bad != nil {
			yield(*new(T), bad)
			return
		}
		if len(page) < listRound {
			return
		}
	}
}
