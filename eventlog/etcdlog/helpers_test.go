package etcdlog

import (
	"context"
	"iter"
	"testing"
	"time"

	"github.com/delegations/delegations/eventlog"
	"github.com/delegations/delegations/eventlog/etcdlog/etcdtest"
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

var t0 = time.Date(2026, 11, 21, 10, 38, 45, 282_000_000, time.UTC)

func entry(kind uint16, payload string) eventlog.Entry {
	return eventlog.Entry{Kind: kind, Time: t0, Payload: []byte(payload)}
}

func mustAppend(t testing.TB, l *Log, a eventlog.Append) eventlog.Result {
	t.Helper()
	res, err := l.Append(context.Background(), a)
	if err != nil {
		t.Fatalf("Append(%q): %v", a.Stream, err)
	}
	return res
}

func collect(t testing.TB, l *Log, from uint64) []eventlog.Record {
	t.Helper()
	var out []eventlog.Record
	for r, err := range l.Records(from) {
		if err != nil {
			t.Fatalf("Records(%d): %v", from, err)
		}
		out = append(out, r)
	}
	return out
}

// checkContiguous checks that recs run from 1 without gaps.
func checkContiguous(t testing.TB, recs []eventlog.Record) {
	t.Helper()
	for i, r := range recs {
		if r.Seq != uint64(i+1) {
			t.Fatalf("record %d has sequence number %d", i+1, r.Seq)
		}
	}
}

// sharedLog is the method set both logs offer, the one the seam in
// eventlog will be an interface over; this fails to compile when either
// drifts.
type sharedLog interface {
	Append(context.Context, eventlog.Append) (eventlog.Result, error)
	Records(from uint64) iter.Seq2[eventlog.Record, error]
	Stream(stream string) ([]eventlog.Record, error)
	Last() uint64
	Wait(ctx context.Context, after uint64) (uint64, error)
	Close() error
}

var _ = []sharedLog{(*Log)(nil), (*eventlog.Log)(nil)}
