package eventlog

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"time"

	bolt "go.etcd.io/bbolt"
)

// maxProblems bounds how many problems Verify reports; past it, it says how
// many more it found.
const maxProblems = 100

// Verify reads the log in rounds: each round is a read transaction of at
// most verifyRound entries or verifyRoundTime, and the next resumes after
// the last key the previous one read. bbolt can neither reuse the pages a
// commit frees nor remap the file to grow it while a read transaction is
// open, so one transaction over the whole log would hold a concurrent
// writer's growth for as long as Verify runs and make the file grow; a
// round holds it for a few milliseconds.
var (
	verifyRound     = 4096
	verifyRoundTime = 5 * time.Millisecond
)

// Test hooks, nil outside tests: verifyVisit sees every entry a round reads
// (bucket name and key), verifyBetweenRounds runs between two rounds, when
// Verify holds no transaction.
var (
	verifyVisit         func(bucket string, k []byte)
	verifyBetweenRounds func()
)

// Verify checks the log: every record's checksum and format (its payload's
// chunks included), that sequence numbers run from 1 without gaps, that the
// chunks bucket holds exactly the chunks the records name, that the stream
// index holds exactly one entry per record in version order, that
// idempotency entries cover exactly the records carrying their key, that no
// projection checkpoint is ahead of the log, and the file's pages (see
// checkStructure). It returns nil, or the problems joined; record problems
// are *CorruptError values naming the sequence.
//
// It reads in short rounds (verifyRound), so it neither stalls a
// concurrent writer nor makes the file grow. On a log appended to
// meanwhile it is exact for the records up to the last one when it starts
// (last): records are immutable and appended in order, and so are the
// index entries that name them, so each of them is read exactly once,
// whatever was appended around it. Entries naming records past last are
// skipped where the bucket's order puts them apart (records, chunks, new
// streams, new versions of a stream); stream ids and idempotency keys,
// ordered by name, are read wherever they land ahead of a check and checked
// in their round (they must name records that exist), but left out of the
// counts that tie the indexes to the records. A check ends at its bucket's
// end, so only a writer adding ids or keys ahead of it faster than it
// reads (a round of 4,096 in 5 ms) could keep it going.
func (l *Log) Verify(ctx context.Context) error {
	if l.isClosed() {
		return ErrClosed
	}
	v := &verifier{l: l, ctx: ctx}
	for _, err := range l.checkStructure() {
		v.report(err)
	}
	err := guard("verify", func() error {
		if err := l.db.View(func(tx *bolt.Tx) error {
			v.last = (&Tx{tx: tx}).Last()
			return nil
		}); err != nil {
			return err
		}
		for _, pass := range []func() error{v.records, v.chunks, v.versions, v.streams, v.idempotency, v.checkpoints} {
			if err := pass(); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("verify %s: %w", l.path, err)
	}
	return v.result()
}

// verifier holds what Verify carries from one round to the next: a few
// numbers per check, never a set that grows with the log.
type verifier struct {
	l        *Log
	ctx      context.Context
	last     uint64 // the last record when Verify started
	problems []error
	extra    int

	counted, keyed uint64 // records up to last, and those carrying a key
}

func (v *verifier) report(err error) {
	if len(v.problems) < maxProblems {
		v.problems = append(v.problems, err)
	} else {
		v.extra++
	}
}

func (v *verifier) result() error {
	problems := v.problems
	if v.extra > 0 {
		problems = append(problems, fmt.Errorf("%w: %d more problems not shown", ErrCorrupt, v.extra))
	}
	return errors.Join(problems...)
}

// scan visits the entries of the named top-level bucket in key order, in
// rounds (see verifyRound): each round is a read transaction that resumes
// after the last key the previous one visited. Keys are never deleted from
// the log's buckets, so each key present when scan starts is visited
// exactly once. visit returns nil to go on with the next key, skip to go
// on from the first key at or after the one it returns, or stop.
func (v *verifier) scan(name []byte, visit func(tx *bolt.Tx, b *bolt.Bucket, k, val []byte) (skip []byte)) error {
	var after, from []byte // the last key visited, or where to go on from; copied out of the round
	for round := 0; ; round++ {
		if err := v.ctx.Err(); err != nil {
			return err
		}
		if round > 0 && verifyBetweenRounds != nil {
			verifyBetweenRounds()
		}
		done := true
		err := v.l.db.View(func(tx *bolt.Tx) error {
			defer release(tx)
			b := tx.Bucket(name)
			if b == nil {
				return nil
			}
			c := b.Cursor()
			var k, val []byte
			switch {
			case from != nil:
				k, val = c.Seek(from)
			case after == nil:
				k, val = c.First()
			default:
				if k, val = c.Seek(after); bytes.Equal(k, after) {
					k, val = c.Next()
				}
			}
			start := time.Now()
			for n := 0; k != nil; n++ {
				if n == verifyRound || (n%64 == 0 && time.Since(start) > verifyRoundTime) {
					done = false
					return nil
				}
				after, from = append(after[:0], k...), nil
				if verifyVisit != nil {
					verifyVisit(string(name), k)
				}
				switch skip := visit(tx, b, k, val); {
				case skip == nil:
					k, val = c.Next()
				case &skip[0] == &stop[0]:
					return nil
				default:
					from = append(from[:0], skip...)
					k, val = c.Seek(skip)
				}
			}
			return nil
		})
		if err != nil || done {
			return err
		}
	}
}

// stop is what a scan's visit returns to end it.
var stop = []byte("stop")

// records checks each record up to last in sequence order, its chunks
// included, and counts the records and those carrying an idempotency key.
func (v *verifier) records() error {
	want := uint64(1)
	return v.scan(bucketEvents, func(tx *bolt.Tx, _ *bolt.Bucket, k, val []byte) []byte {
		seq, err := seqKey(k)
		if err != nil {
			v.report(err)
			return nil
		}
		if seq > v.last {
			return stop // appended after Verify started
		}
		if seq != want {
			v.report(corrupt(want, "missing: the log jumps from %d to %d", want-1, seq))
		}
		want = seq + 1
		v.counted++
		r, chunked, err := decodeHead(seq, val)
		if err == nil && chunked.length > 0 {
			_, err = chunked.assemble(seq, txChunks(tx))
		}
		if err != nil {
			v.report(err)
			return nil
		}
		if r.Key != "" {
			v.keyed++
		}
		return nil
	})
}

// chunks checks that every record's bucket of chunks belongs to a record
// that names exactly as many chunks (records checks that those chunks are
// there and sound). A record and its chunks are written in one commit, so
// this holds in every round, whatever was appended since Verify started.
func (v *verifier) chunks() error {
	return v.scan(bucketChunks, func(tx *bolt.Tx, all *bolt.Bucket, k, _ []byte) []byte {
		b := all.Bucket(k)
		if len(k) != 8 || b == nil {
			v.report(fmt.Errorf("%w: the chunks bucket holds %x, not a record's bucket of chunks", ErrCorrupt, clip(k)))
			return nil
		}
		seq := binary.BigEndian.Uint64(k)
		if seq > v.last {
			return stop // the records appended since Verify started
		}
		named := 0
		if _, chunked, err := decodeHead(seq, tx.Bucket(bucketEvents).Get(k)); err == nil && chunked.length > 0 {
			named = chunked.chunks()
		}
		if n := b.Stats().KeyN; n != named {
			v.report(corrupt(seq, "%d payload chunks stored, the record names %d", n, named))
		}
		return nil
	})
}

// versions checks the stream index against the records. Each versions
// entry must point at a record of its stream, versions must run from 1 in
// sequence order, a stream's number must be the sequence of its first
// record (whose stream names it), and the index must hold as many entries
// naming records up to last as there are such records: together with the
// checks of streams, these make the index a bijection between (stream,
// version) and records.
func (v *verifier) versions() error {
	var (
		number, version, prevSeq, entries uint64
		stream                            string
		named                             bool
	)
	err := v.scan(bucketVersions, func(tx *bolt.Tx, _ *bolt.Bucket, k, val []byte) []byte {
		if len(k) != 16 || len(val) != 8 {
			v.report(fmt.Errorf("%w: malformed stream index entry %x", ErrCorrupt, clip(k)))
			return nil
		}
		n, ver, seq := binary.BigEndian.Uint64(k), binary.BigEndian.Uint64(k[8:]), binary.BigEndian.Uint64(val)
		switch {
		case n > v.last:
			return stop // streams started since Verify started
		case seq > v.last && n == number && seq > prevSeq:
			return versionKey(n+1, 0) // this stream's records since Verify started
		}
		events := tx.Bucket(bucketEvents)
		if n != number {
			number, version, prevSeq = n, 0, 0
			// A stream's number is its first record's sequence, and that
			// record names the stream.
			stream, named = "", false
			if first, _, err := decodeHead(n, events.Get(u64(n))); err == nil {
				stream = first.Stream
				named = bytes.Equal(tx.Bucket(bucketStreams).Get([]byte(stream)), u64(n))
			}
			if !named {
				v.report(corrupt(n, "stream number %d has index entries but no stream id", n))
			}
			if seq != n {
				v.report(corrupt(seq, "stream %q (number %d) starts at record %d, not at its number", stream, n, seq))
			}
		}
		if ver != version+1 {
			v.report(corrupt(seq, "stream %q index skips from version %d to %d", stream, version, ver))
		}
		if seq <= prevSeq {
			v.report(corrupt(seq, "stream %q version %d is not after version %d (record %d)", stream, ver, version, prevSeq))
		}
		version, prevSeq = ver, seq
		entries++
		raw := events.Get(val)
		if raw == nil {
			v.report(corrupt(seq, "stream %q version %d points at a record that does not exist", stream, ver))
			return nil
		}
		r, _, err := decodeHead(seq, raw)
		if err != nil {
			return nil // reported by records
		}
		if named && r.Stream != stream {
			v.report(corrupt(seq, "stream %q version %d points at a record of stream %q", stream, ver, r.Stream))
		}
		return nil
	})
	if err == nil && entries != v.counted {
		v.report(fmt.Errorf("%w: the log holds %d records but the stream index %d entries", ErrCorrupt, v.counted, entries))
	}
	return err
}

// streams checks each stream id's number: the stream index must hold
// entries under it, and it must be the sequence of a record of that stream
// (versions checks that this record is the stream's version 1). Two ids
// sharing a number fail it, since one record names one stream.
func (v *verifier) streams() error {
	return v.scan(bucketStreams, func(tx *bolt.Tx, _ *bolt.Bucket, k, val []byte) []byte {
		if len(val) != 8 {
			v.report(fmt.Errorf("%w: stream %q has a malformed stream number %x", ErrCorrupt, clip(k), clip(val)))
			return nil
		}
		n := binary.BigEndian.Uint64(val)
		if ik, _ := tx.Bucket(bucketVersions).Cursor().Seek(versionKey(n, 0)); len(ik) != 16 || !bytes.Equal(ik[:8], val) {
			v.report(corrupt(n, "stream %q has a number but no index entries", clip(k)))
			return nil
		}
		if first, _, err := decodeHead(n, tx.Bucket(bucketEvents).Get(val)); err == nil && first.Stream != string(k) {
			v.report(corrupt(n, "stream %q has number %d, the first record of stream %q", clip(k), n, first.Stream))
		}
		return nil
	})
}

// idempotency checks that each key's range lies in the log and that every
// record in it carries the key, and that the keyed records up to last are
// all covered. A key's records are appended in one commit, so a range
// either ends by last or starts after it.
func (v *verifier) idempotency() error {
	var covered uint64
	err := v.scan(bucketIdempotency, func(tx *bolt.Tx, _ *bolt.Bucket, k, val []byte) []byte {
		if len(val) != 16 {
			v.report(fmt.Errorf("%w: idempotency entry %q is %d bytes, want 16", ErrCorrupt, clip(k), len(val)))
			return nil
		}
		first, end := binary.BigEndian.Uint64(val[:8]), binary.BigEndian.Uint64(val[8:])
		if now := (&Tx{tx: tx}).Last(); first == 0 || first > end || end > now || (first <= v.last && end > v.last) {
			v.report(corrupt(first, "idempotency key %q covers records %d..%d outside the log (last %d)", clip(k), first, end, max(now, v.last)))
			return nil
		}
		events := tx.Bucket(bucketEvents)
		for seq := first; seq <= end; seq++ {
			r, _, err := decodeHead(seq, events.Get(u64(seq)))
			if err == nil && r.Key != string(k) {
				v.report(corrupt(seq, "idempotency key %q covers a record written with key %q", clip(k), r.Key))
			}
			if seq <= v.last {
				covered++
			}
		}
		return nil
	})
	if err == nil && covered != v.keyed {
		v.report(fmt.Errorf("%w: %d records carry an idempotency key but the index covers %d", ErrCorrupt, v.keyed, covered))
	}
	return err
}

// checkpoints checks that no projection's checkpoint is past the last
// record of the same round.
func (v *verifier) checkpoints() error {
	return v.scan(bucketCheckpoints, func(tx *bolt.Tx, _ *bolt.Bucket, k, val []byte) []byte {
		if last := (&Tx{tx: tx}).Last(); len(val) != 8 || binary.BigEndian.Uint64(val) > last {
			v.report(fmt.Errorf("%w: projection %q checkpoint %x is past the last record %d", ErrCorrupt, clip(k), clip(val), last))
		}
		return nil
	})
}

// checkStructure checks the file's pages (see checkFile).
//
// On a writable log it first walks the pages of the newest commit without
// holding a transaction (checkLive): a commit meanwhile may reuse pages
// that commit had, so the walk may then report damage that is not there,
// but never misses damage to a page that stayed in use throughout (bbolt
// never writes a page in use). So its answer stands when it finds nothing,
// or when no commit happened during it; otherwise the walk runs again
// inside a read transaction, which keeps every page of that commit where it
// is, and its answer stands. A writer is held by that transaction only on
// a file that looks damaged.
//
// A read-only log holds a transaction for the walk, and then runs bbolt's
// own check (Tx.Check) too: no writer can open the file while it is open
// read-only, so nobody waits for it, and Tx.Check reads the freelist, which
// a commit would change under it.
func (l *Log) checkStructure() []error {
	if !l.readOnly {
		problems, changed := checkLive(l.path)
		if len(problems) == 0 || !changed {
			return problems
		}
	}
	var problems []error
	err := guard("check", func() error {
		return l.db.View(func(tx *bolt.Tx) error {
			txid := uint64(tx.ID())
			if l.readOnly {
				txid = 0 // nobody writes: check both meta pages
			}
			problems = checkFile(l.path, txid)
			if len(problems) == 0 && l.readOnly {
				// Every page is sound, so bbolt's own check is safe to run.
				// It reads every page in a goroutine of its own, with no
				// round to drop the pages it mapped at (mapped.go): they
				// are dropped as it goes, from here.
				errs := tx.Check()
				tick := time.NewTicker(time.Millisecond)
				defer tick.Stop()
				for done := false; !done; {
					select {
					case err, ok := <-errs:
						if done = !ok; ok {
							problems = append(problems, &DamageError{Page: NoPage, Reason: "bbolt check: " + err.Error()})
						}
					case <-tick.C:
						release(tx)
					}
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

// checkLive walks the pages of the file's newest commit without a
// transaction, and says whether a commit happened during the walk.
func checkLive(path string) (problems []error, changed bool) {
	f, err := os.Open(path)
	if err != nil {
		return []error{err}, false
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return []error{err}, false
	}
	pf, err := readLayout(f, fi.Size())
	if err != nil {
		return []error{err}, true
	}
	if pf.cur.err != nil {
		return []error{pf.cur.err}, true
	}
	txid := pf.cur.txid
	defer pf.mapFile(f, fi.Size())()
	if err := guard("check", func() error {
		problems = pf.checkAs(txid)
		return nil
	}); err != nil {
		problems = append(problems, err)
	}
	after, err := readLayout(f, fi.Size())
	return problems, err != nil || after.cur.err != nil || after.cur.txid != txid
}
