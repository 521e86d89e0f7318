package etcdlog

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"iter"
	"time"

	"github.com/cespare/xxhash/v2"
	"github.com/delegations/delegations/eventlog"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// pageLen is how many records Records reads per request. Inline records are
// at most a transaction's size, so a page stays well under what a client
// accepts.
const pageLen = 256

// Records yields every record with a sequence number of at least from, in
// order, up to the last record committed when each page is read. A record
// that fails its checks is yielded once with a *eventlog.CorruptError and
// ends the sequence; so does an error from etcd.
func (l *Log) Records(from uint64) iter.Seq2[eventlog.Record, error] {
	return func(yield func(eventlog.Record, error) bool) {
		l.records(context.Background(), from, 0, yield)
	}
}

// records reads from from to to (0: until the end of the log); it returns
// the next sequence number to read and the error that stopped it, if any
// (nil also when yield stopped it).
//
// Each request reads the keys of pageLen sequence numbers and no more: etcd
// counts every key up to the end of a range read with a limit, so pages of
// an open range would cost the square of the log's length. Past a short
// page, one request with a limit of one key tells the end of the log (no
// key after it) from a missing record.
func (l *Log) records(ctx context.Context, from, to uint64, yield func(eventlog.Record, error) bool) (uint64, error) {
	from = max(from, 1)
	missing := func(held string) (uint64, error) {
		err := &eventlog.CorruptError{Seq: from, Reason: fmt.Sprintf("missing: the log holds %q where %q belongs", held, l.p.record(from))}
		yield(eventlog.Record{}, err)
		return from, err
	}
	for to == 0 || from <= to {
		if l.isClosed() {
			yield(eventlog.Record{}, eventlog.ErrClosed)
			return from, eventlog.ErrClosed
		}
		end := from + pageLen
		if to != 0 {
			end = min(end, to+1)
		}
		cctx, cancel := l.ctx(ctx)
		resp, err := l.cli.Get(cctx, l.p.record(from), clientv3.WithRange(l.p.record(end)))
		cancel()
		if err != nil {
			err = l.etcdErr(fmt.Sprintf("read records %d-%d", from, end-1), err)
			yield(eventlog.Record{}, err)
			return from, err
		}
		for _, kv := range resp.Kvs {
			if string(kv.Key) != l.p.record(from) {
				return missing(string(kv.Key))
			}
			r, err := l.decode(ctx, from, kv.Value)
			if err != nil {
				yield(eventlog.Record{}, err)
				return from, err
			}
			if !yield(r, nil) {
				return from + 1, nil
			}
			from++
		}
		if from == end {
			continue
		}
		if to != 0 {
			return missing("nothing")
		}
		cctx, cancel = l.ctx(ctx)
		next, err := l.cli.Get(cctx, l.p.record(from), clientv3.WithRange(clientv3.GetPrefixRangeEnd(l.p.records())), clientv3.WithLimit(1), clientv3.WithKeysOnly())
		cancel()
		switch {
		case err != nil:
			err = l.etcdErr(fmt.Sprintf("read records from %d", from), err)
			yield(eventlog.Record{}, err)
			return from, err
		case len(next.Kvs) == 0:
			return from, nil // the end of the log
		case string(next.Kvs[0].Key) != l.p.record(from):
			return missing(string(next.Kvs[0].Key))
		}
		// Appended since the page was read: read on.
	}
	return from, nil
}

// decode checks and decodes the record stored under seq, reading its
// payload's chunks if it has them.
func (l *Log) decode(ctx context.Context, seq uint64, b []byte) (eventlog.Record, error) {
	r, err := eventlog.DecodeRecord(seq, b)
	if err == nil {
		return r, nil
	}
	r, cerr := eventlog.DecodeRecord(seq|chunkBit, b)
	if cerr != nil {
		return eventlog.Record{}, err
	}
	r.Seq = seq
	ref := r.Payload
	if len(ref) != refLen {
		return eventlog.Record{}, &eventlog.CorruptError{Seq: seq, Reason: fmt.Sprintf("chunk reference is %d bytes, want %d", len(ref), refLen)}
	}
	id := binary.BigEndian.Uint64(ref)
	count := int(binary.BigEndian.Uint32(ref[8:]))
	size := binary.BigEndian.Uint64(ref[12:])
	sum := binary.BigEndian.Uint64(ref[20:])
	if size > eventlog.MaxPayloadLen {
		return eventlog.Record{}, &eventlog.CorruptError{Seq: seq, Reason: fmt.Sprintf("chunked payload of %d bytes is over the limit", size)}
	}
	payload := make([]byte, 0, size)
	prefix := l.p.chunks(id)
	for n := 0; n < count; {
		cctx, cancel := l.ctx(ctx)
		resp, err := l.cli.Get(cctx, l.p.chunk(id, n), clientv3.WithRange(clientv3.GetPrefixRangeEnd(prefix)), clientv3.WithLimit(4))
		cancel()
		if err != nil {
			return eventlog.Record{}, l.etcdErr(fmt.Sprintf("read record %d's chunks", seq), err)
		}
		if len(resp.Kvs) == 0 {
			return eventlog.Record{}, &eventlog.CorruptError{Seq: seq, Reason: fmt.Sprintf("chunk %d of %d is missing", n, count)}
		}
		for _, kv := range resp.Kvs {
			if n >= count {
				break
			}
			if want := l.p.chunk(id, n); string(kv.Key) != want {
				return eventlog.Record{}, &eventlog.CorruptError{Seq: seq, Reason: fmt.Sprintf("chunk %d of %d is missing", n, count)}
			}
			if uint64(len(payload)+len(kv.Value)) > size {
				return eventlog.Record{}, &eventlog.CorruptError{Seq: seq, Reason: fmt.Sprintf("chunks hold more than the %d bytes the record names", size)}
			}
			payload = append(payload, kv.Value...)
			n++
		}
	}
	if uint64(len(payload)) != size {
		return eventlog.Record{}, &eventlog.CorruptError{Seq: seq, Reason: fmt.Sprintf("chunks hold %d bytes, the record names %d", len(payload), size)}
	}
	if got := xxhash.Sum64(payload); got != sum {
		return eventlog.Record{}, &eventlog.CorruptError{Seq: seq, Reason: fmt.Sprintf("chunked payload checksum mismatch: stored %016x, computed %016x", sum, got)}
	}
	r.Payload = payload
	if size == 0 {
		r.Payload = nil
	}
	return r, nil
}

// Stream returns every record of one stream, in order: its index entries
// (one per append) and then the records they name.
func (l *Log) Stream(stream string) ([]eventlog.Record, error) {
	if err := eventlog.ValidateStream(stream); err != nil {
		return nil, err
	}
	if l.isClosed() {
		return nil, eventlog.ErrClosed
	}
	ctx := context.Background()
	prefix := l.p.index(stream)
	end := clientv3.GetPrefixRangeEnd(prefix)
	var out []eventlog.Record
	var rev int64
	for key := prefix; ; {
		opts := []clientv3.OpOption{clientv3.WithRange(end), clientv3.WithLimit(pageLen)}
		if rev != 0 {
			opts = append(opts, clientv3.WithRev(rev))
		}
		cctx, cancel := l.ctx(ctx)
		resp, err := l.cli.Get(cctx, key, opts...)
		cancel()
		if err != nil {
			return out, l.etcdErr(fmt.Sprintf("read stream %q", stream), err)
		}
		rev = resp.Header.Revision
		recs, err := l.streamRecords(ctx, stream, uint64(len(out)), resp.Kvs, rev)
		out = append(out, recs...)
		if err != nil {
			return out, err
		}
		if !resp.More {
			return out, nil
		}
		key = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
}

// streamRecords reads the records that index entries kvs name, in one
// transaction per MaxTxnOps entries; version is the stream's version
// before the first entry.
func (l *Log) streamRecords(ctx context.Context, stream string, version uint64, kvs []*mvccpb.KeyValue, rev int64) ([]eventlog.Record, error) {
	var out []eventlog.Record
	for len(kvs) > 0 {
		group := kvs[:min(len(kvs), l.maxOps)]
		kvs = kvs[len(group):]
		ops := make([]clientv3.Op, len(group))
		ranges := make([][2]uint64, len(group))
		for i, kv := range group {
			first, last, err := parseRange(kv.Value)
			switch {
			case err != nil:
			case last-first >= eventlog.MaxEntries:
				err = fmt.Errorf("entry %q names %d records, more than an append holds", kv.Key, last-first+1)
			case string(kv.Key) != l.p.indexEntry(stream, version):
				err = fmt.Errorf("entry %q is not version %d's", kv.Key, version)
			}
			if err != nil {
				return out, &eventlog.CorruptError{Seq: first, Reason: fmt.Sprintf("stream %q index: %v", stream, err)}
			}
			version += last - first + 1
			ranges[i] = [2]uint64{first, last}
			ops[i] = clientv3.OpGet(l.p.record(first), clientv3.WithRange(l.p.record(last+1)), clientv3.WithRev(rev))
		}
		cctx, cancel := l.ctx(ctx)
		resp, err := l.cli.Txn(cctx).Then(ops...).Commit()
		cancel()
		if err != nil {
			return out, l.etcdErr(fmt.Sprintf("read stream %q", stream), err)
		}
		for i, rr := range resp.Responses {
			got := rr.GetResponseRange().Kvs
			seq := ranges[i][0]
			for _, kv := range got {
				if string(kv.Key) != l.p.record(seq) {
					break
				}
				r, err := l.decode(ctx, seq, kv.Value)
				if err != nil {
					return out, err
				}
				if r.Stream != stream {
					return out, &eventlog.CorruptError{Seq: seq, Reason: fmt.Sprintf("stream %q index points at a record of stream %q", stream, r.Stream)}
				}
				out = append(out, r)
				seq++
			}
			if seq != ranges[i][1]+1 {
				return out, &eventlog.CorruptError{Seq: seq, Reason: fmt.Sprintf("stream %q index points at a record that does not exist", stream)}
			}
		}
	}
	return out, nil
}

// Tail yields every record from sequence number from on, in order, and
// then each new record as it is committed, by any writer. It reads by
// sequence number, so it never skips nor repeats a record; while etcd does
// not answer it retries, and the watch that wakes it resumes by itself.
// It ends when ctx ends, after yielding a *eventlog.CorruptError, or with
// eventlog.ErrClosed when the log closes.
func (l *Log) Tail(ctx context.Context, from uint64) iter.Seq2[eventlog.Record, error] {
	return func(yield func(eventlog.Record, error) bool) {
		if from == 0 {
			from = 1
		}
		stopped := false
		backoff := 50 * time.Millisecond
		for {
			next, err := l.records(ctx, from, 0, func(r eventlog.Record, err error) bool {
				if err != nil {
					return false // handled below
				}
				if !yield(r, nil) {
					stopped = true
					return false
				}
				return true
			})
			from = next
			switch {
			case stopped || ctx.Err() != nil:
				return
			case errors.Is(err, eventlog.ErrCorrupt), errors.Is(err, eventlog.ErrClosed):
				yield(eventlog.Record{}, err)
				return
			case err != nil:
				l.log.Warn("tail: reading the log failed; retrying", "from", from, "err", err)
				select {
				case <-ctx.Done():
					return
				case <-l.quit:
					yield(eventlog.Record{}, eventlog.ErrClosed)
					return
				case <-time.After(backoff):
					backoff = min(2*backoff, 2*time.Second)
				}
				continue
			}
			backoff = 50 * time.Millisecond
			if _, err := l.Wait(ctx, from-1); err != nil {
				if errors.Is(err, eventlog.ErrClosed) {
					yield(eventlog.Record{}, err)
				}
				return
			}
		}
	}
}
