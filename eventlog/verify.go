package eventlog

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// maxProblems bounds how many problems Verify reports; past it, it says how
// many more it found.
const maxProblems = 100

// Verify checks the whole log in one consistent snapshot: every record's
// checksum and format, that sequence numbers run from 1 without gaps, that
// the stream index holds exactly one entry per record in version order, that
// idempotency entries cover records carrying their key, and that no
// projection checkpoint is ahead of the log. It returns nil, or the problems
// joined; record problems are *CorruptError values naming the sequence.
func (l *Log) Verify(ctx context.Context) error {
	if l.isClosed() {
		return ErrClosed
	}
	var problems []error
	extra := 0
	report := func(err error) {
		if len(problems) < maxProblems {
			problems = append(problems, err)
		} else {
			extra++
		}
	}
	for _, err := range l.checkStructure() {
		report(err)
	}
	err := guard("verify", func() error {
		return l.db.View(func(tx *bolt.Tx) error {
			keyed, err := verifyRecords(ctx, tx, report)
			if err != nil {
				return err
			}
			last := (&Tx{tx: tx}).Last()
			if err := verifyStreams(ctx, tx, report); err != nil {
				return err
			}
			verifyIdempotency(tx, last, keyed, report)
			cps := tx.Bucket(bucketCheckpoints)
			if cps == nil {
				return nil
			}
			_ = cps.ForEach(func(k, v []byte) error {
				if len(v) != 8 || binary.BigEndian.Uint64(v) > last {
					report(fmt.Errorf("%w: projection %q checkpoint %x is past the last record %d", ErrCorrupt, clip(k), clip(v), last))
				}
				return nil
			})
			return nil
		})
	})
	if err != nil {
		return fmt.Errorf("verify %s: %w", l.path, err)
	}
	if extra > 0 {
		problems = append(problems, fmt.Errorf("%w: %d more problems not shown", ErrCorrupt, extra))
	}
	return errors.Join(problems...)
}

// verifyRecords checks every record, its payload's chunks included, and
// that the chunks bucket holds no chunk no record names. It returns how
// many records carry an idempotency key.
func verifyRecords(ctx context.Context, tx *bolt.Tx, report func(error)) (keyed int, err error) {
	c := tx.Bucket(bucketEvents).Cursor()
	chunks, named := txChunks(tx), map[uint64]int{}
	want := uint64(1)
	for k, v := c.First(); k != nil; k, v = c.Next() {
		if want%4096 == 0 && ctx.Err() != nil {
			return 0, ctx.Err()
		}
		seq, err := seqKey(k)
		if err != nil {
			report(err)
			continue
		}
		if seq != want {
			report(corrupt(want, "missing: the log jumps from %d to %d", want-1, seq))
		}
		want = seq + 1
		r, chunked, err := decodeHead(seq, v)
		if err == nil && chunked.length > 0 {
			named[seq] = chunked.chunks()
			_, err = chunked.assemble(seq, chunks)
		}
		if err != nil {
			report(err)
			continue
		}
		if r.Key != "" {
			keyed++
		}
	}
	if all := tx.Bucket(bucketChunks); all != nil {
		_ = all.ForEach(func(k, v []byte) error {
			b := all.Bucket(k)
			if len(k) != 8 || b == nil {
				report(fmt.Errorf("%w: the chunks bucket holds %x, not a record's bucket of chunks", ErrCorrupt, clip(k)))
				return nil
			}
			seq := binary.BigEndian.Uint64(k)
			if n := b.Stats().KeyN; n != named[seq] {
				report(corrupt(seq, "%d payload chunks stored, the record names %d", n, named[seq]))
			}
			return nil
		})
	}
	return keyed, nil
}

// verifyStreams checks the stream index against the records. Each
// versions entry must point at a record of its stream, versions must run
// from 1 in sequence order, a stream's number must be the sequence of its
// first record, and there must be exactly one entry per record: together
// these make the index a bijection between (stream, version) and records.
func verifyStreams(ctx context.Context, tx *bolt.Tx, report func(error)) error {
	events := tx.Bucket(bucketEvents)
	ix := indexOf(tx)
	// number → stream id, from the names bucket.
	names := map[uint64]string{}
	_ = ix.names.ForEach(func(k, v []byte) error {
		if len(v) != 8 {
			report(fmt.Errorf("%w: stream %q has a malformed stream number %x", ErrCorrupt, clip(k), clip(v)))
			return nil
		}
		n := binary.BigEndian.Uint64(v)
		if other, dup := names[n]; dup {
			report(corrupt(n, "streams %q and %q share stream number %d", other, k, n))
		}
		names[n] = string(k)
		return nil
	})
	var (
		number, version, prevSeq, entries uint64
		seen                              = map[uint64]bool{}
	)
	c := ix.versions.Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		entries++
		if entries%4096 == 0 && ctx.Err() != nil {
			return ctx.Err()
		}
		if len(k) != 16 || len(v) != 8 {
			report(fmt.Errorf("%w: malformed stream index entry %x", ErrCorrupt, clip(k)))
			continue
		}
		n, ver, seq := binary.BigEndian.Uint64(k), binary.BigEndian.Uint64(k[8:]), binary.BigEndian.Uint64(v)
		stream, named := names[n]
		if n != number {
			number, version, prevSeq = n, 0, 0
			seen[n] = true
			if !named {
				report(corrupt(n, "stream number %d has index entries but no stream id", n))
			}
			if seq != n {
				report(corrupt(seq, "stream %q (number %d) starts at record %d, not at its number", stream, n, seq))
			}
		}
		if ver != version+1 {
			report(corrupt(seq, "stream %q index skips from version %d to %d", stream, version, ver))
		}
		if seq <= prevSeq {
			report(corrupt(seq, "stream %q version %d is not after version %d (record %d)", stream, ver, version, prevSeq))
		}
		version, prevSeq = ver, seq
		raw := events.Get(v)
		if raw == nil {
			report(corrupt(seq, "stream %q version %d points at a record that does not exist", stream, ver))
			continue
		}
		r, _, err := decodeHead(seq, raw)
		if err != nil {
			continue // reported by verifyRecords
		}
		if named && r.Stream != stream {
			report(corrupt(seq, "stream %q version %d points at a record of stream %q", stream, ver, r.Stream))
		}
	}
	for n, stream := range names {
		if !seen[n] {
			report(corrupt(n, "stream %q has a number but no index entries", stream))
		}
	}
	if n := uint64(events.Stats().KeyN); n != entries {
		report(fmt.Errorf("%w: the log holds %d records but the stream index %d entries", ErrCorrupt, n, entries))
	}
	return nil
}

// verifyIdempotency checks that each key's range lies in the log and that
// every record in it carries the key, and that keyed records are all covered.
func verifyIdempotency(tx *bolt.Tx, last uint64, keyed int, report func(error)) {
	events := tx.Bucket(bucketEvents)
	covered := 0
	_ = tx.Bucket(bucketIdempotency).ForEach(func(k, v []byte) error {
		if len(v) != 16 {
			report(fmt.Errorf("%w: idempotency entry %q is %d bytes, want 16", ErrCorrupt, k, len(v)))
			return nil
		}
		first, end := binary.BigEndian.Uint64(v[:8]), binary.BigEndian.Uint64(v[8:])
		if first == 0 || first > end || end > last {
			report(corrupt(first, "idempotency key %q covers records %d..%d outside the log (last %d)", k, first, end, last))
			return nil
		}
		for seq := first; seq <= end; seq++ {
			r, _, err := decodeHead(seq, events.Get(u64(seq)))
			if err == nil && r.Key != string(k) {
				report(corrupt(seq, "idempotency key %q covers a record written with key %q", k, r.Key))
			}
			covered++
		}
		return nil
	})
	if covered != keyed {
		report(fmt.Errorf("%w: %d records carry an idempotency key but the index covers %d", ErrCorrupt, keyed, covered))
	}
}

// checkStructure checks the file's pages (see checkFile) as of a read
// transaction, so that a writer committing meanwhile cannot make sound
// pages look damaged.
func (l *Log) checkStructure() []error {
	var problems []error
	err := guard("check", func() error {
		return l.db.View(func(tx *bolt.Tx) error {
			txid := uint64(tx.ID())
			if l.readOnly {
				txid = 0 // nobody writes: check both meta pages
			}
			problems = checkFile(l.path, txid)
			if len(problems) == 0 && l.readOnly {
				// Every page is sound, so bbolt's own check is safe to run;
				// on a read transaction only when no writer commits
				// meanwhile (it reads the freelist a commit changes), and
				// running it in a write transaction would stall writers.
				for err := range tx.Check() {
					problems = append(problems, &DamageError{Page: NoPage, Reason: "bbolt check: " + err.Error()})
				}
			}
			return nil
		})
	})
	if err != nil {
		problems = append(problems, err)
	}
	return problems
}
