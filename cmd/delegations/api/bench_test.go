package api

import (
	"bytes"
	"context"
	"fmt"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/delegations/delegations/projection"
)

// BenchmarkReadWakeup1000: 1,000 blocking reads (Service.Read, as the
// daemon runs them, without the socket) wait on one running delegation;
// another caller completes it. Measured: for each read, from the complete
// call returning (its commits and fsyncs done) to the read returning the
// artifact, as p50 and p99 (us/p50, us/p99). Baseline: a single waiting
// read (us/single), in the same run: mostly the durable commit of its read
// event, which 1,000 reads share too. us/p99-single is what the other 999
// waiters add (README "Benchmarks": the wake-up excluding fsync);
// p99/single ≈ 1 says a waiter's wake-up does not depend on how many
// others wait.
func BenchmarkReadWakeup1000(b *testing.B) {
	s, err := projection.Open(b.TempDir(), projection.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	svc := NewService(s)
	ctx := context.Background()
	buf := make([]byte, 32<<20)
	wake := func(n int) []time.Duration {
		d, err := svc.Register(ctx, RegisterRequest{RootSessionID: "ses_root", ParentSessionID: "ses_root", Agent: "a", ProjectID: "proj", Prompt: "wake us"})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := svc.Start(ctx, StartRequest{ID: d.ID}); err != nil {
			b.Fatal(err)
		}
		at := make(chan time.Time, n)
		errs := make(chan error, n)
		for range n {
			go func() {
				res, err := svc.Read(ctx, ReadRequest{RootSessionID: "ses_root", ID: d.ID, WaitMs: 600_000})
				if err == nil && !res.Artifact {
					err = fmt.Errorf("blocking read returned no artifact: %+v", res)
				}
				if err != nil {
					errs <- err
					return
				}
				at <- time.Now()
			}()
		}
		for parkedReads(buf) < n {
			runtime.Gosched()
		}
		if _, err := svc.Complete(ctx, CompleteRequest{ID: d.ID, Result: "the awaited result"}); err != nil {
			b.Fatal(err)
		}
		completed := time.Now()
		delays := make([]time.Duration, 0, n)
		for range n {
			select {
			case t := <-at:
				delays = append(delays, max(0, t.Sub(completed)))
			case err := <-errs:
				b.Fatal(err)
			}
		}
		slices.Sort(delays)
		return delays
	}
	const waiters = 1000
	var p50, p99, single time.Duration
	b.ResetTimer()
	for range b.N {
		one := wake(1)
		many := wake(waiters)
		single += one[0]
		p50 += many[waiters/2]
		p99 += many[waiters*99/100]
	}
	b.StopTimer()
	us := func(d time.Duration) float64 { return float64(d.Microseconds()) / float64(b.N) }
	b.ReportMetric(us(p50), "us/p50")
	b.ReportMetric(us(p99), "us/p99")
	b.ReportMetric(us(single), "us/single")
	b.ReportMetric(float64(p99)/float64(max(single, time.Microsecond)), "p99/single")
	// What the other 999 add, beyond the commit every read waits for.
	b.ReportMetric(us(p99-single), "us/p99-single")
}

// parkedReads counts the goroutines waiting inside a blocking read (for
// its delegation's watch, or the clock).
func parkedReads(buf []byte) int {
	n := runtime.Stack(buf, true)
	count := 0
	for g := range bytes.SplitSeq(buf[:n], []byte("\n\n")) {
		if bytes.Contains(g, []byte("projection.(*Store).awaitWatch(")) && bytes.Contains(g, []byte("[select")) {
			count++
		}
	}
	return count
}
