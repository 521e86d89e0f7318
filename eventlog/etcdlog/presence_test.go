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
// deadline follow it, while etcd counts the lease's 60 seconds on its own.
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
	// step moves the clock to a's next keep-alive and waits until it has
	// been answered or has failed (a's next one is then set).
	step := func() {
		t.Helper()
		wctx, cancel := context.WithTimeout(ctx, presenceWait)
		defer cancel()
		if err := clk.AwaitTimer(wctx, clk.Now().Add(every)); err != nil {
			t.Fatalf("a's next keep-alive: %v", err)
		}
		clk.Advance(every)
		if err := clk.AwaitTimer(wctx, clk.Now().Add(every)); err != nil {
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
	cut.set(true)
	last := clk.Now()
	step()
	step()
	if !a.Holds() {
		t.Fatalf("a gave up its lease %s after its last keep-alive, before %s", 2*every, ttl-holdMargin(ttl))
	}
	step() // 60s after the last answer: past 48s
	if a.Holds() {
		t.Fatalf("a still holds its lease %s after its last answered keep-alive", clk.Now().Sub(last))
	}
	// ... while for the others its lease has not expired: no one can
	// have taken its delegations over.
	if ok, err := b.Present(ctx, "a"); !ok || err != nil {
		t.Fatalf("b sees a gone already (%v, %v): a stopped holding its lease too late", ok, err)
	}

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
