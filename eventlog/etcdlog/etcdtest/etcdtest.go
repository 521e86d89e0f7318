// Package etcdtest starts an etcd cluster of embedded members inside a
// test process, listening on loopback ports, with data directories in the
// test's temporary directory: one member for most tests, three for the
// fault tests (stop one: service goes on; stop two: writes are refused).
package etcdtest

import (
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// Cluster is an etcd cluster of embedded members in the test process.
type Cluster struct {
	t       testing.TB
	cfgs    []*embed.Config
	mu      sync.Mutex
	members []*embed.Etcd   // nil while stopped
	closing []chan struct{} // closed once a stopped member has let go of its ports and files
}

// readyTimeout bounds a member's start: past it the test fails rather than
// hang.
const readyTimeout = 2 * time.Minute

// Start starts a cluster of n members and waits until every one has
// joined; the test's cleanup stops them.
func Start(t testing.TB, n int) *Cluster {
	t.Helper()
	return start(t, n, transport.TLSInfo{})
}

// StartTLS is Start with members that serve clients over TLS only, as
// tls says (https client URLs; with ClientCertAuth and TrustedCAFile, a
// client must present a certificate that CA signed). Members talk to
// each other in plain text, which is no concern of a client. Connect
// with the test's own client certificate: Client is for plain clusters.
func StartTLS(t testing.TB, n int, tls transport.TLSInfo) *Cluster {
	t.Helper()
	return start(t, n, tls)
}

func start(t testing.TB, n int, tls transport.TLSInfo) *Cluster {
	t.Helper()
	scheme := "http"
	if !tls.Empty() {
		scheme = "https"
	}
	ports := freePorts(t, 2*n)
	c := &Cluster{t: t, members: make([]*embed.Etcd, n), closing: make([]chan struct{}, n)}
	var initial []string
	for i := range n {
		initial = append(initial, fmt.Sprintf("m%d=http://127.0.0.1:%d", i, ports[2*i]))
	}
	dir := t.TempDir()
	for i := range n {
		cfg := embed.NewConfig()
		cfg.Name = fmt.Sprintf("m%d", i)
		cfg.Dir = filepath.Join(dir, cfg.Name)
		peer := url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", ports[2*i])}
		client := url.URL{Scheme: scheme, Host: fmt.Sprintf("127.0.0.1:%d", ports[2*i+1])}
		cfg.ClientTLSInfo = tls
		cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{peer}, []url.URL{peer}
		cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{client}, []url.URL{client}
		cfg.InitialCluster = strings.Join(initial, ",")
		cfg.InitialClusterToken = fmt.Sprintf("etcdlog-test-%d", ports[0])
		cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
		// Elections within a second on a loaded machine, without flapping.
		cfg.TickMs, cfg.ElectionMs = 50, 1000
		c.cfgs = append(c.cfgs, cfg)
	}
	t.Cleanup(c.stopAll)
	all := make([]int, n)
	for i := range all {
		all[i] = i
	}
	c.Start(all...)
	return c
}

// freePorts returns n loopback ports nothing listens on right now.
func freePorts(t testing.TB, n int) []int {
	t.Helper()
	var ls []net.Listener
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	for _, l := range ls {
		l.Close()
	}
	return ports
}

// Start starts the stopped members ids (all at once, since a restarted
// member is ready only with a quorum) and waits until each has joined.
func (c *Cluster) Start(ids ...int) {
	c.t.Helper()
	started := make([]*embed.Etcd, len(ids))
	errs := make([]error, len(ids))
	var wg sync.WaitGroup
	for j, i := range ids {
		c.mu.Lock()
		closing := c.closing[i]
		c.mu.Unlock()
		wg.Go(func() {
			if closing != nil {
				<-closing
			}
			e, err := embed.StartEtcd(c.cfgs[i])
			if err != nil {
				errs[j] = err
				return
			}
			started[j] = e
			select {
			case <-e.Server.ReadyNotify():
			case err := <-e.Err():
				errs[j] = err
			case <-time.After(readyTimeout):
				errs[j] = fmt.Errorf("not ready after %s", readyTimeout)
			}
		})
	}
	wg.Wait()
	c.mu.Lock()
	for j, i := range ids {
		c.members[i] = started[j]
	}
	c.mu.Unlock()
	for j, err := range errs {
		if err != nil {
			c.t.Fatalf("start etcd member %d: %v", ids[j], err)
		}
	}
}

// Stop stops member i at once, as a crash would: its Raft node stops
// without handing over leadership. Closing the rest (client connections,
// which etcd lets drain for up to its request timeout, 7s here) goes on in
// the background; start waits for it.
func (c *Cluster) Stop(i int) {
	c.mu.Lock()
	e := c.members[i]
	c.members[i] = nil
	c.mu.Unlock()
	if e == nil {
		return
	}
	e.Server.HardStop()
	done := make(chan struct{})
	c.mu.Lock()
	c.closing[i] = done
	c.mu.Unlock()
	go func() {
		defer close(done)
		e.Close()
	}()
}

func (c *Cluster) stopAll() {
	for i := range c.members {
		c.Stop(i)
	}
	for _, ch := range c.closing {
		if ch != nil {
			<-ch
		}
	}
}

// Endpoints returns the client URLs of members ids (all when none given).
func (c *Cluster) Endpoints(ids ...int) []string {
	if len(ids) == 0 {
		for i := range c.cfgs {
			ids = append(ids, i)
		}
	}
	var out []string
	for _, i := range ids {
		out = append(out, c.cfgs[i].AdvertiseClientUrls[0].String())
	}
	return out
}

// Client returns a client of members ids (all when none given), closed
// when the test ends.
func (c *Cluster) Client(ids ...int) *clientv3.Client {
	c.t.Helper()
	if !c.cfgs[0].ClientTLSInfo.Empty() {
		c.t.Fatal("etcdtest: Client connects in plain text, and this cluster serves TLS")
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   c.Endpoints(ids...),
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { cli.Close() })
	return cli
}
