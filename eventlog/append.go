package eventlog

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"runtime"
	"runtime/debug"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Entry is one record to append; the log assigns its sequence number. The
// log writes a large Payload from the caller's memory (chunks.go), which
// must not change until Append returns.
type Entry struct {
	Kind    uint16
	Time    time.Time
	Payload []byte
}

// Append is one atomic append to a single stream: all of Entries are
// committed together or not at all.
type Append struct {
	Stream  string
	Entries []Entry
	// Key, if not empty, makes the append idempotent: a later append with
	// the same key (to any stream) writes nothing and returns the result of
	// the first one, with Duplicate set.
	Key string
	// If CheckVersion is set the stream must hold exactly Version records
	// (0: the stream must not exist yet), or the append fails with a
	// *ConflictError and writes nothing.
	CheckVersion bool
	Version      uint64
	// Ready, if not nil, is work outside the log that the records claim
	// done (a file they name written durably), under way while the
	// append waits for its commit. The writer calls it, after the
	// records are in the transaction and before the commit, and commits
	// the append only once it returns nil; an error drops the append
	// (Append returns that error, nothing of it is written) and the rest
	// of the batch commits without it. It may be called more than once
	// and must then return the same.
	Ready func() error
}

// Result describes a committed append.
type Result struct {
	First, Last uint64 // sequence numbers of the records written (or written before, if Duplicate)
	Version     uint64 // stream version after the append (for a Duplicate: the stream's version now)
	Duplicate   bool   // the idempotency key was seen before; nothing was written
}

// request states, moved with compare-and-swap so that an appender whose
// context ends and the writer never both own a request.
const (
	pending int32 = iota
	claimed
	abandoned
)

type request struct {
	app Append
	// upstream, when not 0, is the sequence number the shared log gave
	// the append's first record: a replica applies it only there.
	upstream uint64
	// sums, if not nil, holds the chunks' checksums of each entry's
	// payload, where the appender computed them (chunkSums).
	sums  [][]byte
	state atomic.Int32
	res   Result
	err   error
	done  chan struct{}
}

// Append durably appends a.Entries to a.Stream. It returns only after the
// commit holding them is on disk; concurrent calls share commits (group
// commit). If ctx ends before the writer picks the append up, nothing is
// written and ctx's error is returned; once picked up, Append waits for the
// commit's outcome. On a replica (Options.Upstream) the upstream decides
// and commits the append, and Append returns once the local file holds it
// too.
func (l *Log) Append(ctx context.Context, a Append) (Result, error) {
	if err := validate(a); err != nil {
		return Result{}, err
	}
	if l.readOnly {
		return Result{}, ErrReadOnly
	}
	if b := l.broken.Load(); b != nil {
		return Result{}, b.err
	}
	if err := ctx.Err(); err != nil {
		return Result{}, err
	}
	l.mu.RLock()
	if l.closed {
		l.mu.RUnlock()
		return Result{}, ErrClosed
	}
	l.inflight.Add(1)
	l.mu.RUnlock()
	defer l.inflight.Done()
	if l.upstream != nil {
		if a.Ready != nil {
			if err := a.Ready(); err != nil {
				return Result{}, err
			}
		}
		return l.appendUpstream(ctx, a)
	}

	r := &request{app: a, done: make(chan struct{})}
	// A large payload's checksums, computed here rather than by the
	// writer, which every append waits for.
	for i, e := range a.Entries {
		if sums := chunkSums(e.Payload); sums != nil {
			if r.sums == nil {
				r.sums = make([][]byte, len(a.Entries))
			}
			r.sums[i] = sums
		}
	}
	select {
	case l.reqs <- r:
	case <-ctx.Done():
		return Result{}, ctx.Err()
	}
	select {
	case <-r.done:
		return r.res, r.err
	case <-ctx.Done():
		if r.state.CompareAndSwap(pending, abandoned) {
			return Result{}, ctx.Err()
		}
		<-r.done
		return r.res, r.err
	}
}

func validate(a Append) error {
	if err := validStream(a.Stream); err != nil {
		return err
	}
	if len(a.Key) > MaxKeyLen {
		return fmt.Errorf("%w: idempotency key is %d bytes, the limit is %d", ErrInvalid, len(a.Key), MaxKeyLen)
	}
	if len(a.Entries) == 0 || len(a.Entries) > MaxEntries {
		return fmt.Errorf("%w: an append holds 1 to %d entries, got %d", ErrInvalid, MaxEntries, len(a.Entries))
	}
	for i, e := range a.Entries {
		if len(e.Payload) > MaxPayloadLen {
			return fmt.Errorf("%w: entry %d payload is %d bytes, the limit is %d", ErrInvalid, i, len(e.Payload), MaxPayloadLen)
		}
		if e.Time.IsZero() {
			return fmt.Errorf("%w: entry %d has no time", ErrInvalid, i)
		}
	}
	return nil
}

// writer is the only goroutine that writes to the file. It takes every
// request queued while the previous commit ran and commits them together.
func (l *Log) writer() {
	defer close(l.done)
	// A fault on a damaged page becomes a panic that write recovers, not
	// the end of the process.
	debug.SetPanicOnFault(true)
	batch := make([]*request, 0, l.maxBatch)
	for {
		select {
		case r := <-l.reqs:
			batch = append(batch[:0], r)
		case <-l.quit:
			return
		}
		// Appenders woken by the last commit are about to queue again; let
		// them run before draining, or the first one commits alone and the
		// rest wait a whole commit for the next (a convoy of 1, n-1, 1, ...).
		runtime.Gosched()
	drain:
		for len(batch) < l.maxBatch {
			select {
			case r := <-l.reqs:
				batch = append(batch, r)
			default:
				break drain
			}
		}
		live := batch[:0]
		for _, r := range batch {
			if r.state.CompareAndSwap(pending, claimed) {
				live = append(live, r)
			}
		}
		l.commit(live)
		clear(batch)
	}
}

// commit writes live in one transaction. A projector failing on one append,
// or its Ready, drops that append (it gets the error) and the rest are
// written in a fresh transaction; their checks run again because the
// dropped append may have been what they conflicted with.
func (l *Log) commit(live []*request) {
	for len(live) > 0 {
		if b := l.broken.Load(); b != nil {
			finish(live, b.err)
			return
		}
		last, bad, err := l.write(live)
		if bad >= 0 {
			live[bad].res, live[bad].err = Result{}, err
			close(live[bad].done)
			live = append(live[:bad], live[bad+1:]...)
			continue
		}
		if err != nil {
			finish(live, err)
			return
		}
		l.last.Store(last)
		l.broadcast()
		for _, r := range live {
			close(r.done)
		}
		return
	}
}

func finish(rs []*request, err error) {
	for _, r := range rs {
		r.res, r.err = Result{}, err
		close(r.done)
	}
}

// write runs one transaction over rs. It returns the index of an append a
// projector or its Ready refused (and that error), or an error for the
// whole batch.
func (l *Log) write(rs []*request) (last uint64, bad int, err error) {
	tx, err := l.db.Begin(true)
	if err != nil {
		return 0, -1, fmt.Errorf("begin commit: %w", err)
	}
	committing := false
	defer func() {
		r := recover()
		if r == nil {
			return
		}
		// bbolt met a damaged page. Before the commit nothing reached the
		// disk; during it, who knows: either way refuse further writes.
		// Roll back even a half-done commit: it releases bbolt's writer
		// lock, which Close needs.
		func() {
			defer func() { _ = recover() }()
			_ = tx.Rollback()
		}()
		where := "append"
		if committing {
			where = "commit"
		}
		derr := &DamageError{Page: NoPage, Reason: fmt.Sprintf("%s: bbolt failed on a damaged page: %v", where, r)}
		berr := fmt.Errorf("%w: %w (reopen the log; if it is damaged, recover it)", ErrBroken, derr)
		l.broken.Store(&errorBox{berr})
		l.log.Error("bbolt failed on a damaged page; log refuses writes", "path", l.path, "panic", fmt.Sprint(r))
		last, bad, err = 0, -1, berr
	}()
	w := newWriteTx(tx)
	last = l.last.Load()
	var ready []int // the appends written whose Ready the commit waits for
	for i, r := range rs {
		r.res, r.err = Result{}, nil
		recs, err := w.apply(r, last)
		if err != nil {
			if errors.Is(err, ErrConflict) {
				r.res, r.err = Result{}, err
				continue
			}
			tx.Rollback()
			return 0, -1, fmt.Errorf("append to %q: %w", r.app.Stream, err)
		}
		if len(recs) == 0 {
			continue // duplicate
		}
		last = recs[len(recs)-1].Seq
		if err := l.project(&Tx{tx: tx}, recs); err != nil {
			tx.Rollback()
			return 0, i, err
		}
		if r.app.Ready != nil {
			ready = append(ready, i)
		}
	}
	// The work the records claim went on while they were written into
	// the transaction; none of them is durable before it is done.
	for _, i := range ready {
		if err := rs[i].app.Ready(); err != nil {
			tx.Rollback()
			return 0, i, err
		}
	}
	release(tx)
	committing = true
	if err := tx.Commit(); err != nil {
		// The commit may or may not have reached the disk. Refuse writes
		// until the caller reopens and reconciles by idempotency key.
		berr := fmt.Errorf("%w: commit to %s: %v (outcome unknown: reopen the log and retry with the same idempotency key)", ErrBroken, l.path, err)
		l.broken.Store(&errorBox{berr})
		l.log.Error("commit failed; log refuses writes until reopened", "path", l.path, "err", err)
		return 0, -1, berr
	}
	return last, -1, nil
}

// writeTx holds the buckets an append touches.
type writeTx struct {
	events, idem *bolt.Bucket
	index        streamIndex
}

func newWriteTx(tx *bolt.Tx) *writeTx {
	w := &writeTx{
		events: tx.Bucket(bucketEvents),
		idem:   tx.Bucket(bucketIdempotency),
		index:  indexOf(tx),
	}
	// Sequence numbers only ever grow at the end: fill pages completely.
	// The versions index's keys (stream number, version) land near its
	// end, but in its middle there, as lifecycles interleave: a page split
	// there at 100% leaves a page too full for the next insert into the
	// streams it holds, and one nearly empty; at bbolt's default (half),
	// both halves stay about half empty once their streams have ended:
	// 50% full at 1M events in projection's BenchmarkFileSize (16 clients,
	// whole lifecycles), 82% at 0.75 (75 MiB of index against 47). The
	// synthetic BenchmarkIndexFill (64 appenders, a new stream every 8
	// records) goes the other way, 79% to 64%: the lifecycles are what a
	// store holds.
	w.events.FillPercent = 1.0
	w.index.versions.FillPercent = 0.75
	return w
}

// apply checks r's idempotency key and expected version, then writes its
// records after sequence number last. Checks run before any write, so a
// refused append leaves the transaction untouched.
func (w *writeTx) apply(r *request, last uint64) ([]Record, error) {
	a := r.app
	if r.upstream != 0 && r.upstream != last+1 {
		return nil, corrupt(r.upstream, "the shared log's record %d does not follow this replica's last record, %d", r.upstream, last)
	}
	var keyFirst uint64 // the first record of the append the key covers, if it began earlier
	if a.Key != "" {
		if v := w.idem.Get([]byte(a.Key)); v != nil && r.upstream != 0 {
			// A replica applies what the shared log holds, in batches
			// that may split an append: the key's records may go on
			// from the stream's last record, which is the one before.
			// Anything else means another log's records.
			number, version := w.index.lookup(a.Stream)
			if len(v) != 16 || binary.BigEndian.Uint64(v[8:]) != last || !bytes.Equal(w.index.versions.Get(versionKey(number, version)), u64(last)) {
				return nil, corrupt(r.upstream, "the shared log's record %d carries idempotency key %q, which this replica holds for other records: it does not replicate that log", r.upstream, a.Key)
			}
			keyFirst = binary.BigEndian.Uint64(v[:8])
		} else if v != nil {
			_, version := w.index.lookup(a.Stream)
			if len(v) != 16 {
				return nil, corrupt(0, "idempotency entry %q is %d bytes, want 16", a.Key, len(v))
			}
			r.res = Result{
				First:     binary.BigEndian.Uint64(v[:8]),
				Last:      binary.BigEndian.Uint64(v[8:]),
				Version:   version,
				Duplicate: true,
			}
			return nil, nil
		}
	}
	number, version := w.index.lookup(a.Stream)
	if a.CheckVersion && version != a.Version {
		return nil, &ConflictError{Stream: a.Stream, Expected: a.Version, Actual: version}
	}
	recs := make([]Record, len(a.Entries))
	for i, e := range a.Entries {
		seq := last + 1 + uint64(i)
		nanos := e.Time.UnixNano()
		var sums []byte
		if r.sums != nil {
			sums = r.sums[i]
		}
		if err := putRecord(w.events, seq, e.Kind, nanos, a.Stream, a.Key, e.Payload, sums); err != nil {
			return nil, err
		}
		var err error
		if number, err = w.index.add(a.Stream, number, version+1+uint64(i), seq); err != nil {
			return nil, err
		}
		recs[i] = Record{Seq: seq, Kind: e.Kind, Stream: a.Stream, Time: time.Unix(0, nanos).UTC(), Key: a.Key, Payload: e.Payload}
	}
	first, end := recs[0].Seq, recs[len(recs)-1].Seq
	if a.Key != "" {
		if keyFirst == 0 {
			keyFirst = first
		}
		if err := w.idem.Put([]byte(a.Key), append(u64(keyFirst), u64(end)...)); err != nil {
			return nil, err
		}
	}
	r.res = Result{First: first, Last: end, Version: version + uint64(len(recs))}
	return recs, nil
}

func (l *Log) broadcast() {
	l.notifyMu.Lock()
	if l.notify != nil {
		close(l.notify)
		l.notify = make(chan struct{})
	}
	l.notifyMu.Unlock()
}
