package etcdlog

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"iter"
	"strconv"

	"github.com/cespare/xxhash/v2"
	"github.com/delegations/delegations/eventlog"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Import copies another store's log (a bbolt file, for delegations
// migrate) into an empty prefix: every record under its own sequence
// number, with its time, kind, stream, idempotency key and payload bytes,
// and the stream versions, index entries and idempotency keys an append
// would have written. Payloads too large for one transaction are put in
// chunks first, as Append does.
//
// Until Finish, P/head holds a marker instead of a sequence number,
// saying how many records are copied: Open refuses the prefix (its head
// is not a number) and an append cannot slip in. Each transaction writes
// records, their index entries, stream versions, keys and the marker
// together, comparing the marker, so the prefix always holds a whole
// prefix of the source log and the marker says which: an import that
// stops halfway (a crash, etcd unavailable) resumes where the marker
// says, with StartImport again. Chunks put for a transaction that never
// committed stay behind and only take space, as with Append.
type Import struct {
	l        *Log
	next     uint64            // the first sequence number not yet copied
	total    uint64            // the source's last record, for the marker
	marker   string            // P/head now
	versions map[string]uint64 // streams' versions as copied
	prev     eventlog.Record   // the last record copied (payload dropped)
	keyFirst uint64            // the first record of the append prev belongs to, when prev has a key
	resumed  bool
}

// markerFormat is P/head during an import: Open fails on it, quoting it.
const markerFormat = "NOT READY: delegations migrate has copied %d of %d records here; run it again to finish"

// ErrNotEmpty reports that the prefix already holds something other than
// an interrupted import: an import writes only into an empty prefix.
var ErrNotEmpty = errors.New("the etcd prefix is not empty")

// StartImport begins an import of a log of total records into the prefix
// opts.Prefix, or resumes the one a marker says was interrupted (Next
// says where). The prefix must hold nothing else but possibly the log's
// id (a log opened but never appended to); anything more is ErrNotEmpty,
// with what is there.
func StartImport(ctx context.Context, cli *clientv3.Client, opts Options, total uint64) (*Import, error) {
	l, err := unopened(cli, opts)
	if err != nil {
		return nil, err
	}
	im := &Import{l: l, next: 1, total: total, versions: map[string]uint64{}}
	cctx, cancel := l.ctx(ctx)
	resp, err := cli.Txn(cctx).Then(
		clientv3.OpGet(string(l.p), clientv3.WithPrefix(), clientv3.WithKeysOnly(), clientv3.WithLimit(3)),
		clientv3.OpGet(l.p.id()),
		clientv3.OpGet(l.p.head()),
	).Commit()
	cancel()
	if err != nil {
		return nil, l.etcdErr("read the import's prefix", err)
	}
	all := resp.Responses[0].GetResponseRange()
	id := resp.Responses[1].GetResponseRange().Kvs
	head := resp.Responses[2].GetResponseRange().Kvs
	var done, was uint64
	switch {
	case len(head) == 1:
		if _, err := fmt.Sscanf(string(head[0].Value), markerFormat, &done, &was); err != nil {
			return nil, fmt.Errorf("%w: %s holds a log whose head is %q (%d keys under the prefix): migrate into an empty prefix (another --etcd-prefix), or delete it first if it is not needed (`etcdctl del --prefix %s`)",
				ErrNotEmpty, l.p, head[0].Value, all.Count, l.p)
		}
		im.marker, im.next, im.resumed = string(head[0].Value), done+1, true
		if err := im.reload(ctx); err != nil {
			return nil, err
		}
		return im, im.mark(ctx, done)
	case all.Count == 0 || all.Count == 1 && len(id) == 1:
		cmps := []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(l.p.head()), "=", 0)}
		var ops []clientv3.Op
		if len(id) == 1 {
			cmps = append(cmps, clientv3.Compare(clientv3.Value(l.p.id()), "=", string(id[0].Value)))
		} else {
			fresh := make([]byte, 16)
			if _, err := rand.Read(fresh); err != nil {
				return nil, err
			}
			cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(l.p.id()), "=", 0))
			ops = append(ops, clientv3.OpPut(l.p.id(), hex.EncodeToString(fresh)))
		}
		im.marker = fmt.Sprintf(markerFormat, 0, total)
		ops = append(ops, clientv3.OpPut(l.p.head(), im.marker))
		cctx, cancel := l.ctx(ctx)
		resp, err := cli.Txn(cctx).If(cmps...).Then(ops...).Commit()
		cancel()
		if err != nil {
			return nil, l.etcdErr("start the import", err)
		}
		if !resp.Succeeded {
			return nil, fmt.Errorf("start the import: another process wrote under %s meanwhile; nothing was written: run again", l.p)
		}
		return im, nil
	default:
		return nil, fmt.Errorf("%w: %s holds %d keys (such as %q) but no log head: migrate into an empty prefix (another --etcd-prefix), or delete them first if they are not needed (`etcdctl del --prefix %s`)",
			ErrNotEmpty, l.p, all.Count, all.Kvs[0].Key, l.p)
	}
}

// unopened is a Log for reading and importing without Open's writer and
// watch (and without its check of the head, which an import's marker
// fails).
func unopened(cli *clientv3.Client, opts Options) (*Log, error) {
	if err := opts.defaults(); err != nil {
		return nil, fmt.Errorf("import into etcd: %w", err)
	}
	return opts.reader(cli), nil
}

// reload reads what a resumed import needs: the streams' versions and the
// last record copied, with the start of its append when it has a key.
func (im *Import) reload(ctx context.Context) error {
	for h, err := range im.l.StreamHeads() {
		if err != nil {
			return err
		}
		im.versions[h.Stream] = h.Version
	}
	if im.next == 1 {
		return nil
	}
	r, err := im.Record(ctx, im.next-1)
	if err != nil {
		return err
	}
	im.prev, im.prev.Payload = r, nil
	if r.Key != "" {
		cctx, cancel := im.l.ctx(ctx)
		resp, err := im.l.cli.Get(cctx, im.l.p.key(r.Key))
		cancel()
		if err != nil {
			return im.l.etcdErr("read an idempotency key", err)
		}
		if len(resp.Kvs) != 1 {
			return &eventlog.CorruptError{Seq: r.Seq, Reason: fmt.Sprintf("idempotency key %q of the last record copied is missing", r.Key)}
		}
		if im.keyFirst, _, err = parseRange(resp.Kvs[0].Value); err != nil {
			return &eventlog.CorruptError{Seq: r.Seq, Reason: fmt.Sprintf("idempotency key %q: %v", r.Key, err)}
		}
	}
	return nil
}

// mark writes the marker again with the total this run copies.
func (im *Import) mark(ctx context.Context, done uint64) error {
	m := fmt.Sprintf(markerFormat, done, im.total)
	if m == im.marker {
		return nil
	}
	return im.commit(ctx, nil, m)
}

// Next is the first sequence number still to copy: 1 for a new import.
func (im *Import) Next() uint64 { return im.next }

// Resumed reports whether StartImport found an interrupted import.
func (im *Import) Resumed() bool { return im.resumed }

// ID names the log as Log.ID does.
func (im *Import) ID(ctx context.Context) (string, error) {
	cctx, cancel := im.l.ctx(ctx)
	defer cancel()
	resp, err := im.l.cli.Get(cctx, im.l.p.id())
	if err != nil {
		return "", im.l.etcdErr("read the log's id", err)
	}
	if len(resp.Kvs) != 1 {
		return "", &eventlog.CorruptError{Reason: fmt.Sprintf("the log's id %s is missing", im.l.p.id())}
	}
	return "etcd log " + string(resp.Kvs[0].Value) + " at prefix " + string(im.l.p), nil
}

// Write copies recs, which must start at Next and run without gaps, in
// as few transactions as etcd's limits allow.
func (im *Import) Write(ctx context.Context, recs []eventlog.Record) error {
	for len(recs) > 0 {
		if recs[0].Seq != im.next {
			return fmt.Errorf("import: record %d given where %d is next", recs[0].Seq, im.next)
		}
		n, err := im.writeTxn(ctx, recs)
		if err != nil {
			return err
		}
		recs = recs[n:]
	}
	return nil
}

// indexRun is one stream index entry a transaction writes.
type indexRun struct {
	stream      string
	version     uint64 // the stream's version before first
	first, last uint64
	key         string
	keyFirst    uint64
}

// writeTxn copies as many of recs as fit one transaction and returns how
// many.
func (im *Import) writeTxn(ctx context.Context, recs []eventlog.Record) (int, error) {
	l := im.l
	pfx := len(l.p)
	// The marker, and room for an index entry, a stream version and a key
	// of the largest sizes beside any record.
	const small = 2 + 16 + 41 + opOverhead
	reserve := 3*(pfx+small+2*eventlog.MaxKeyLen) + pfx + len(markerFormat) + 64
	versions := map[string]uint64{}
	version := func(s string) uint64 {
		if v, ok := versions[s]; ok {
			return v
		}
		return im.versions[s]
	}
	var (
		ops      []clientv3.Op
		entries  []*indexRun
		streams  = map[string]bool{}
		keysSeen = map[string]bool{}
		size     = reserve
		prev     = im.prev
		keyFirst = im.keyFirst
		n        int
	)
	for _, r := range recs {
		// What this record adds: itself, perhaps an index entry, a stream
		// version and a key.
		cont := len(entries) > 0 && sameAppend(prev, r)
		add := 1
		if !cont {
			add++
		}
		if !streams[r.Stream] {
			add++
		}
		if r.Key != "" && !keysSeen[r.Key] {
			add++
		}
		if n > 0 && len(ops)+len(entries)+len(streams)+len(keysSeen)+add+1 > l.maxOps {
			break
		}
		payload, seq := r.Payload, r.Seq
		rsize := pfx + 2 + 16 + len(eventlog.EncodeRecord(0, 0, 0, r.Stream, r.Key, nil)) + len(payload) + opOverhead
		chunked := rsize+reserve > l.maxTxn && len(payload) > refLen
		if chunked {
			rsize -= len(payload) - refLen
		}
		if n > 0 && size+rsize > l.maxTxn {
			break
		}
		if chunked {
			ref, _, err := l.putChunks(ctx, payload)
			if err != nil {
				return 0, fmt.Errorf("import record %d: store its %d-byte payload in chunks: %w", r.Seq, len(payload), err)
			}
			payload, seq = ref, seq|chunkBit
		}
		size += rsize + small + len(r.Stream) + len(r.Key)
		ops = append(ops, clientv3.OpPut(l.p.record(r.Seq), string(eventlog.EncodeRecord(seq, r.Kind, r.Time.UnixNano(), r.Stream, r.Key, payload))))
		if sameAppend(prev, r) {
			// keyFirst goes on: the key covers the whole append.
		} else if r.Key != "" {
			keyFirst = r.Seq
		}
		if cont {
			entries[len(entries)-1].last = r.Seq
		} else {
			entries = append(entries, &indexRun{stream: r.Stream, version: version(r.Stream), first: r.Seq, last: r.Seq})
		}
		e := entries[len(entries)-1]
		e.key, e.keyFirst = r.Key, keyFirst
		versions[r.Stream] = version(r.Stream) + 1
		streams[r.Stream] = true
		if r.Key != "" {
			keysSeen[r.Key] = true
		}
		prev, prev.Payload = r, nil
		n++
	}
	keyLast := map[string][2]uint64{}
	for _, e := range entries {
		ops = append(ops, clientv3.OpPut(l.p.indexEntry(e.stream, e.version), formatRange(e.first, e.last)))
		if e.key != "" {
			keyLast[e.key] = [2]uint64{e.keyFirst, e.last}
		}
	}
	for s, v := range versions {
		ops = append(ops, clientv3.OpPut(l.p.stream(s), formatUint(v)))
	}
	for k, fl := range keyLast {
		ops = append(ops, clientv3.OpPut(l.p.key(k), formatRange(fl[0], fl[1])))
	}
	done := recs[n-1].Seq
	if err := im.commit(ctx, ops, fmt.Sprintf(markerFormat, done, im.total)); err != nil {
		return 0, err
	}
	for s, v := range versions {
		im.versions[s] = v
	}
	im.prev, im.keyFirst, im.next = prev, keyFirst, done+1
	return n, nil
}

// sameAppend reports whether b goes on the append a belongs to: the next
// record, of the same stream, carrying the same idempotency key (records
// without a key are appends of their own).
func sameAppend(a, b eventlog.Record) bool {
	return a.Key != "" && a.Key == b.Key && a.Stream == b.Stream && b.Seq == a.Seq+1
}

// commit writes ops and the marker m in one transaction that compares the
// marker.
func (im *Import) commit(ctx context.Context, ops []clientv3.Op, m string) error {
	l := im.l
	ops = append(ops, clientv3.OpPut(l.p.head(), m))
	cctx, cancel := l.ctx(ctx)
	resp, err := l.cli.Txn(cctx).If(clientv3.Compare(clientv3.Value(l.p.head()), "=", im.marker)).Then(ops...).Commit()
	cancel()
	if err != nil {
		return fmt.Errorf("import records from %d: %w (run the import again: it resumes where etcd says it stopped)", im.next, l.etcdErr("commit", err))
	}
	if !resp.Succeeded {
		return fmt.Errorf("import records from %d: the head of %s is no longer the import's marker %q: another process writes there; nothing of this transaction was written", im.next, l.p, im.marker)
	}
	im.marker = m
	return nil
}

// Finish makes the copy a log: P/head becomes the last record's sequence
// number, which Open reads. Call it once the copy is verified.
func (im *Import) Finish(ctx context.Context) error {
	l := im.l
	cctx, cancel := l.ctx(ctx)
	resp, err := l.cli.Txn(cctx).If(clientv3.Compare(clientv3.Value(l.p.head()), "=", im.marker)).
		Then(clientv3.OpPut(l.p.head(), formatUint(im.next-1))).Commit()
	cancel()
	if err != nil {
		return l.etcdErr("finish the import", err)
	}
	if !resp.Succeeded {
		return fmt.Errorf("finish the import: the head of %s is no longer the import's marker %q: another process writes there", l.p, im.marker)
	}
	return nil
}

// Record reads the copied record seq.
func (im *Import) Record(_ context.Context, seq uint64) (eventlog.Record, error) {
	for r, err := range im.l.Range(seq, seq) {
		return r, err
	}
	return eventlog.Record{}, &eventlog.CorruptError{Seq: seq, Reason: "missing"}
}

// Records reads the copied records from from on, as Log.Range does.
func (im *Import) Records(from uint64) iter.Seq2[eventlog.Record, error] {
	return im.l.Range(from, im.next-1)
}

// Range yields the records from..to, in order, each checked as Records
// checks them; a record missing in between is a CorruptError.
func (l *Log) Range(from, to uint64) iter.Seq2[eventlog.Record, error] {
	return func(yield func(eventlog.Record, error) bool) {
		if to >= max(from, 1) {
			l.records(context.Background(), from, to, yield)
		}
	}
}

// StreamHeads reads the copied streams' versions, as Log.StreamHeads does.
func (im *Import) StreamHeads() iter.Seq2[eventlog.StreamHead, error] { return im.l.StreamHeads() }

// Keys reads the copied idempotency keys, as Log.Keys does.
func (im *Import) Keys() iter.Seq2[eventlog.KeyEntry, error] { return im.l.Keys() }

// IndexSum reads the copied stream index, as Log.IndexSum does.
func (im *Import) IndexSum() (IndexSum, error) { return im.l.IndexSum() }

// StreamHeads yields every stream with its version (P/s), in the byte
// order of the stream ids, as eventlog's Log.StreamHeads does.
func (l *Log) StreamHeads() iter.Seq2[eventlog.StreamHead, error] {
	return func(yield func(eventlog.StreamHead, error) bool) {
		pfx := l.p.stream("")
		l.scan(pfx, func(kv *mvccpb.KeyValue) (bool, error) {
			v, err := parseUint(kv.Value)
			if err != nil {
				return false, &eventlog.CorruptError{Reason: fmt.Sprintf("stream %q version %q: %v", kv.Key[len(pfx):], kv.Value, err)}
			}
			return yield(eventlog.StreamHead{Stream: string(kv.Key[len(pfx):]), Version: v}, nil), nil
		}, func(err error) { yield(eventlog.StreamHead{}, err) })
	}
}

// Keys yields every idempotency key with the records it covers (P/k), in
// the byte order of the keys, as eventlog's Log.Keys does.
func (l *Log) Keys() iter.Seq2[eventlog.KeyEntry, error] {
	return func(yield func(eventlog.KeyEntry, error) bool) {
		pfx := l.p.key("")
		l.scan(pfx, func(kv *mvccpb.KeyValue) (bool, error) {
			first, last, err := parseRange(kv.Value)
			if err != nil {
				return false, &eventlog.CorruptError{Reason: fmt.Sprintf("idempotency key %q: %v", kv.Key[len(pfx):], err)}
			}
			return yield(eventlog.KeyEntry{Key: string(kv.Key[len(pfx):]), First: first, Last: last}, nil), nil
		}, func(err error) { yield(eventlog.KeyEntry{}, err) })
	}
}

// IndexSum is what a stream index says of the records, whatever appends
// grouped them: how many (stream, version, sequence number) triples it
// holds and the sum of their xxhash64s. Two indexes with equal sums name
// the same records under the same versions (barring a 64-bit collision).
type IndexSum struct {
	N, Sum   uint64
	versions map[string]uint64
}

// Add counts r as the next record of its stream: adding a log's records
// in order gives the sum its index must have.
func (s *IndexSum) Add(r eventlog.Record) {
	if s.versions == nil {
		s.versions = map[string]uint64{}
	}
	v := s.versions[r.Stream] + 1
	s.versions[r.Stream] = v
	s.N++
	s.Sum += indexTerm(r.Stream, v, r.Seq)
}

func indexTerm(stream string, version, seq uint64) uint64 {
	b := make([]byte, 0, len(stream)+1+16)
	b = append(append(b, stream...), 0)
	b = binary.BigEndian.AppendUint64(b, version)
	return xxhash.Sum64(binary.BigEndian.AppendUint64(b, seq))
}

// IndexSum reads the stream index (P/x) and sums it: the entries of
// every stream P/s names, a bounded range per stream and MaxTxnOps
// streams per request, all at one revision, and then the count of every
// entry, which must be the same (no entry of a stream P/s does not name).
func (l *Log) IndexSum() (IndexSum, error) {
	var s IndexSum
	var streams []string
	for h, err := range l.StreamHeads() {
		if err != nil {
			return s, err
		}
		streams = append(streams, h.Stream)
	}
	ctx := context.Background()
	var rev int64
	entries := 0
	for len(streams) > 0 {
		group := streams[:min(len(streams), l.maxOps)]
		streams = streams[len(group):]
		ops := make([]clientv3.Op, len(group))
		for i, st := range group {
			opts := []clientv3.OpOption{clientv3.WithPrefix()}
			if rev != 0 {
				opts = append(opts, clientv3.WithRev(rev))
			}
			ops[i] = clientv3.OpGet(l.p.index(st), opts...)
		}
		cctx, cancel := l.ctx(ctx)
		resp, err := l.cli.Txn(cctx).Then(ops...).Commit()
		cancel()
		if err != nil {
			return s, l.etcdErr("read the stream index", err)
		}
		if rev == 0 {
			rev = resp.Header.Revision
		}
		for i, rr := range resp.Responses {
			pfx := l.p.index(group[i])
			for _, kv := range rr.GetResponseRange().Kvs {
				version, verr := strconv.ParseUint(string(kv.Key[len(pfx):]), 16, 64)
				first, last, err := parseRange(kv.Value)
				switch {
				case verr != nil || len(kv.Key)-len(pfx) != 16:
					err = fmt.Errorf("key %q does not end in a version", kv.Key)
				case err == nil && (last < first || last-first >= eventlog.MaxEntries):
					err = fmt.Errorf("entry %q names records %d-%d", kv.Key, first, last)
				}
				if err != nil {
					return s, &eventlog.CorruptError{Seq: first, Reason: fmt.Sprintf("stream %q index: %v", group[i], err)}
				}
				for seq := first; seq <= last; seq++ {
					s.N++
					s.Sum += indexTerm(group[i], version+1+seq-first, seq)
				}
				entries++
			}
		}
	}
	opts := []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithCountOnly()}
	if rev != 0 {
		opts = append(opts, clientv3.WithRev(rev))
	}
	cctx, cancel := l.ctx(ctx)
	resp, err := l.cli.Get(cctx, string(l.p)+"x/", opts...)
	cancel()
	if err != nil {
		return s, l.etcdErr("count the stream index", err)
	}
	if resp.Count != int64(entries) {
		return s, &eventlog.CorruptError{Reason: fmt.Sprintf("the stream index holds %d entries, %d of them under the streams the log names", resp.Count, entries)}
	}
	return s, nil
}

// scan visits every key under pfx in order, a page per request, until
// visit returns false or an error; fail gets any error.
func (l *Log) scan(pfx string, visit func(*mvccpb.KeyValue) (bool, error), fail func(error)) {
	end := clientv3.GetPrefixRangeEnd(pfx)
	var rev int64
	for key := pfx; ; {
		opts := []clientv3.OpOption{clientv3.WithRange(end), clientv3.WithLimit(pageLen)}
		if rev != 0 {
			opts = append(opts, clientv3.WithRev(rev))
		}
		cctx, cancel := l.ctx(context.Background())
		resp, err := l.cli.Get(cctx, key, opts...)
		cancel()
		if err != nil {
			fail(l.etcdErr("read "+pfx, err))
			return
		}
		rev = resp.Header.Revision
		for _, kv := range resp.Kvs {
			ok, err := visit(kv)
			if err != nil {
				fail(err)
				return
			}
			if !ok {
				return
			}
		}
		if !resp.More || len(resp.Kvs) == 0 {
			return
		}
		key = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
}
