package eventlog

import (
	"encoding/binary"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// A Projector keeps views (buckets reached through Tx.Bucket) in step with
// the log. The log calls Project inside the write transaction that stores
// recs, so views and records commit together or not at all, and records a
// checkpoint (the last sequence projected) for the projector in the same
// transaction.
//
// recs are in sequence order; they hold one append's records when called
// for an append, and may span many appends and streams when a projector
// catches up after Open.
//
// Project must be deterministic and must not do I/O outside the
// transaction: it is also how a view is rebuilt from the log. An error drops
// the append that produced recs (the appender receives the error); other
// appends of the same commit are unaffected.
//
// Views are bbolt buckets, and that is the contract: Tx.Bucket hands out
// *bbolt.Bucket, so a projector uses bbolt's own API (cursors, nested
// keys, fill percent) instead of a narrower copy of it that would have to
// grow every time a view needs one more of its operations.
type Projector interface {
	Name() string
	Project(tx *Tx, recs []Record) error
}

func (l *Log) project(tx *Tx, recs []Record) error {
	if len(l.projectors) == 0 {
		return nil
	}
	cps := tx.tx.Bucket(bucketCheckpoints)
	last := u64(recs[len(recs)-1].Seq)
	for _, p := range l.projectors {
		if err := p.Project(tx, recs); err != nil {
			return fmt.Errorf("projection %s: %w", p.Name(), err)
		}
		if err := cps.Put([]byte(p.Name()), last); err != nil {
			return err
		}
	}
	return nil
}

// Checkpoint returns the last sequence number projector name has seen.
func (t *Tx) Checkpoint(name string) uint64 {
	cps := t.tx.Bucket(bucketCheckpoints)
	if cps == nil {
		return 0 // a read-only open of a file whose writer will create it
	}
	v := cps.Get([]byte(name))
	if len(v) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(v)
}

// catchUp feeds each projector the records after its checkpoint. On a log
// whose projectors kept up, which is every log this package wrote, it reads
// one key per projector and nothing else: opening never replays history
// unless a projector is new or was reset.
func (l *Log) catchUp() error {
	for _, p := range l.projectors {
		var from uint64
		if err := l.db.View(func(tx *bolt.Tx) error {
			from = (&Tx{tx: tx}).Checkpoint(p.Name()) + 1
			return nil
		}); err != nil {
			return err
		}
		if from > l.Last() {
			continue
		}
		l.log.Info("projection behind the log; catching up", "projection", p.Name(), "from", from, "last", l.Last())
		if err := l.replay(p, from); err != nil {
			return fmt.Errorf("catch up projection %s: %w", p.Name(), err)
		}
	}
	return nil
}

// replay applies records from sequence from onward to p, in chunks of one
// write transaction each.
func (l *Log) replay(p Projector, from uint64) error {
	buf := make([]Record, 0, scanChunk)
	for from <= l.Last() {
		err := l.db.Update(func(tx *bolt.Tx) error {
			var err error
			buf, _, err = readChunk(tx.Bucket(bucketEvents), from, buf[:0])
			if err != nil {
				return err
			}
			if len(buf) == 0 {
				return nil
			}
			if err := p.Project(&Tx{tx: tx}, buf); err != nil {
				return err
			}
			release(tx)
			return tx.Bucket(bucketCheckpoints).Put([]byte(p.Name()), u64(buf[len(buf)-1].Seq))
		})
		if err != nil {
			return err
		}
		if len(buf) == 0 {
			return nil
		}
		from = buf[len(buf)-1].Seq + 1
	}
	return nil
}
