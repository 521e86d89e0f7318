package etcdlog

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/delegations/delegations/eventlog"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// ErrUnavailable reports that etcd did not answer within
// Options.RequestTimeout: it is unreachable or has lost its quorum. An
// append that fails with it may or may not have been written. It wraps
// eventlog.ErrUnavailable, so that code above the log tells it apart from
// other failures without knowing the log is on etcd.
var ErrUnavailable = fmt.Errorf("etcd %w", eventlog.ErrUnavailable)

// ErrOutcomeUnknown is wrapped by the error of an append whose transaction
// failed in flight (etcd unreachable, a reset stream, a closed client): it
// may or may not have been written. Retry with the same idempotency key.
var ErrOutcomeUnknown = errors.New("the outcome is unknown")

// Options configure Open. The zero value is usable.
type Options struct {
	// Prefix is where the log's keys live; "/delegations/" when empty.
	// Two logs on one etcd need prefixes neither of which starts the other.
	Prefix string
	// RequestTimeout bounds every call to etcd; 5s when zero.
	RequestTimeout time.Duration
	// MaxTxnOps is etcd's --max-txn-ops, the operations one transaction
	// may hold; 128 (etcd's default) when zero.
	MaxTxnOps int
	// MaxRequestBytes is etcd's --max-request-bytes; 1.5 MiB (etcd's
	// default) when zero. A transaction is kept to two thirds of it, the
	// rest being room for keys and framing; larger payloads are chunked.
	// Above 2 MiB the client's MaxCallSendMsgSize must be raised too.
	MaxRequestBytes int
	// MaxBatch caps how many appends the writer gathers at once; 1024 when
	// zero.
	MaxBatch int
	// Logger receives diagnostics; nil discards them.
	Logger *slog.Logger
}

// Log is an event log kept in etcd. It is safe for concurrent use, and
// several Logs (in one process or many) may share one prefix.
type Log struct {
	cli      *clientv3.Client
	p        keys
	timeout  time.Duration
	maxOps   int
	maxTxn   int // bytes of one transaction's keys and values
	chunk    int // bytes of one chunk
	log      *slog.Logger
	maxBatch int
	id       string // P/id

	last atomic.Uint64 // highest sequence number seen committed

	notifyMu sync.Mutex
	notify   chan struct{} // closed and replaced when last grows

	mu        sync.RWMutex // guards closed against in-flight appends
	closed    bool
	inflight  sync.WaitGroup
	reqs      chan *request
	quit      chan struct{}
	done      chan struct{} // writer stopped
	stopWatch context.CancelFunc
	watchDone chan struct{}

	// Owned by the writer goroutine.
	head     uint64            // P/head as of headRev
	headRev  int64             // ModRevision of P/head; 0 when absent, -1 when unknown
	versions map[string]uint64 // streams' versions as of headRev, a hint: every stream in a transaction is compared
}

// maxCachedStreams bounds the writer's cache of stream versions. The cache
// only saves a failed comparison: every stream in a transaction is compared.
const maxCachedStreams = 1 << 16

// defaults fills in the options left zero and checks the rest.
func (o *Options) defaults() error {
	if o.Prefix == "" {
		o.Prefix = "/delegations/"
	}
	if o.RequestTimeout <= 0 {
		o.RequestTimeout = 5 * time.Second
	}
	if o.MaxTxnOps <= 0 {
		o.MaxTxnOps = 128
	}
	if o.MaxRequestBytes <= 0 {
		o.MaxRequestBytes = 3 << 19
	}
	if o.MaxTxnOps < 8 || o.MaxRequestBytes < 64<<10 {
		return fmt.Errorf("%w: MaxTxnOps %d (at least 8), MaxRequestBytes %d (at least 64 KiB)", eventlog.ErrInvalid, o.MaxTxnOps, o.MaxRequestBytes)
	}
	return nil
}

// reader is a Log that reads (and chunks, for an import) but has no writer
// or watch: what Open starts, and an import must not (its marker fails
// Open's check of the head).
func (o *Options) reader(cli *clientv3.Client) *Log {
	logger := o.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Log{
		cli:     cli,
		p:       keys(o.Prefix),
		timeout: o.RequestTimeout,
		maxOps:  o.MaxTxnOps,
		maxTxn:  o.MaxRequestBytes * 2 / 3,
		chunk:   o.MaxRequestBytes / 2,
		log:     logger,
	}
}

// Open opens the log under opts.Prefix on the etcd that cli talks to. The
// client stays the caller's: Close does not close it.
func Open(ctx context.Context, cli *clientv3.Client, opts Options) (*Log, error) {
	if err := opts.defaults(); err != nil {
		return nil, fmt.Errorf("open log on etcd: %w", err)
	}
	if opts.MaxBatch <= 0 {
		opts.MaxBatch = 1024
	}
	l := opts.reader(cli)
	l.maxBatch = opts.MaxBatch
	l.notify, l.reqs, l.quit, l.done = make(chan struct{}), make(chan *request, opts.MaxBatch), make(chan struct{}), make(chan struct{})
	l.watchDone, l.versions = make(chan struct{}), map[string]uint64{}
	// The log's id is written by the first Open and never changes: a
	// replica's file names it, so that it never follows another log.
	fresh := make([]byte, 16)
	if _, err := rand.Read(fresh); err != nil {
		return nil, fmt.Errorf("open log on etcd: %w", err)
	}
	cctx, cancel := context.WithTimeout(ctx, l.timeout)
	tresp, err := cli.Txn(cctx).
		If(clientv3.Compare(clientv3.CreateRevision(l.p.id()), "=", 0)).
		Then(clientv3.OpPut(l.p.id(), hex.EncodeToString(fresh)), clientv3.OpGet(l.p.head())).
		Else(clientv3.OpGet(l.p.id()), clientv3.OpGet(l.p.head())).
		Commit()
	cancel()
	if err != nil {
		return nil, l.etcdErr("open log on etcd", err)
	}
	l.id = hex.EncodeToString(fresh)
	if !tresp.Succeeded {
		kvs := tresp.Responses[0].GetResponseRange().Kvs
		if len(kvs) != 1 || len(kvs[0].Value) == 0 {
			return nil, fmt.Errorf("open log on etcd: %w", &eventlog.CorruptError{Reason: fmt.Sprintf("the log's id %s is missing or empty", l.p.id())})
		}
		l.id = string(kvs[0].Value)
	}
	resp := (*clientv3.GetResponse)(tresp.Responses[1].GetResponseRange())
	resp.Header = tresp.Header
	if len(resp.Kvs) == 1 { // else a new log: head 0, absent (revision 0)
		last, err := parseUint(resp.Kvs[0].Value)
		if err != nil {
			return nil, fmt.Errorf("open log on etcd: %w", &eventlog.CorruptError{Reason: fmt.Sprintf("head %q: %v", resp.Kvs[0].Value, err)})
		}
		l.last.Store(last)
		l.head, l.headRev = last, resp.Kvs[0].ModRevision
	}
	wctx, stop := context.WithCancel(context.Background())
	l.stopWatch = stop
	go func() {
		defer close(l.watchDone)
		l.watch(wctx, resp.Header.Revision+1)
	}()
	go l.writer()
	return l, nil
}

// ID names the log: its prefix and the random id its first Open stored
// under P/id. A replica's file (eventlog.Options.Upstream) is bound to it.
func (l *Log) ID() string { return "etcd log " + l.id + " at prefix " + string(l.p) }

// Last returns the highest sequence number this Log has seen committed:
// by its own appends or, through the watch, by other writers.
func (l *Log) Last() uint64 { return l.last.Load() }

// observe records that the log holds at least last records.
func (l *Log) observe(last uint64) {
	for {
		cur := l.last.Load()
		if last <= cur {
			return
		}
		if l.last.CompareAndSwap(cur, last) {
			break
		}
	}
	l.notifyMu.Lock()
	if l.notify != nil {
		close(l.notify)
		l.notify = make(chan struct{})
	}
	l.notifyMu.Unlock()
}

// Wait blocks until the log holds a record after sequence number after, and
// returns the last sequence number then. It returns early with ctx's error,
// or eventlog.ErrClosed when the log closes.
func (l *Log) Wait(ctx context.Context, after uint64) (uint64, error) {
	for {
		l.notifyMu.Lock()
		ch := l.notify
		l.notifyMu.Unlock()
		if ch == nil {
			return l.Last(), eventlog.ErrClosed
		}
		if last := l.Last(); last > after {
			return last, nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return l.Last(), ctx.Err()
		}
	}
}

// watch follows P/head from revision rev and feeds Last and Wait. After a
// disconnect it resumes from the revision after the last event it saw; if
// etcd compacted that revision it reads the head instead (Tail reads by
// sequence number, so nothing between is lost).
func (l *Log) watch(ctx context.Context, rev int64) {
	backoff := 50 * time.Millisecond
	for ctx.Err() == nil {
		// Without a leader the member cannot know of new commits: end the
		// watch rather than wait on it, and start again.
		wch := l.cli.Watch(clientv3.WithRequireLeader(ctx), l.p.head(), clientv3.WithRev(rev))
		for resp := range wch {
			if resp.CompactRevision != 0 {
				if r, ok := l.readHead(ctx); ok {
					rev = r
				}
				break
			}
			if err := resp.Err(); err != nil {
				l.log.Warn("etcd watch of the log head ended; resuming", "revision", rev, "err", err)
				break
			}
			for _, ev := range resp.Events {
				if v, err := parseUint(ev.Kv.Value); err == nil {
					l.observe(v)
				}
				rev = ev.Kv.ModRevision + 1
			}
			backoff = 50 * time.Millisecond
		}
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
			backoff = min(2*backoff, 2*time.Second)
		}
	}
}

// Head reads P/head from etcd: the last sequence number committed by any
// writer, as of the call (a linearizable read, one round trip to the
// leader). It is eventlog.Upstream's Head.
func (l *Log) Head(ctx context.Context) (uint64, error) {
	cctx, cancel := l.ctx(ctx)
	defer cancel()
	resp, err := l.cli.Get(cctx, l.p.head())
	if err != nil {
		return 0, l.etcdErr("read the log's head", err)
	}
	if len(resp.Kvs) == 0 {
		return 0, nil
	}
	last, err := parseUint(resp.Kvs[0].Value)
	if err != nil {
		return 0, &eventlog.CorruptError{Reason: fmt.Sprintf("head %q: %v", resp.Kvs[0].Value, err)}
	}
	l.observe(last)
	return last, nil
}

// readHead reads P/head and returns the revision to watch from next.
func (l *Log) readHead(ctx context.Context) (int64, bool) {
	cctx, cancel := context.WithTimeout(ctx, l.timeout)
	defer cancel()
	resp, err := l.cli.Get(cctx, l.p.head())
	if err != nil {
		return 0, false
	}
	if len(resp.Kvs) == 1 {
		if v, err := parseUint(resp.Kvs[0].Value); err == nil {
			l.observe(v)
		}
	}
	return resp.Header.Revision + 1, true
}

// Close answers in-flight appends, stops the writer and the watch, and
// wakes waiters with eventlog.ErrClosed. Appends started after Close fail
// with eventlog.ErrClosed. The etcd client stays open.
func (l *Log) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	l.mu.Unlock()
	l.inflight.Wait()
	close(l.quit)
	<-l.done
	l.stopWatch()
	<-l.watchDone
	l.notifyMu.Lock()
	close(l.notify)
	l.notify = nil
	l.notifyMu.Unlock()
	return nil
}

func (l *Log) isClosed() bool {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.closed
}

// ctx returns a context for one call to etcd: parent's, with the deadline
// RequestTimeout.
func (l *Log) ctx(parent context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(parent, l.timeout)
}

// etcdErr describes an error from etcd (Describe).
func (l *Log) etcdErr(op string, err error) error {
	return Describe(l.cli.Endpoints(), l.timeout, op, err)
}

// Describe describes err, from a call op to etcd at endpoints, made with
// the deadline timeout: no answer in time, no leader and no connection
// are ErrUnavailable, with what to do about it; the caller's own
// cancellation stays context.Canceled. For calls made beside a Log, such
// as a migration's.
func Describe(endpoints []string, timeout time.Duration, op string, err error) error {
	if errors.Is(err, context.Canceled) {
		return fmt.Errorf("%s: %w", op, err)
	}
	if unavailable(err) {
		return fmt.Errorf("%s: %w: no answer within %s from %s: %v (is etcd running, reachable, and does it have a quorum? `etcdctl endpoint health --cluster` tells)",
			op, ErrUnavailable, timeout, strings.Join(endpoints, ","), err)
	}
	return fmt.Errorf("%s: etcd refused: %w", op, err)
}

func unavailable(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	st := status.Convert(err)
	code := st.Code()
	var ee rpctypes.EtcdError
	if errors.As(err, &ee) {
		code = ee.Code()
	}
	// A member whose Raft node has stopped (it is shutting down) answers
	// "raft: stopped" with no code until its connections close.
	return code == codes.Unavailable || code == codes.DeadlineExceeded || st.Message() == "raft: stopped"
}

// keys builds the log's etcd keys under its prefix.
type keys string

func (p keys) head() string             { return string(p) + "head" }
func (p keys) id() string               { return string(p) + "id" }
func (p keys) records() string          { return string(p) + "r/" }
func (p keys) record(seq uint64) string { return fmt.Sprintf("%sr/%016x", p, seq) }
func (p keys) stream(s string) string   { return string(p) + "s/" + s }
func (p keys) index(s string) string    { return string(p) + "x/" + s + "\x00" }
func (p keys) key(k string) string      { return string(p) + "k/" + k }
func (p keys) chunks(id uint64) string  { return fmt.Sprintf("%sc/%016x/", p, id) }
func (p keys) chunk(id uint64, n int) string {
	return fmt.Sprintf("%sc/%016x/%08x", p, id, n)
}
func (p keys) indexEntry(s string, version uint64) string {
	return fmt.Sprintf("%s%016x", p.index(s), version)
}

func parseUint(b []byte) (uint64, error) {
	return strconv.ParseUint(string(b), 10, 64)
}

func formatUint(v uint64) string { return strconv.FormatUint(v, 10) }

// parseRange parses "first last".
func parseRange(b []byte) (first, last uint64, err error) {
	f, s, ok := strings.Cut(string(b), " ")
	if !ok {
		return 0, 0, fmt.Errorf("%q is not \"first last\"", b)
	}
	if first, err = strconv.ParseUint(f, 10, 64); err != nil {
		return 0, 0, err
	}
	if last, err = strconv.ParseUint(s, 10, 64); err != nil {
		return 0, 0, err
	}
	if first == 0 || last < first {
		return 0, 0, fmt.Errorf("%q is not a range of sequence numbers", b)
	}
	return first, last, nil
}

func formatRange(first, last uint64) string { return formatUint(first) + " " + formatUint(last) }

// The replica seam: a Log is an eventlog.Upstream.
var _ eventlog.Upstream = (*Log)(nil)
