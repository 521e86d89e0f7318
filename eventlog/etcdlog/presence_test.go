package etcdlog

import (
	"context"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
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
