package etcdlog

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
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
// stays taken, but for what it registered itself, which it takes back.
//
// A daemon can also outlive its lease: etcd out of its reach (a network
// partition), the process stopped (a laptop asleep, SIGSTOP, a long
// pause), and the others take its delegations over while it still runs.
// So the Presence fences itself: Holds reports whether it is sure it still
// holds its lease, which it is until a conservative local deadline, the
// time it sent the last keep-alive etcd answered plus the TTL etcd granted,
// less a margin, measured on the monotonic clock and on the wall clock
// (which a machine's sleep does not stop). etcd's own expiry comes
// later: it counts the TTL from when the request reached the leader, and a
// new leader grants every lease a fresh TTL. Past the deadline the daemon
// acts as no delegation's owner (projection's owner.go asks Holds), and the
// Presence takes a new lease and binds its key to it as soon as etcd
// answers, as on a restart: the rule that gives a returning daemon back
// what it registered applies from there.
//
// It satisfies projection.Peers.
type Presence struct {
	cli     *clientv3.Client
	p       keys
	self    string
	ttl     int64 // seconds, as asked
	timeout time.Duration
	clock   Clock
	log     *slog.Logger

	mu      sync.Mutex
	alive   map[string]bool
	changed chan struct{} // closed and replaced when the set of live daemons changes
	until   time.Time     // Holds until then, on clock (zero: no lease)
	bound   int64         // the revision at which the key was last bound to a lease
	deleted int64         // the revision at which the key was last seen deleted, or missing (went); past bound, Holds is false
	lost    chan struct{} // wakes keep when the key goes (buffer of one)

	stop context.CancelFunc
	done chan struct{}
}

// Clock is what a Presence measures its lease on: Now for the deadline,
// AfterFunc for the keep-alives' pace. The real one is time.Now, whose
// readings carry both the monotonic and the wall clock (Holds checks
// both); tests move a manual one (projection.Clock has this shape).
type Clock interface {
	Now() time.Time
	AfterFunc(d time.Duration, f func()) (stop func() bool)
}

type wallClock struct{}

func (wallClock) Now() time.Time { return time.Now() }

func (wallClock) AfterFunc(d time.Duration, f func()) func() bool { return time.AfterFunc(d, f).Stop }

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
	// Clock paces the keep-alives and measures the lease's deadline; the
	// real time when nil.
	Clock Clock
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
	if opts.Clock == nil {
		opts.Clock = wallClock{}
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	p := &Presence{
		cli: cli, p: keys(opts.Prefix), self: self, ttl: ttl, timeout: opts.RequestTimeout, clock: opts.Clock, log: opts.Logger,
		changed: make(chan struct{}), lost: make(chan struct{}, 1), done: make(chan struct{}), stop: func() {},
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
		p.mu.Lock()
		p.until = time.Time{}
		p.mu.Unlock()
		return err
	}
	rctx, stop := context.WithCancel(context.Background())
	p.stop, p.done = stop, make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() { p.keep(rctx, lease) })
	wg.Go(func() { p.follow(rctx, rev) })
	go func() {
		wg.Wait()
		close(p.done)
	}()
	return nil
}

// daemons is the prefix of the daemons' keys; daemon, one daemon's.
func (k keys) daemons() string         { return string(k) + "daemons/" }
func (k keys) daemon(id string) string { return k.daemons() + id }

// Self returns this daemon's id.
func (p *Presence) Self() string { return p.self }

// Holds reports whether this daemon is sure it holds its lease now: etcd
// answered a keep-alive (or granted the lease) sent less than the lease's
// TTL, less a margin, ago. It is false from the moment it cannot be sure
// until it holds a new lease with its key bound to it; meanwhile another
// daemon may take its delegations over, so it must act as no delegation's
// owner.
func (p *Presence) Holds() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.holds()
}

// holds is Holds with p.mu held. The deadline passes when either clock
// says so: the monotonic one, which no change of the wall clock moves
// back, and the wall clock, which goes on while the machine sleeps (a
// laptop suspended), when the monotonic clock of Linux and macOS stops.
// A wall clock set forward only makes the daemon take a new lease early.
func (p *Presence) holds() bool {
	now := p.clock.Now()
	return p.deleted <= p.bound && now.Before(p.until) && now.Round(0).Before(p.until.Round(0))
}

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
// daemons (one joining or going), and when this daemon holds a lease again
// after Holds turned false: what it did not do meanwhile is to do.
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
	return Describe(p.cli.Endpoints(), p.timeout, op, err)
}

// holdMargin is how much sooner than etcd a Presence counts its lease
// expired: time for an owner's action that began just before the
// deadline (an append, an artifact's write) to end, and for clocks that
// run at slightly different rates. A fifth of the TTL: 3s of the default
// 15s, while keep-alives every third of the TTL leave the deadline at
// least 7s ahead when etcd answers.
func holdMargin(ttl time.Duration) time.Duration { return ttl / 5 }

// held records that etcd answered a request for the lease sent at sent,
// with the TTL it has left: this daemon holds it until sent + ttl, less
// the margin. bound, when not zero, is the revision at which the key was
// bound to the lease. The key may have gone since, and follow have seen it
// go before this call (a deletion committed between the binding and its
// answer): whether it is gone is told by revisions, never by the order in
// which the two goroutines learnt of them.
func (p *Presence) held(sent time.Time, ttl int64, bound int64) {
	d := time.Duration(ttl) * time.Second
	p.mu.Lock()
	defer p.mu.Unlock()
	was := p.holds()
	if bound != 0 {
		p.bound = bound
	}
	p.until = sent.Add(d - holdMargin(d))
	if !was && p.holds() {
		p.signal()
	}
}

// lease grants a new lease and binds this daemon's key to it; the daemon
// holds it from then on (Holds).
func (p *Presence) lease(ctx context.Context) (clientv3.LeaseID, error) {
	cctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	sent := p.clock.Now()
	g, err := p.cli.Grant(cctx, p.ttl)
	if err != nil {
		return 0, p.etcdErr("join the daemons on etcd: grant a lease", err)
	}
	host, _ := os.Hostname()
	put, err := p.cli.Put(cctx, p.p.daemon(p.self), fmt.Sprintf("pid %d on %s", os.Getpid(), host), clientv3.WithLease(g.ID))
	if err != nil {
		return 0, p.etcdErr("join the daemons on etcd: register "+p.p.daemon(p.self), err)
	}
	p.held(sent, g.TTL, put.Header.Revision)
	return g.ID, nil
}

// renew sends one keep-alive of lease; etcd's answer moves the deadline
// of Holds. It waits for the answer no longer than the keep-alives' pace,
// a third of the TTL, when that is less than the request timeout (a TTL of
// 2s, 5s): a later answer moves the deadline little or, past four fifths
// of the TTL, not at all, while it holds up the next keep-alive.
func (p *Presence) renew(ctx context.Context, lease clientv3.LeaseID) error {
	cctx, cancel := context.WithTimeout(ctx, min(p.timeout, p.every()))
	defer cancel()
	sent := p.clock.Now()
	resp, err := p.cli.KeepAliveOnce(cctx, lease)
	if err != nil {
		return err
	}
	p.held(sent, resp.TTL, 0)
	return nil
}

// every is the pace of the keep-alives, and of follow's retries: a third
// of the TTL.
func (p *Presence) every() time.Duration { return time.Duration(p.ttl) * time.Second / 3 }

// keep renews lease every third of its TTL, on the clock, until ctx ends.
// Once Holds is false (no answer in time, or the key went) the lease is
// given up for a new one, bound to the key as soon as etcd answers.
func (p *Presence) keep(ctx context.Context, lease clientv3.LeaseID) {
	every := p.every()
	for ctx.Err() == nil {
		if lease != 0 && !p.Holds() {
			p.log.Warn("not sure to hold the lease on etcd any more: acting as no delegation's owner until a new one is bound", "daemon", p.self)
			lease = 0
		}
		if lease == 0 {
			var err error
			if lease, err = p.lease(ctx); err != nil {
				p.log.Warn("no lease on etcd; retrying", "in", every, "err", err)
			} else {
				p.log.Info("took a new lease on etcd", "daemon", p.self)
			}
		} else if err := p.renew(ctx, lease); errors.Is(err, rpctypes.ErrLeaseNotFound) {
			p.drop()
			continue // it expired: a new one at once
		} else if err != nil && ctx.Err() == nil {
			p.log.Warn("etcd did not answer a keep-alive of the lease; retrying", "in", every, "err", p.etcdErr("renew the lease", err))
		}
		wake := make(chan struct{})
		stop := p.clock.AfterFunc(every, func() { close(wake) })
		select {
		case <-wake:
		case <-p.lost:
		case <-ctx.Done():
		}
		stop()
	}
}

// drop makes Holds false at once: the lease, or the key bound to it, is
// known gone.
func (p *Presence) drop() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.until = time.Time{}
}

// list reads the live daemons and returns the revision it read them at.
// This daemon's key missing there went at that revision or before, which
// is as much as follow, watching from there on, will ever learn of it.
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
	if !alive[p.self] {
		p.went(resp.Header.Revision)
	}
	p.signal()
	p.mu.Unlock()
	return resp.Header.Revision, nil
}

// signal wakes the waiters of Changed; p.mu is held.
func (p *Presence) signal() {
	close(p.changed)
	p.changed = make(chan struct{})
}

// went records, with p.mu held, that this daemon's key was deleted at
// revision rev (or found missing at rev, which it had left by then). Past
// its binding to the lease keep holds now, the key is gone: Holds is false
// until a binding at a later revision (one under way, as held will tell),
// and keep is woken to make one.
func (p *Presence) went(rev int64) {
	p.deleted = max(p.deleted, rev)
	if rev > p.bound {
		select {
		case p.lost <- struct{}{}:
		default:
		}
	}
}

// follow follows the daemons' keys from revision rev on, until ctx ends.
// When this daemon's own key goes (its lease expired, or someone deleted
// it) it wakes keep to bind the key to a new lease.
func (p *Presence) follow(ctx context.Context, rev int64) {
	retry := p.every()
	var wch clientv3.WatchChan
	for ctx.Err() == nil {
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
					if id == p.self {
						p.went(ev.Kv.ModRevision) // a deletion's revision
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
