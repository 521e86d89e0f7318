package eventlog

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"iter"

	bolt "go.etcd.io/bbolt"
)

// Upstream is a log that several processes share (eventlog/etcdlog's Log
// is one). A Log opened with Options.Upstream is its replica: appends go
// upstream, which decides their sequence numbers, expected versions and
// idempotency keys, and a follower goroutine applies the upstream's records
// to the local file, in order, through the same code that writes a local
// append, so that the records, the stream and idempotency indexes and the
// views are what a single-file log would hold. Every read is then local.
type Upstream interface {
	// Append appends a upstream; the Result names upstream sequence numbers.
	Append(ctx context.Context, a Append) (Result, error)
	// Tail yields every record from sequence number from on, in order,
	// then each new one as it is committed, never skipping nor repeating
	// one; it ends when ctx ends or after yielding an error it cannot get
	// past.
	Tail(ctx context.Context, from uint64) iter.Seq2[Record, error]
	// Head reads the last sequence number committed upstream, by any
	// writer, as of the call (a linearizable read).
	Head(ctx context.Context) (uint64, error)
	// ID names the shared log, the same for every process that opens it
	// and different for any other log: a local file replicates one ID.
	ID() string
	// Close releases the upstream; the replica's Close calls it.
	Close() error
}

// ErrUnavailable is wrapped by an Upstream's error when the store behind
// it did not answer in time (unreachable, or without a quorum): the call
// may be retried, with the same idempotency key for an append, whose
// outcome is then unknown. eventlog/etcdlog's ErrUnavailable wraps it.
var ErrUnavailable = errors.New("unavailable")

// ErrReplica reports a write to a replica's file without its upstream: only
// the process that keeps the replica in step with the shared log may write
// it, or the file would hold records the shared log does not.
var ErrReplica = errors.New("the log is a replica of a shared log")

// metaUpstream, in the meta bucket, holds the ID of the upstream a replica
// file replicates; a file without it is a single-process log. The file's
// format byte carries replicaBit with it, which keeps out the builds that
// do not know the key (formatbits.go).
var metaUpstream = []byte("upstream")

// applyBatch is how many upstream records the follower applies in one
// local transaction at most.
const applyBatch = 1024

// replicaOf returns the ID of the upstream the file replicates, nil for a
// single-process log, and whether replicaBit is set. The bit without the
// ID is damage: the two are written together.
func replicaOf(meta *bolt.Bucket) (id []byte, flagged bool, err error) {
	id, flagged = meta.Get(metaUpstream), formatFlag(meta, replicaBit)
	if id == nil && flagged {
		return nil, true, &DamageError{Page: NoPage, Reason: "the format byte marks the file as a replica of a shared log, but the log it replicates is not recorded"}
	}
	return id, flagged, nil
}

// bindUpstream ties the file to the upstream: an empty file becomes its
// replica (the upstream key and replicaBit, in one transaction), a replica
// of it stays one (and gets replicaBit if it was written before the bit),
// anything else is refused. Without an upstream, a writer refuses a
// replica's file.
func (l *Log) bindUpstream(up Upstream) error {
	var bound []byte
	var flagged bool
	if err := l.db.View(func(tx *bolt.Tx) (err error) {
		bound, flagged, err = replicaOf(tx.Bucket(bucketMeta))
		bound = bytes.Clone(bound)
		return err
	}); err != nil {
		return err
	}
	bind := func() error {
		return l.db.Update(func(tx *bolt.Tx) error {
			meta := tx.Bucket(bucketMeta)
			if err := meta.Put(metaUpstream, []byte(up.ID())); err != nil {
				return err
			}
			return setFormatFlag(meta, replicaBit)
		})
	}
	switch {
	case up == nil && bound != nil:
		return fmt.Errorf("%w %q: only the process that follows it may write the file (start the daemon with its --etcd options; read-only use is fine)", ErrReplica, bound)
	case up == nil:
		return nil
	case bound == nil && l.last.Load() != 0:
		return fmt.Errorf("%w: the file holds %d records of its own, so it cannot replicate %q; use a new data directory for the shared log", ErrInvalid, l.last.Load(), up.ID())
	case bound == nil:
		return bind()
	case string(bound) != up.ID():
		return fmt.Errorf("%w: the file replicates %q, not %q: a data directory follows one shared log; use the data directory of that log or a new one", ErrInvalid, bound, up.ID())
	case !flagged:
		l.log.Info("replica file marked so that builds before the mark refuse it", "path", l.path)
		return bind()
	}
	return nil
}

// Upstream returns the ID of the shared log the file replicates, "" for a
// single-process log.
func (t *Tx) Upstream() string {
	return string(t.tx.Bucket(bucketMeta).Get(metaUpstream))
}

// appendUpstream is Append on a replica: the upstream decides, and the
// result is returned once the local file holds its records (a reader then
// sees the append, as with a local one). A conflict is returned once the
// local file holds the stream's version upstream, so that a caller which
// reads the stream again and retries sees what it conflicted with.
func (l *Log) appendUpstream(ctx context.Context, a Append) (Result, error) {
	res, err := l.upstream.Append(ctx, a)
	var ce *ConflictError
	switch {
	case errors.As(err, &ce):
		if werr := l.waitApplied(ctx, func() bool {
			var v uint64
			_ = l.db.View(func(tx *bolt.Tx) error {
				_, v = indexOf(tx).lookup(a.Stream)
				return nil
			})
			return v >= ce.Actual
		}); werr != nil {
			return Result{}, werr
		}
		return Result{}, err
	case err != nil:
		return Result{}, err
	}
	// The append is written: like a local append taken up by the writer,
	// it waits for its outcome whatever ctx does now, since a caller told
	// ctx's error takes the append for unwritten and may append it again.
	// The follower applying the records, stopping or the log closing ends
	// the wait; the last two say the append is committed upstream.
	if err := l.waitApplied(context.WithoutCancel(ctx), func() bool { return l.last.Load() >= res.Last }); err != nil {
		return Result{}, fmt.Errorf("append committed upstream as records %d-%d, not yet applied here: %w", res.First, res.Last, err)
	}
	return res, nil
}

// Sync returns once the local file holds every record committed upstream
// before it was called, by any process: a read after it sees them. It
// costs one read of the upstream's head. On a single-file log it returns
// at once.
func (l *Log) Sync(ctx context.Context) error {
	if l.upstream == nil {
		return nil
	}
	if l.isClosed() {
		return ErrClosed
	}
	head, err := l.upstream.Head(ctx)
	if err != nil {
		return err
	}
	return l.waitApplied(ctx, func() bool { return l.last.Load() >= head })
}

// Replica reports whether the log is a replica of a shared log
// (Options.Upstream).
func (l *Log) Replica() bool { return l.upstream != nil }

// waitApplied blocks until done reports true after a local apply, the
// follower stops (its error) or ctx ends.
func (l *Log) waitApplied(ctx context.Context, done func() bool) error {
	for {
		l.notifyMu.Lock()
		ch := l.notify
		l.notifyMu.Unlock()
		if ch == nil {
			return ErrClosed
		}
		if done() {
			return nil
		}
		if b := l.broken.Load(); b != nil {
			return b.err
		}
		select {
		case <-ch:
		case <-l.quit:
			return ErrClosed
		case <-l.closing:
			return ErrClosed
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// follow applies the upstream's records after the local file's last one,
// in batches, until the log closes. It stops for good at the first record
// it cannot apply (a projector's error, a damaged record, a commit error):
// the record is committed upstream and cannot be dropped, so the replica
// refuses appends with that error (ErrBroken) until it is reopened.
func (l *Log) follow(ctx context.Context) {
	defer close(l.done)
	ctx, cancel := context.WithCancel(ctx)
	recs := make(chan Record, applyBatch)
	tailErr := make(chan error, 1)
	go func() {
		defer close(recs)
		for r, err := range l.upstream.Tail(ctx, l.last.Load()+1) {
			if err != nil {
				tailErr <- err
				return
			}
			select {
			case recs <- r:
			case <-ctx.Done():
				return
			}
		}
	}()
	defer func() {
		for range recs { // the reader has seen ctx end
		}
	}()
	defer cancel() // before the drain above: deferred calls run last first
	batch := make([]Record, 0, applyBatch)
	for {
		var r Record
		var ok bool
		select {
		case r, ok = <-recs:
		case <-ctx.Done():
			return
		}
		if !ok {
			err := ErrClosed
			select {
			case err = <-tailErr:
			default:
			}
			if ctx.Err() == nil {
				l.stop(fmt.Errorf("follow the shared log after record %d: %w", l.last.Load(), err))
			}
			return
		}
		batch = append(batch[:0], r)
	drain:
		for len(batch) < applyBatch {
			select {
			case r, ok := <-recs:
				if !ok {
					break drain
				}
				batch = append(batch, r)
			default:
				break drain
			}
		}
		if err := l.apply(batch); err != nil {
			l.stop(err)
			return
		}
	}
}

// stop makes the replica refuse appends with err and wakes their waiters.
func (l *Log) stop(err error) {
	berr := fmt.Errorf("%w: the replica stopped applying the shared log: %w (the record is committed upstream; fix the cause and reopen)", ErrBroken, err)
	l.broken.CompareAndSwap(nil, &errorBox{berr})
	l.log.Error("replica stopped applying the shared log", "path", l.path, "err", err)
	l.broadcast()
}

// apply writes upstream records, in one local transaction, through write:
// the records of one append (adjacent, one stream, one idempotency key)
// form one request, which must land under the sequence numbers upstream
// gave them.
func (l *Log) apply(recs []Record) error {
	var rs []*request
	for i := 0; i < len(recs); {
		j := i + 1
		for j < len(recs) && sameAppend(recs[j-1], recs[j]) {
			j++
		}
		group := recs[i:j]
		r := &request{app: Append{Stream: group[0].Stream, Key: group[0].Key}, upstream: group[0].Seq}
		for _, rec := range group {
			r.app.Entries = append(r.app.Entries, Entry{Kind: rec.Kind, Time: rec.Time, Payload: rec.Payload})
		}
		if err := validate(r.app); err != nil {
			return fmt.Errorf("record %d: %w", group[0].Seq, err)
		}
		rs = append(rs, r)
		i = j
	}
	last, bad, err := l.write(rs)
	if bad >= 0 {
		return fmt.Errorf("record %d: %w", rs[bad].upstream, err)
	}
	if err != nil {
		return err
	}
	l.last.Store(last)
	l.broadcast()
	return nil
}
