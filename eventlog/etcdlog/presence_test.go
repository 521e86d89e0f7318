package etcdlog

import (
	"context"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/delegations/delegations/eventlog/etcdlog/etcdtest"
	"github.com/delegations/delegations/projection/clocktest"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
)

// presenceWait bounds each wait for a change the test causes: a lease of
// two seconds expires well within it, even on a loaded machine.
const presenceWait = 30 * time.Second

func startPresence(t *testing.T, cli *clientv3.Client, self string) *Presence {
	t.Helper()
	p, err := NewPresence(cli, self, PresenceOptions{Prefix: "/p/", TTL: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// await waits until cond holds, woken by p's changes.
func await(t *testing.T, p *Presence, what string, cond func() bool) {
	t.Helper()
	timeout := time.After(presenceWait)
	for {
		ch := p.Changed()
		if cond() {
			return
		}
		select {
		case <-ch:
		case <-timeout:
			t.Fatalf("%s: not within %s", what, presenceWait)
		}
	}
}

// TestPresence: daemons see each other; one that stops renewing its lease
// is seen gone once it expires; one that loses its key (its lease expired
// while it could not renew it) takes a new lease by itself; one restarted
// under its id before its lease expired is never seen gone.
func TestPresence(t *testing.T) {
	c := startCluster(t, 1)
	cli := c.Client()
	a := startPresence(t, cli, "a")
	b := startPresence(t, cli, "b")
	await(t, a, "a sees b", func() bool { return a.Alive("b") })
	if !b.Alive("a") || !b.Alive("b") || b.Alive("c") {
		t.Fatalf("b sees a %v, b %v, c %v", b.Alive("a"), b.Alive("b"), b.Alive("c"))
	}

	for id, want := range map[string]bool{"a": true, "b": true, "c": false} {
		if got, err := a.Present(context.Background(), id); got != want || err != nil {
			t.Fatalf("a.Present(%s) = %v, %v; want %v", id, got, err, want)
		}
	}

	// b stops (as when killed): its key goes with its lease.
	b.Close()
	await(t, a, "a sees b gone", func() bool { return !a.Alive("b") })
	if got, err := a.Present(context.Background(), "b"); got || err != nil {
		t.Fatalf("a.Present(b) after b's key went: %v, %v", got, err)
	}

	// b restarts, then its key is deleted behind its back (as when its
	// lease expired): it binds it to a new lease at once.
	b = startPresence(t, cli, "b")
	await(t, a, "a sees b back", func() bool { return a.Alive("b") })
	if _, err := cli.Delete(context.Background(), "/p/daemons/b"); err != nil {
		t.Fatal(err)
	}
	await(t, b, "b present again, as b sees it", func() bool { return b.Alive("b") })
	await(t, a, "b present again, as a sees it", func() bool { return a.Alive("b") })

	// A restart within the TTL rebinds the key to the new lease: the old
	// lease's expiry does not delete it.
	b.Close()
	b = startPresence(t, cli, "b")
	ctx, cancel := context.WithTimeout(context.Background(), presenceWait)
	defer cancel()
	resp, err := cli.Get(ctx, "/p/daemons/b")
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("b's key: %v, %v", resp, err)
	}
	lease := clientv3.LeaseID(resp.Kvs[0].Lease)
	ttl, err := cli.TimeToLive(ctx, lease)
	if err != nil || ttl.TTL <= 0 {
		t.Fatalf("b's key is bound to lease %x, which is not alive: %+v, %v", lease, ttl, err)
	}
	if _, err := NewPresence(cli, "x/y", PresenceOptions{TTL: time.Second}); err == nil {
		t.Fatal("an id with a slash was accepted")
	}
	if _, err := NewPresence(cli, "x", PresenceOptions{TTL: time.Millisecond}); err == nil {
		t.Fatal("a TTL under a second was accepted")
	}
}

// partition is a dialer that cuts a client off from etcd and lets it back.
type partition struct {
	mu    sync.Mutex
	cut   bool
	conns []net.Conn
}

func (p *partition) dial(ctx context.Context, addr string) (net.Conn, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cut {
		return nil, errors.New("partitioned from etcd (test)")
	}
	conn, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
	if err == nil {
		p.conns = append(p.conns, conn)
	}
	return conn, err
}

// set cuts the client off (its connections close, new ones are refused)
// or lets it reconnect.
func (p *partition) set(cut bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = cut
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

// partitionedClient is a client of c whose connections p cuts; it retries
// a refused connection within half a second, so that a test sees it back
// soon after p lets it.
func partitionedClient(t *testing.T, c *etcdtest.Cluster) (*clientv3.Client, *partition) {
	p := &partition{}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   c.Endpoints(),
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
		DialOptions: []grpc.DialOption{
			grpc.WithContextDialer(p.dial),
			grpc.WithConnectParams(grpc.ConnectParams{
				Backoff:           backoff.Config{BaseDelay: 50 * time.Millisecond, Multiplier: 1.6, MaxDelay: 500 * time.Millisecond},
				MinConnectTimeout: time.Second,
			}),
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli, p
}

// TestPresenceFenced: a daemon cut off from etcd stops holding its lease,
// as far as it is concerned, while the others still see it alive, so that
// it stops acting as an owner before anyone can take its delegations
// over; once etcd answers again it takes a new lease, under its id. Its
// time is a manual clock, moved by the test: the keep-alives and the
// deadline follow it, while etcd counts the lease's 60 seconds in real
// time. The test tells them apart: had a's clock run at etcd's rate, a
// would have stopped holding its lease the time it held it on its clock
// after it last heard from etcd, and etcd's lease must outlive that.
func TestPresenceFenced(t *testing.T) {
	c := startCluster(t, 1)
	cli, cut := partitionedClient(t, c)
	ctx := context.Background()
	clk := clocktest.New(time.Date(2026, 11, 21, 10, 0, 0, 0, time.UTC))
	const ttl = 60 * time.Second
	every := ttl / 3
	a, err := NewPresence(cli, "a", PresenceOptions{Prefix: "/p/", TTL: ttl, RequestTimeout: time.Second, Clock: clk})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	b := startPresence(t, c.Client(), "b")
	await(t, b, "b sees a", func() bool { return b.Alive("a") })
	lease := func() clientv3.LeaseID {
		t.Helper()
		resp, err := c.Client().Get(ctx, "/p/daemons/a")
		if err != nil || len(resp.Kvs) != 1 {
			t.Fatalf("a's key: %v, %v", resp, err)
		}
		return clientv3.LeaseID(resp.Kvs[0].Lease)
	}
	first := lease()
	// step moves the clock to a's next keep-alive, due at next, and waits
	// until it has been answered or has failed (a's next one is then set).
	next := clk.Now().Add(every)
	step := func() {
		t.Helper()
		wctx, cancel := context.WithTimeout(ctx, presenceWait)
		defer cancel()
		if err := clk.AwaitTimer(wctx, next); err != nil {
			t.Fatalf("a's next keep-alive: %v", err)
		}
		clk.Advance(next.Sub(clk.Now()))
		next = next.Add(every)
		if err := clk.AwaitTimer(wctx, next); err != nil {
			t.Fatalf("a's keep-alive after the clock moved: %v", err)
		}
	}

	// Renewed, the lease holds past its first TTL.
	for range 4 {
		step()
	}
	if !a.Holds() {
		t.Fatalf("a does not hold its lease renewed every %s (%s after it took it)", every, 4*every)
	}

	// Cut off from etcd. The keep-alives go unanswered;
	// a holds its lease until its last answered one plus the TTL, less
	// the margin, then no more.
	heard := time.Now() // a's last answered keep-alive was sent before
	cut.set(true)
	last := clk.Now()
	step()
	step()
	held := ttl - holdMargin(ttl)
	clk.Advance(last.Add(held - 1).Sub(clk.Now()))
	if !a.Holds() {
		t.Fatalf("a gave up its lease %s after its last answered keep-alive, before %s", clk.Now().Sub(last), held)
	}
	clk.Advance(1)
	if a.Holds() {
		t.Fatalf("a still holds its lease %s after its last answered keep-alive", clk.Now().Sub(last))
	}
	// ... while etcd still counts it alive, no one can have taken its
	// delegations over: etcd's lease outlives the moment a stopped
	// holding it, a's span on its clock counted on etcd's from heard.
	asked := time.Now()
	ttlResp, err := c.Client().TimeToLive(ctx, first)
	if err != nil {
		t.Fatal(err)
	}
	expires := asked.Add(time.Duration(ttlResp.TTL) * time.Second) // TTL: whole seconds left, rounded down
	if stopped := heard.Add(held); !stopped.Before(expires) {
		t.Fatalf("a stopped holding its lease %s after it last heard from etcd, when etcd had expired it %s before (%ds left %s after)",
			held, stopped.Sub(expires), ttlResp.TTL, asked.Sub(heard))
	}
	step() // a's next keep-alive, which fails too

	// Back in reach: a binds its key to a new lease.
	cut.set(false)
	for deadline := time.Now().Add(presenceWait); !a.Holds(); step() {
		if time.Now().After(deadline) {
			t.Fatalf("a took no new lease within %s of etcd's return", presenceWait)
		}
	}
	if now := lease(); now == first {
		t.Fatalf("a's key is still bound to lease %x: a new one was wanted", first)
	}
	if ok, err := b.Present(ctx, "a"); !ok || err != nil {
		t.Fatalf("b does not see a back: %v, %v", ok, err)
	}
}

// putHook is a client's KV that calls next, once, after a Put of key has
// committed and before its caller learns it has: what etcd does between
// the two, the caller's other goroutines may see first.
type putHook struct {
	clientv3.KV
	key  string
	mu   sync.Mutex
	next func(put *clientv3.PutResponse)
}

func (k *putHook) Put(ctx context.Context, key, val string, opts ...clientv3.OpOption) (*clientv3.PutResponse, error) {
	resp, err := k.KV.Put(ctx, key, val, opts...)
	if err == nil && key == k.key {
		k.mu.Lock()
		next := k.next
		k.next = nil
		k.mu.Unlock()
		if next != nil {
			next(resp)
		}
	}
	return resp, err
}

// then sets the call after the next Put of the key.
func (k *putHook) then(next func(put *clientv3.PutResponse)) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.next = next
}

// TestPresenceDeletedWhileBinding: a daemon's key deleted after it bound
// it to a new lease and before it learnt it had (an operator's etcdctl
// del, the new lease revoked) is gone for it too, whichever of its
// goroutines learns of the deletion first: it holds no lease until it has
// bound its key again. Else it would go on acting as an owner with its
// key gone, the others taking its delegations over, and, its lease alive,
// its keep-alives would never tell it. The deletion is seen through the
// watch (a rebinding after a lapse, the watch already running) or through
// the listing that starts the watch (Start).
func TestPresenceDeletedWhileBinding(t *testing.T) {
	c := startCluster(t, 1)
	ctx := context.Background()
	const ttl = 60 * time.Second // etcd expires no lease while the test runs
	join := func(t *testing.T, self string) (*Presence, *clocktest.Clock, *putHook) {
		cli := c.Client()
		hook := &putHook{KV: cli.KV, key: "/p/daemons/" + self}
		cli.KV = hook
		clk := clocktest.New(time.Date(2026, 11, 21, 10, 0, 0, 0, time.UTC))
		p, err := NewPresence(cli, self, PresenceOptions{Prefix: "/p/", TTL: ttl, Clock: clk})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { p.Close() })
		return p, clk, hook
	}
	// del deletes p's key and returns the deletion's revision.
	del := func(t *testing.T, p *Presence) int64 {
		resp, err := c.Client().Delete(ctx, "/p/daemons/"+p.Self())
		if err != nil || resp.Deleted != 1 {
			t.Errorf("delete %s's key: %v, %v", p.Self(), resp, err)
			return 0
		}
		return resp.Header.Revision
	}
	// rebound waits until p holds a lease again and checks that its key
	// is there: present for the others.
	rebound := func(t *testing.T, p *Presence) {
		t.Helper()
		await(t, p, p.Self()+" holds a lease again", p.Holds)
		if ok, err := p.Present(ctx, p.Self()); !ok || err != nil {
			t.Fatalf("%s holds its lease while its key is gone (present %v, %v): the deletion was forgotten", p.Self(), ok, err)
		}
	}

	t.Run("watched", func(t *testing.T) {
		a, clk, hook := join(t, "a")
		if err := a.Start(ctx); err != nil {
			t.Fatal(err)
		}
		// a's key is deleted once a binds it to a new lease; a's watch
		// sees the deletion before a's binding returns.
		hook.then(func(put *clientv3.PutResponse) {
			if d := del(t, a); d <= put.Header.Revision {
				t.Errorf("deleted at revision %d, not after the binding at %d", d, put.Header.Revision)
			}
			timeout := time.After(presenceWait)
			for ch := a.Changed(); a.Alive("a"); ch = a.Changed() {
				select {
				case <-ch:
				case <-timeout:
					t.Errorf("a's watch did not see its key deleted within %s", presenceWait)
					return
				}
			}
		})
		// No keep-alive answered for a TTL: a takes a new lease.
		wctx, cancel := context.WithTimeout(ctx, presenceWait)
		defer cancel()
		if err := clk.AwaitTimer(wctx, clk.Now().Add(ttl/3)); err != nil {
			t.Fatalf("a's first keep-alive: %v", err)
		}
		clk.Advance(ttl)
		rebound(t, a)
	})

	t.Run("listed", func(t *testing.T) {
		b, _, hook := join(t, "b")
		// b's key is deleted once Start binds it, before Start lists the
		// daemons and starts watching.
		hook.then(func(*clientv3.PutResponse) { del(t, b) })
		if err := b.Start(ctx); err != nil {
			t.Fatal(err)
		}
		rebound(t, b)
	})
}
