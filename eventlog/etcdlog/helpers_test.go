package etcdlog

import (
	"context"
	"testing"

	"github.com/delegations/delegations/eventlog/etcdlog/etcdtest"
	"github.com/delegations/delegations/eventlog/eventlogtest"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// startCluster starts an embedded etcd cluster of n members for the test.
func startCluster(t testing.TB, n int) *etcdtest.Cluster { return etcdtest.Start(t, n) }

// open opens a Log on cli, closed when the test ends.
func open(t testing.TB, cli *clientv3.Client, opts Options) *Log {
	t.Helper()
	l, err := Open(context.Background(), cli, opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// The contract suite's helpers serve the other tests too.
var (
	t0              = eventlogtest.T0
	entry           = eventlogtest.Entry
	mustAppend      = eventlogtest.MustAppend
	collect         = eventlogtest.Collect
	checkContiguous = eventlogtest.CheckContiguous
	pattern         = eventlogtest.Pattern
)
