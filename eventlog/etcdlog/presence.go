package etcdlog

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Presence is a daemon's membership among the daemons that share a log:
// it holds an etcd lease, kept alive, to which the key P/daemons/<id> is
// bound, and watches P/daemons/ to know which daemons are alive. When a
// daemon stops renewing its lease (it died, or lost etcd for longer than
// the lease's TTL), etcd deletes its key and every other Presence sees it
// gone: the daemons that share the log take its delegations over
// (projection.Store.TakeOver). A daemon that comes back under the same id
// binds its key to a new lease and is alive again; what was taken over
// stays taken.
//
// It satisfies projection.Peers.
type Presence struct {
	cli     *clientv3.Client
	p       keys
	self    string
	ttl     int64 // seconds
	timeout time.Duration
	log     *slog.Logger

	mu      sync.Mutex
	alive   map[string]bool
	changed chan struct{} // closed and replaced when the set of live daemons changes

	stop context.CancelFunc
	done chan struct{}
}

// PresenceOptions configure Join.
type PresenceOptions struct {
	// Prefix is the shared log's (Options.Prefix); "/delegations/" when
	// empty.
	Prefix string
	// TTL is the lease's time to live: a daemon that has not renewed it
	// for that long is gone. Whole seconds, at least one; etcd may raise
	// it to its minimum (one and a half election timeouts).
	TTL time.Duration
	// RequestTimeout bounds every call to etcd; 5s when zero.
	RequestTimeout time.Duration
	// Logger receives diagnostics; nil discards them.
	Logger *slog.Logger
}

// NewPresence returns the presence of daemon self under the prefix, with
// a lease of opts.TTL; Start makes it present. self must be a non-empty id
// without a slash, stable across the daemon's restarts.
func NewPresence(cli *clientv3.Client, self string, opts PresenceOptions) (*Presence, error) {
	if self == "" || strings.ContainsAny(self, "/\x00") {
		return nil, fmt.Errorf("join the daemons on etcd: the daemon id %q is empty or holds a slash", self)
	}
	if opts.Prefix == "" {
		opts.Prefix = "/delegations/"
	}
	if opts.RequestTimeout <= 0 {
		opts.RequestTimeout = 5 * time.Second
	}
	ttl := int64((opts.TTL + time.Second - 1) / time.Second)
	if opts.TTL < time.Second {
		return nil, fmt.Errorf("join the daemons on etcd: lease TTL %s is under a second", opts.TTL)
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	p := &Presence{
		cli: cli, p: keys(opts.Prefix), self: self, ttl: ttl, timeout: opts.RequestTimeout, log: opts.Logger,
		changed: make(chan struct{}), done: make(chan struct{}), stop: func() {},
	}
	close(p.done) // until Start
	return p, nil
}

// Start binds this daemon's key to a new lease, reads which daemons are
// present, and goes on renewing the lease and following them until Close.
// Call it once the daemon holds its data directory (its lock): a second
// daemon started on the directory, which will fail, must not rebind the
// key of the one that serves it.
func (p *Presence) Start(ctx context.Context) error {
	lease, err := p.lease(ctx)
	if err != nil {
		return err
	}
	rev, err := p.list(ctx)
	if err != nil {
		// Give the lease back: a daemon that did not start must not look
		// alive for a TTL, holding back the takeover of its delegations.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), p.timeout)
		defer cancel()
		p.cli.Revoke(rctx, lease)
		return err
	}
	rctx, stop := context.WithCancel(context.Background())
	p.stop, p.done = stop, make(chan struct{})
	go func() {
		defer close(p.done)
		p.run(rctx, lease, rev)
	}()
	return nil
}

// daemons is the prefix of the daemons' keys; daemon, one daemon's.
func (k keys) daemons() string         { return string(k) + "daemons/" }
func (k keys) daemon(id string) string { return k.daemons() + id }

// Self returns this daemon's id.
func (p *Presence) Self() string { return p.self }

// Alive reports whether daemon id's key is present: it holds its lease.
func (p *Presence) Alive(id string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.alive[id]
}

// Present reports whether daemon id's key is present, in a linearizable
// read: as new as anything etcd has acknowledged, which Alive, fed by a
// watch, may not be yet.
func (p *Presence) Present(ctx context.Context, id string) (bool, error) {
	cctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	resp, err := p.cli.Get(cctx, p.p.daemon(id), clientv3.WithCountOnly())
	if err != nil {
		return false, p.etcdErr("ask etcd whether daemon "+id+" is present", err)
	}
	return resp.Count > 0, nil
}

// Changed returns a channel closed at the next change of the set of live
// daemons (one joining or going).
func (p *Presence) Changed() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.changed
}

// Close stops renewing the lease and following the others. The key stays
// until the lease expires: a daemon that restarts within its TTL is never
// taken for gone.
func (p *Presence) Close() error {
	p.stop()
	<-p.done
	return nil
}

// etcdErr is Log.etcdErr for the presence's calls.
func (p *Presence) etcdErr(op string, err error) error {
	return (&Log{cli: p.cli, timeout: p.timeout}).etcdErr(op, err)
}

// lease grants a new lease and binds this daemon's key to it.
func (p *Presence) lease(ctx context.Context) (clientv3.LeaseID, error) {
	cctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	g, err := p.cli.Grant(cctx, p.ttl)
	if err != nil {
		return 0, p.etcdErr("join the daemons on etcd: grant a lease", err)
	}
	host, _ := os.Hostname()
	if _, err := p.cli.Put(cctx, p.p.daemon(p.self), fmt.Sprintf("pid %d on %s", os.Getpid(), host), clientv3.WithLease(g.ID)); err != nil {
		return 0, p.etcdErr("join the daemons on etcd: register "+p.p.daemon(p.self), err)
	}
	return g.ID, nil
}

// list reads the live daemons and returns the revision it read them at.
func (p *Presence) list(ctx context.Context) (int64, error) {
	cctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	resp, err := p.cli.Get(cctx, p.p.daemons(), clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return 0, p.etcdErr("list the daemons on etcd", err)
	}
	alive := map[string]bool{}
	for _, kv := range resp.Kvs {
		alive[strings.TrimPrefix(string(kv.Key), p.p.daemons())] = true
	}
	p.mu.Lock()
	p.alive = alive
	p.signal()
	p.mu.Unlock()
	return resp.Header.Revision, nil
}

// signal wakes the waiters of Changed; p.mu is held.
func (p *Presence) signal() {
	close(p.changed)
	p.changed = make(chan struct{})
}

// run keeps the lease alive, taking a new one when it is lost (etcd was
// out of reach for longer than its TTL, the process was stopped), and
// follows the daemons' keys from revision rev on, until ctx ends.
func (p *Presence) run(ctx context.Context, lease clientv3.LeaseID, rev int64) {
	retry := time.Duration(p.ttl) * time.Second / 3
	var kac <-chan *clientv3.LeaseKeepAliveResponse
	stopKeepAlive := func() {} // of the lease kac renews
	defer func() { stopKeepAlive() }()
	var wch clientv3.WatchChan
	for ctx.Err() == nil {
		if lease == 0 {
			var err error
			if lease, err = p.lease(ctx); err != nil {
				p.log.Warn("no lease on etcd; retrying", "in", retry, "err", err)
				sleepCtx(ctx, retry)
				continue
			}
			p.log.Info("took a new lease on etcd", "daemon", p.self)
		}
		if kac == nil {
			kctx, cancel := context.WithCancel(ctx)
			var err error
			if kac, err = p.cli.KeepAlive(kctx, lease); err != nil {
				cancel()
				kac, lease = nil, 0
				continue
			}
			stopKeepAlive = cancel
		}
		if wch == nil {
			if rev == 0 {
				var err error
				if rev, err = p.list(ctx); err != nil {
					p.log.Warn("cannot list the daemons on etcd; retrying", "in", retry, "err", err)
					sleepCtx(ctx, retry)
					continue
				}
			}
			wch = p.cli.Watch(clientv3.WithRequireLeader(ctx), p.p.daemons(), clientv3.WithPrefix(), clientv3.WithRev(rev+1))
		}
		select {
		case <-ctx.Done():
		case _, ok := <-kac:
			if !ok { // the lease expired, or etcd is out of reach
				stopKeepAlive()
				kac, lease = nil, 0
			}
		case resp, ok := <-wch:
			if !ok || resp.Err() != nil {
				wch, rev = nil, 0 // list again, then watch from there
				continue
			}
			p.mu.Lock()
			for _, ev := range resp.Events {
				id := strings.TrimPrefix(string(ev.Kv.Key), p.p.daemons())
				if ev.Type == clientv3.EventTypeDelete {
					delete(p.alive, id)
					if id == p.self { // our key is gone: bind it to a new lease
						stopKeepAlive()
						kac, lease = nil, 0
					}
				} else {
					p.alive[id] = true
				}
			}
			if len(resp.Events) > 0 {
				p.signal()
			}
			p.mu.Unlock()
			rev = resp.Header.Revision
		}
	}
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}
