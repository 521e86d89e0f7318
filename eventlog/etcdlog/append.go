package etcdlog

import (
	"context"
	crand "crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"sync/atomic"

	"github.com/cespare/xxhash/v2"
	"github.com/delegations/delegations/eventlog"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// chunkBit marks the checksum of a record whose payload is a chunk
// reference: it is computed over the sequence number with this bit set.
const chunkBit = 1 << 63

// refLen is the size of a chunk reference: id, count, total size, xxhash64.
const refLen = 8 + 4 + 8 + 8

// opOverhead is a generous bound on the framing etcd's protocol adds to
// one operation of a transaction.
const opOverhead = 32

// request states, moved with compare-and-swap so that an appender whose
// context ends and the writer never both own a request.
const (
	pending int32 = iota
	claimed
	abandoned
)

type request struct {
	app     eventlog.Append
	payload [][]byte // per entry: the payload, or its chunk reference
	chunked []bool
	ids     []uint64 // chunk ids written for this append
	size    int      // bytes the append adds to a transaction
	state   atomic.Int32
	res     eventlog.Result
	err     error
	done    chan struct{}
}

// Append durably appends a.Entries to a.Stream: it returns once etcd has
// committed them (on a quorum of its members' disks). Concurrent calls
// share transactions. If ctx ends before the writer takes the append up,
// nothing is written and ctx's error is returned; once taken, Append waits
// for the transaction's outcome, which Options.RequestTimeout bounds.
func (l *Log) Append(ctx context.Context, a eventlog.Append) (eventlog.Result, error) {
	if err := eventlog.ValidateAppend(a); err != nil {
		return eventlog.Result{}, err
	}
	if limit := l.maxOps - 4; len(a.Entries) > limit {
		return eventlog.Result{}, fmt.Errorf("%w: an append on etcd holds at most %d entries (etcd's %d operations per transaction, less the log's own 4), got %d",
			eventlog.ErrInvalid, limit, l.maxOps, len(a.Entries))
	}
	if err := ctx.Err(); err != nil {
		return eventlog.Result{}, err
	}
	l.mu.RLock()
	if l.closed {
		l.mu.RUnlock()
		return eventlog.Result{}, eventlog.ErrClosed
	}
	l.inflight.Add(1)
	l.mu.RUnlock()
	defer l.inflight.Done()

	r, err := l.prepare(ctx, a)
	if err != nil {
		return eventlog.Result{}, err
	}
	res, maybeWritten, err := l.submit(ctx, r)
	if !maybeWritten && len(r.ids) > 0 {
		l.dropChunks(r.ids)
	}
	return res, err
}

// submit hands r to the writer and waits for its answer. maybeWritten is
// false when r is known not to have been written by this call.
func (l *Log) submit(ctx context.Context, r *request) (res eventlog.Result, maybeWritten bool, err error) {
	select {
	case l.reqs <- r:
	case <-ctx.Done():
		return eventlog.Result{}, false, ctx.Err()
	}
	select {
	case <-r.done:
	case <-ctx.Done():
		if r.state.CompareAndSwap(pending, abandoned) {
			return eventlog.Result{}, false, ctx.Err()
		}
		<-r.done
	}
	// Chunks are dropped only for an append known not to be written: a
	// committed record may reference them.
	maybeWritten = errors.Is(r.err, ErrOutcomeUnknown) || errors.Is(r.err, ErrUnavailable) || (r.err == nil && !r.res.Duplicate)
	return r.res, maybeWritten, r.err
}

// prepare sizes a's transaction and moves payloads into chunks, largest
// first, until the append fits in one transaction.
func (l *Log) prepare(ctx context.Context, a eventlog.Append) (*request, error) {
	r := &request{
		app:     a,
		payload: make([][]byte, len(a.Entries)),
		chunked: make([]bool, len(a.Entries)),
		done:    make(chan struct{}),
	}
	base := len(eventlog.EncodeRecord(0, 0, 0, a.Stream, a.Key, nil))
	pfx := len(l.p)
	size := 3 * (pfx + 2 + len(a.Stream) + 16 + 41 + opOverhead) // stream: put, compare, read
	if a.Key != "" {
		size += 3 * (pfx + 2 + len(a.Key) + 41 + opOverhead) // key: put, compare, read
	}
	order := make([]int, len(a.Entries))
	for i, e := range a.Entries {
		r.payload[i] = e.Payload
		size += pfx + 2 + 16 + base + len(e.Payload) + opOverhead
		order[i] = i
	}
	slices.SortFunc(order, func(x, y int) int { return len(a.Entries[y].Payload) - len(a.Entries[x].Payload) })
	for _, i := range order {
		if size <= l.maxTxn {
			break
		}
		p := a.Entries[i].Payload
		if len(p) <= refLen {
			break
		}
		ref, id, err := l.putChunks(ctx, p)
		if id != 0 {
			r.ids = append(r.ids, id)
		}
		if err != nil {
			l.dropChunks(r.ids)
			return nil, fmt.Errorf("append to %q: store a %d-byte payload in chunks: %w", a.Stream, len(p), err)
		}
		r.payload[i], r.chunked[i] = ref, true
		size -= len(p) - refLen
	}
	if size > l.maxTxn {
		return nil, fmt.Errorf("%w: the append needs %d bytes in one etcd transaction even with its payloads in chunks; the limit is %d (two thirds of etcd's --max-request-bytes)",
			eventlog.ErrInvalid, size, l.maxTxn)
	}
	r.size = size
	return r, nil
}

// putChunks stores payload in chunks, each in its own request, and returns
// the reference a record holds instead. id is non-zero once a chunk may
// have been written.
func (l *Log) putChunks(ctx context.Context, payload []byte) (ref []byte, id uint64, err error) {
	var b [8]byte
	for id == 0 {
		if _, err := crand.Read(b[:]); err != nil {
			return nil, 0, err
		}
		id = binary.BigEndian.Uint64(b[:])
	}
	n := 0
	for off := 0; off < len(payload); off += l.chunk {
		part := payload[off:min(off+l.chunk, len(payload))]
		cctx, cancel := l.ctx(ctx)
		_, err := l.cli.Put(cctx, l.p.chunk(id, n), string(part))
		cancel()
		if err != nil {
			return nil, id, l.etcdErr(fmt.Sprintf("put chunk %d", n), err)
		}
		n++
	}
	ref = binary.BigEndian.AppendUint64(nil, id)
	ref = binary.BigEndian.AppendUint32(ref, uint32(n))
	ref = binary.BigEndian.AppendUint64(ref, uint64(len(payload)))
	ref = binary.BigEndian.AppendUint64(ref, xxhash.Sum64(payload))
	return ref, id, nil
}

// dropChunks deletes the chunks of an append that was not written.
func (l *Log) dropChunks(ids []uint64) {
	for _, id := range ids {
		ctx, cancel := l.ctx(context.Background())
		if _, err := l.cli.Delete(ctx, l.p.chunks(id), clientv3.WithPrefix()); err != nil {
			l.log.Warn("could not delete the chunks of an append that was not written; they only take space", "id", fmt.Sprintf("%016x", id), "err", err)
		}
		cancel()
	}
}

// writer is the only goroutine that appends for this Log. It takes every
// request queued while the previous transaction ran and commits them
// together.
func (l *Log) writer() {
	defer close(l.done)
	batch := make([]*request, 0, l.maxBatch)
	for {
		select {
		case r := <-l.reqs:
			batch = append(batch[:0], r)
		case <-l.quit:
			return
		}
		// Appenders woken by the last commit are about to queue again; let
		// them run before draining (see eventlog's writer).
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

// maxRounds bounds how many transactions in a row may find that other
// writers moved the head before the writer gives up on a batch.
const maxRounds = 100

// commit writes queue in as few transactions as the limits allow. A
// transaction whose comparisons fail changes nothing; its else branch
// reads what they compared, and the writer plans again from that.
func (l *Log) commit(queue []*request) {
	stored := map[string][2]uint64{} // idempotency keys read back from etcd
	rounds := 0
	for len(queue) > 0 {
		p := l.plan(queue, stored)
		ctx, cancel := l.ctx(context.Background())
		resp, err := l.cli.Txn(ctx).If(p.cmps...).Then(p.then...).Else(p.els...).Commit()
		cancel()
		if err != nil {
			// The outcome is unknown; the next transaction's comparison of
			// the head finds out what happened.
			l.headRev = -1
			clear(l.versions)
			err = fmt.Errorf("append: %w; %w: the append may or may not have been written: retry with the same idempotency key once etcd answers", l.etcdErr("commit", err), ErrOutcomeUnknown)
			for _, r := range queue {
				answer(r, eventlog.Result{}, err)
			}
			return
		}
		if resp.Succeeded {
			rounds = 0
			if p.last != l.head {
				// Only a transaction that wrote the head moves its revision:
				// one of duplicates alone wrote nothing.
				l.head, l.headRev = p.last, resp.Header.Revision
			}
			if len(l.versions) > maxCachedStreams {
				clear(l.versions)
			}
			for s, v := range p.version {
				l.versions[s] = v
			}
			l.observe(p.last)
			for _, r := range queue[:p.n] {
				close(r.done)
			}
			queue = queue[p.n:]
			continue
		}
		if rounds++; rounds >= maxRounds {
			err := fmt.Errorf("append: %d transactions in a row found the log changed by other writers; nothing was written, retry", rounds)
			for _, r := range queue {
				answer(r, eventlog.Result{}, err)
			}
			return
		}
		badStreams, badKeys := l.reload(p, resp, stored)
		if len(badStreams)+len(badKeys) > 0 {
			rest := queue[:0]
			for _, r := range queue {
				if err := badStreams[r.app.Stream]; err != nil {
					answer(r, eventlog.Result{}, err)
				} else if err := badKeys[r.app.Key]; r.app.Key != "" && err != nil {
					answer(r, eventlog.Result{}, err)
				} else {
					rest = append(rest, r)
				}
			}
			clear(queue[len(rest):])
			queue = rest
		}
	}
}

func answer(r *request, res eventlog.Result, err error) {
	r.res, r.err = res, err
	close(r.done)
}

// plan is one transaction: the decisions for the first n requests of the
// queue, and the comparisons that make them right.
type plan struct {
	n       int
	last    uint64            // head after the transaction
	version map[string]uint64 // streams' versions after the transaction
	start   map[string]uint64 // streams' versions before it
	keys    map[string]*request
	streams []string // compared, in else-branch order
	keyList []string
	cmps    []clientv3.Cmp
	then    []clientv3.Op
	els     []clientv3.Op
	bytes   int
}

// plan decides as many requests of queue as fit one transaction, from the
// writer's view of the log: its head and the streams' versions as of
// headRev, and the idempotency keys known to be stored. A stream the
// writer has no version for is taken to be where the append expects it (or
// empty); the comparison on it finds out.
func (l *Log) plan(queue []*request, stored map[string][2]uint64) *plan {
	p := &plan{
		last:    l.head,
		version: map[string]uint64{},
		start:   map[string]uint64{},
		keys:    map[string]*request{},
	}
	p.cmps = append(p.cmps, clientv3.Compare(clientv3.ModRevision(l.p.head()), "=", l.headRev))
	for _, r := range queue {
		a := r.app
		_, seen := p.version[a.Stream]
		newKey := a.Key != "" && p.keys[a.Key] == nil
		_, isStored := stored[a.Key]
		newKey = newKey && !isStored
		cmps := 1 + len(p.streams) + len(p.keyList)
		if !seen {
			cmps++
		}
		if newKey {
			cmps++
		}
		if p.n > 0 && (cmps > l.maxOps || len(p.then)+len(p.streams)+len(a.Entries)+4 > l.maxOps || p.bytes+r.size > l.maxTxn) {
			break
		}
		p.n++
		p.bytes += r.size
		if !seen {
			v, ok := l.versions[a.Stream]
			if !ok && a.CheckVersion {
				v = a.Version
			}
			p.version[a.Stream], p.start[a.Stream] = v, v
			p.streams = append(p.streams, a.Stream)
			key := l.p.stream(a.Stream)
			if v == 0 {
				p.cmps = append(p.cmps, clientv3.Compare(clientv3.CreateRevision(key), "=", 0))
			} else {
				p.cmps = append(p.cmps, clientv3.Compare(clientv3.Value(key), "=", formatUint(v)))
			}
		}
		version := p.version[a.Stream]
		if a.Key != "" {
			if s, ok := stored[a.Key]; ok {
				r.res, r.err = eventlog.Result{First: s[0], Last: s[1], Version: version, Duplicate: true}, nil
				continue
			}
			if first := p.keys[a.Key]; first != nil {
				r.res, r.err = eventlog.Result{First: first.res.First, Last: first.res.Last, Version: version, Duplicate: true}, nil
				continue
			}
		}
		if a.CheckVersion && version != a.Version {
			r.res, r.err = eventlog.Result{}, &eventlog.ConflictError{Stream: a.Stream, Expected: a.Version, Actual: version}
			continue
		}
		if a.Key != "" {
			key := l.p.key(a.Key)
			p.keys[a.Key] = r
			p.keyList = append(p.keyList, a.Key)
			p.cmps = append(p.cmps, clientv3.Compare(clientv3.CreateRevision(key), "=", 0))
		}
		first := p.last + 1
		for i, e := range a.Entries {
			seq := first + uint64(i)
			sum := seq
			if r.chunked[i] {
				sum |= chunkBit
			}
			rec := eventlog.EncodeRecord(sum, e.Kind, e.Time.UnixNano(), a.Stream, a.Key, r.payload[i])
			p.then = append(p.then, clientv3.OpPut(l.p.record(seq), string(rec)))
		}
		p.last = first + uint64(len(a.Entries)) - 1
		p.then = append(p.then, clientv3.OpPut(l.p.indexEntry(a.Stream, version), formatRange(first, p.last)))
		if a.Key != "" {
			p.then = append(p.then, clientv3.OpPut(l.p.key(a.Key), formatRange(first, p.last)))
		}
		p.version[a.Stream] = version + uint64(len(a.Entries))
		r.res, r.err = eventlog.Result{First: first, Last: p.last, Version: p.version[a.Stream]}, nil
	}
	// A stream's version is put once, after its last append of the batch:
	// etcd refuses a transaction that puts one key twice.
	for _, s := range p.streams {
		if v := p.version[s]; v != p.start[s] {
			p.then = append(p.then, clientv3.OpPut(l.p.stream(s), formatUint(v)))
		}
	}
	if p.last != l.head {
		p.then = append(p.then, clientv3.OpPut(l.p.head(), formatUint(p.last)))
	}
	// The else branch reads what the comparisons looked at, in the order
	// reload takes them.
	p.els = append(p.els, clientv3.OpGet(l.p.head()))
	for _, s := range p.streams {
		p.els = append(p.els, clientv3.OpGet(l.p.stream(s)))
	}
	for _, k := range p.keyList {
		p.els = append(p.els, clientv3.OpGet(l.p.key(k)))
	}
	return p
}

// reload takes in what the else branch of p's failed transaction read: the
// head, p's streams and p's keys. It returns errors for the streams and
// keys whose stored values are damaged.
func (l *Log) reload(p *plan, resp *clientv3.TxnResponse, stored map[string][2]uint64) (bad, badKeys map[string]error) {
	bad, badKeys = map[string]error{}, map[string]error{}
	rs := resp.Responses
	clear(l.versions)
	l.head, l.headRev = 0, 0
	if kvs := rs[0].GetResponseRange().Kvs; len(kvs) == 1 {
		head, err := parseUint(kvs[0].Value)
		if err != nil {
			// Without a head nothing can be appended: refuse every append
			// of this batch (and plan the next from scratch).
			l.headRev = -1
			cerr := &eventlog.CorruptError{Seq: 0, Reason: fmt.Sprintf("log head %q is not a sequence number: %v", kvs[0].Value, err)}
			for _, s := range p.streams {
				bad[s] = cerr
			}
			return bad, badKeys
		}
		l.head, l.headRev = head, kvs[0].ModRevision
		l.observe(head)
	}
	for i, s := range p.streams {
		var v uint64
		if kvs := rs[1+i].GetResponseRange().Kvs; len(kvs) == 1 {
			var err error
			if v, err = parseUint(kvs[0].Value); err != nil {
				bad[s] = &eventlog.CorruptError{Seq: l.head, Reason: fmt.Sprintf("stream %q version %q: %v", s, kvs[0].Value, err)}
				continue
			}
		}
		l.versions[s] = v
	}
	for j, k := range p.keyList {
		kvs := rs[1+len(p.streams)+j].GetResponseRange().Kvs
		if len(kvs) != 1 {
			continue
		}
		first, last, err := parseRange(kvs[0].Value)
		if err != nil {
			badKeys[k] = &eventlog.CorruptError{Seq: l.head, Reason: fmt.Sprintf("idempotency key %q entry: %v", k, err)}
			continue
		}
		stored[k] = [2]uint64{first, last}
	}
	return bad, badKeys
}
