package etcdlog

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/delegations/delegations/eventlog"
)

// answerBound is how long the fault test waits for an append that must
// fail, past its RequestTimeout: a liveness bound, so that a hang fails the
// test instead of stalling it.
const answerBound = time.Minute

// TestFaults runs a log on a three-member cluster through member failures:
//
//   - a tail on one member: that member stops, others append, it restarts,
//     and the tail goes on without skipping or repeating a record;
//   - one member of three down: appends go on;
//   - two down: appends fail with ErrUnavailable within their deadline, and
//     so does Open; after the members restart the log is contiguous, every
//     acknowledged append is there, and every failed one is either wholly
//     there or wholly absent (its retry, with the same key, tells).
func TestFaults(t *testing.T) {
	start := time.Now()
	phase := func(name string) { t.Logf("%6.2fs %s", time.Since(start).Seconds(), name) }
	c := startCluster(t, 3)
	phase("cluster up")
	opts := Options{RequestTimeout: 2 * time.Second}
	w := open(t, c.Client(), opts)
	tl := open(t, c.Client(2), opts)

	ctx, stopTail := context.WithCancel(context.Background())
	defer stopTail()
	tailed := make(chan eventlog.Record, 1024)
	tailErr := make(chan error, 1)
	go func() {
		defer close(tailed)
		for r, err := range tl.Tail(ctx, 1) {
			if err != nil {
				tailErr <- err
				return
			}
			tailed <- r
		}
	}()
	next := uint64(1)
	expectTail := func(last uint64) {
		t.Helper()
		for ; next <= last; next++ {
			select {
			case r, ok := <-tailed:
				if !ok {
					t.Fatalf("tail ended before record %d: %v", next, <-tailErr)
				}
				if r.Seq != next {
					t.Fatalf("tail yielded record %d, want %d", r.Seq, next)
				}
			case <-time.After(answerBound):
				t.Fatalf("tail did not yield record %d", next)
			}
		}
	}

	type ack struct {
		key string
		res eventlog.Result
	}
	var acked []ack
	n := 0
	// appendOK appends under a new key, retrying (same key) while etcd
	// elects a leader; with a quorum up it must succeed.
	appendOK := func() {
		t.Helper()
		n++
		key := fmt.Sprintf("k%d", n)
		a := eventlog.Append{Stream: fmt.Sprintf("s%d", n%5), Key: key, Entries: []eventlog.Entry{entry(1, key), entry(2, key)}}
		var err error
		for range 10 {
			var res eventlog.Result
			if res, err = w.Append(context.Background(), a); err == nil {
				acked = append(acked, ack{key, res})
				return
			}
			if !errors.Is(err, ErrUnavailable) {
				break
			}
		}
		t.Fatalf("append %s with a quorum up: %v", key, err)
	}

	for range 10 {
		appendOK()
	}
	expectTail(w.Last())

	// The tail's member stops; the others go on; it comes back.
	phase("tail caught up")
	c.Stop(2)
	phase("member 2 stopped")
	for range 10 {
		appendOK()
	}
	phase("appended")
	c.Start(2)
	phase("member 2 started")
	for range 5 {
		appendOK()
	}
	expectTail(w.Last())

	// One member of three down: appends continue.
	phase("tail resumed")
	c.Stop(0)
	phase("member 0 stopped")
	for range 10 {
		appendOK()
	}
	expectTail(w.Last())

	// Two down: appends fail with ErrUnavailable, within their deadline.
	phase("one member down")
	c.Stop(1)
	phase("member 1 stopped")
	type failed struct {
		a   eventlog.Append
		err error
	}
	results := make(chan failed, 4)
	for i := range 4 {
		key := fmt.Sprintf("lost%d", i)
		a := eventlog.Append{Stream: fmt.Sprintf("s%d", i), Key: key, Entries: []eventlog.Entry{entry(1, key), entry(2, key)}}
		go func() {
			_, err := w.Append(context.Background(), a)
			results <- failed{a, err}
		}()
	}
	var lost []eventlog.Append
	for range 4 {
		select {
		case f := <-results:
			if !errors.Is(f.err, ErrUnavailable) {
				t.Fatalf("append without a quorum: %v, want ErrUnavailable", f.err)
			}
			if len(lost) == 0 {
				t.Logf("append without a quorum: %v", f.err)
			}
			lost = append(lost, f.a)
		case <-time.After(answerBound):
			t.Fatal("an append without a quorum got no answer")
		}
	}
	if _, err := Open(context.Background(), c.Client(2), Options{RequestTimeout: time.Second}); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Open without a quorum: %v, want ErrUnavailable", err)
	} else {
		t.Logf("Open without a quorum: %v", err)
	}

	c.Start(0, 1)
	phase("two members down")
	// The failed appends, retried with their keys: each is written once.
	for _, a := range lost {
		var res eventlog.Result
		var err error
		for range 10 {
			if res, err = w.Append(context.Background(), a); !errors.Is(err, ErrUnavailable) {
				break
			}
		}
		if err != nil {
			t.Fatalf("retry of %s: %v", a.Key, err)
		}
		if res.Duplicate {
			t.Logf("%s: the attempt without a quorum was written once the members came back", a.Key)
		}
		acked = append(acked, ack{a.Key, res})
	}
	for range 5 {
		appendOK()
	}
	expectTail(w.Last())

	recs := collect(t, w, 0)
	phase("restarted")
	checkContiguous(t, recs)
	if want := 2 * len(acked); len(recs) != want {
		t.Fatalf("log holds %d records, want %d (two per key)", len(recs), want)
	}
	for _, a := range acked {
		for seq := a.res.First; seq <= a.res.Last; seq++ {
			if r := recs[seq-1]; r.Key != a.key || string(r.Payload) != a.key {
				t.Fatalf("%s acknowledged at %d, which holds %q", a.key, seq, r.Payload)
			}
		}
	}
	total := 0
	for i := range 5 {
		s, err := w.Stream(fmt.Sprintf("s%d", i))
		if err != nil {
			t.Fatal(err)
		}
		total += len(s)
	}
	if total != len(recs) {
		t.Fatalf("streams hold %d records, the log %d", total, len(recs))
	}
	stopTail()
	for range tailed {
	}
}

// TestAppendsAnsweredAcrossClose: Close answers every append in flight.
func TestAppendsAnsweredAcrossClose(t *testing.T) {
	c := startCluster(t, 1)
	l := open(t, c.Client(), Options{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	ok := 0
	for i := range 32 {
		wg.Go(func() {
			for j := 0; ; j++ {
				_, err := l.Append(context.Background(), eventlog.Append{Stream: fmt.Sprint(i), Entries: []eventlog.Entry{entry(1, "")}})
				if errors.Is(err, eventlog.ErrClosed) {
					return
				}
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				ok++
				mu.Unlock()
			}
		})
	}
	if _, err := l.Wait(context.Background(), 100); err != nil {
		t.Fatal(err)
	}
	l.Close()
	wg.Wait()
	l2 := open(t, c.Client(), Options{})
	if got := len(collect(t, l2, 0)); got != ok {
		t.Fatalf("log holds %d records, %d appends acknowledged", got, ok)
	}
}

// TestCancelledAppend checks the hand-off between an appender whose context
// ends and the writer: either nothing is written and the caller gets the
// context error, or the append is written and acknowledged. Never both,
// never neither. Chunks of the appends not written are deleted.
func TestCancelledAppend(t *testing.T) {
	c := startCluster(t, 1)
	cli := c.Client()
	l := open(t, cli, Options{})
	var acked int
	big := pattern(1<<20, 1)
	for i := range 100 {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		var res eventlog.Result
		var err error
		payload := []byte(fmt.Sprint(i))
		if i%5 == 0 {
			payload = big
		}
		go func() {
			res, err = l.Append(ctx, eventlog.Append{Stream: "s", Key: fmt.Sprint("k", i), Entries: []eventlog.Entry{{Kind: 1, Time: t0, Payload: payload}}})
			close(done)
		}()
		if i%2 == 0 {
			cancel()
		} else {
			// Let the writer take it up first, sometimes.
			_, _ = l.Wait(ctx, uint64(acked))
			cancel()
		}
		<-done
		if err == nil {
			acked++
			if res.Duplicate {
				t.Fatalf("append %d reported duplicate", i)
			}
		} else if !errors.Is(err, context.Canceled) {
			t.Fatalf("append %d: %v", i, err)
		}
	}
	// A barrier append: every claimed request has committed before it.
	mustAppend(t, l, eventlog.Append{Stream: "barrier", Entries: []eventlog.Entry{entry(1, "")}})
	if got := int(l.Last()) - 1; got != acked {
		t.Fatalf("log holds %d appends, %d were acknowledged", got, acked)
	}
	if got := len(collect(t, l, 0)); got != acked+1 {
		t.Fatalf("Records reads %d, want %d", got, acked+1)
	}
	// Every chunk left belongs to a written record.
	written := int64(0)
	for _, r := range collect(t, l, 0) {
		if len(r.Payload) == len(big) {
			written += 2 // 1 MiB in chunks of 768 KiB
		}
	}
	t.Logf("%d of 100 appends acknowledged, %d chunks", acked, written)
	if got := countChunks(t, cli); got != written {
		t.Fatalf("%d chunks stored, the written records hold %d", got, written)
	}
}
