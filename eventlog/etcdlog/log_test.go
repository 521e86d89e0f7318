package etcdlog

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/delegations/delegations/eventlog"
)

func TestAppendRead(t *testing.T) {
	c := startCluster(t, 1)
	cli := c.Client()
	l := open(t, cli, Options{})
	res := mustAppend(t, l, eventlog.Append{Stream: "a", Entries: []eventlog.Entry{entry(1, "one"), entry(2, "two")}})
	if res != (eventlog.Result{First: 1, Last: 2, Version: 2}) {
		t.Fatalf("first append: %+v", res)
	}
	res = mustAppend(t, l, eventlog.Append{Stream: "b", Key: "k", Entries: []eventlog.Entry{entry(3, "three")}})
	if res != (eventlog.Result{First: 3, Last: 3, Version: 1}) {
		t.Fatalf("second append: %+v", res)
	}
	mustAppend(t, l, eventlog.Append{Stream: "a", Entries: []eventlog.Entry{entry(4, "")}})
	if l.Last() != 4 {
		t.Fatalf("Last = %d", l.Last())
	}
	check := func(l *Log) {
		recs := collect(t, l, 0)
		want := []struct {
			stream, payload, key string
			kind                 uint16
		}{{"a", "one", "", 1}, {"a", "two", "", 2}, {"b", "three", "k", 3}, {"a", "", "", 4}}
		if len(recs) != len(want) {
			t.Fatalf("%d records, want %d", len(recs), len(want))
		}
		checkContiguous(t, recs)
		for i, w := range want {
			r := recs[i]
			if r.Stream != w.stream || string(r.Payload) != w.payload || r.Key != w.key || r.Kind != w.kind || !r.Time.Equal(t0) {
				t.Fatalf("record %d = %+v, want %+v", i+1, r, w)
			}
		}
		a, err := l.Stream("a")
		if err != nil {
			t.Fatal(err)
		}
		if len(a) != 3 || a[0].Seq != 1 || a[1].Seq != 2 || a[2].Seq != 4 || !bytes.Equal(a[1].Payload, []byte("two")) {
			t.Fatalf("Stream(a) = %+v", a)
		}
		if s, err := l.Stream("none"); err != nil || len(s) != 0 {
			t.Fatalf("Stream(none) = %v, %v", s, err)
		}
	}
	check(l)
	l.Close()
	// Another Log on the same prefix sees the same log and goes on from it.
	l2 := open(t, cli, Options{})
	if l2.Last() != 4 {
		t.Fatalf("reopened Last = %d", l2.Last())
	}
	check(l2)
	res = mustAppend(t, l2, eventlog.Append{Stream: "a", Entries: []eventlog.Entry{entry(5, "")}})
	if res != (eventlog.Result{First: 5, Last: 5, Version: 4}) {
		t.Fatalf("append after reopen: %+v", res)
	}
	// A Log under another prefix is another log.
	other := open(t, cli, Options{Prefix: "/other/"})
	if other.Last() != 0 {
		t.Fatalf("other prefix Last = %d", other.Last())
	}
	if recs := collect(t, other, 0); len(recs) != 0 {
		t.Fatalf("other prefix holds %d records", len(recs))
	}
}

// TestWatchAfterCompaction: a watch that resumes from a revision etcd has
// compacted reads the head instead, and Wait still learns of the records.
func TestWatchAfterCompaction(t *testing.T) {
	c := startCluster(t, 1)
	cli := c.Client()
	a := open(t, cli, Options{})
	b := open(t, cli, Options{})
	// Stop b's watch, as a disconnect would, while a appends.
	b.stopWatch()
	<-b.watchDone
	for range 5 {
		mustAppend(t, a, eventlog.Append{Stream: "s", Entries: []eventlog.Entry{entry(1, "")}})
	}
	resp, err := cli.Get(context.Background(), "/delegations/head")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Compact(context.Background(), resp.Header.Revision); err != nil {
		t.Fatal(err)
	}
	if b.Last() != 0 {
		t.Fatalf("b saw %d records without a watch", b.Last())
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		b.watch(ctx, 2) // compacted
	}()
	// A liveness bound: without the compaction handled the watch retries
	// the compacted revision forever.
	wctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if last, err := b.Wait(wctx, 4); err != nil || last != 5 {
		t.Fatalf("Wait after compaction = %d, %v", last, err)
	}
	mustAppend(t, a, eventlog.Append{Stream: "s", Entries: []eventlog.Entry{entry(1, "")}})
	if last, err := b.Wait(wctx, 5); err != nil || last != 6 {
		t.Fatalf("Wait after the watch resumed = %d, %v", last, err)
	}
	stop()
	<-done
}

// Describe: etcd's own deadline is ErrUnavailable, naming the endpoints
// and what to check; the caller's cancellation stays context.Canceled; a
// refusal keeps its error.
func TestDescribe(t *testing.T) {
	eps := []string{"http://10.0.0.1:2379", "http://10.0.0.2:2379"}
	refused := errors.New("etcdserver: permission denied")
	for _, c := range []struct {
		err  error
		is   error
		not  error
		want string
	}{
		{fmt.Errorf("get: %w", context.DeadlineExceeded), ErrUnavailable, context.DeadlineExceeded, "no answer within 2s from http://10.0.0.1:2379,http://10.0.0.2:2379"},
		{context.Canceled, context.Canceled, eventlog.ErrUnavailable, "read the head: context canceled"},
		{refused, refused, eventlog.ErrUnavailable, "etcd refused: etcdserver: permission denied"},
	} {
		err := Describe(eps, 2*time.Second, "read the head", c.err)
		if !errors.Is(err, c.is) || errors.Is(err, c.not) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Describe(%v) = %v: want it to match %v, not %v, and say %q", c.err, err, c.is, c.not, c.want)
		}
	}
}
