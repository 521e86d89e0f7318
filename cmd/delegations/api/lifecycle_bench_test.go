package api

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/delegations/delegations/fsm"
	"github.com/delegations/delegations/projection"
)

// BenchmarkLifecycles: 64 clients, each on its own connection to one
// daemon (api.Serve in process), run whole lifecycles: register, start, 3
// progress, complete, notifications of its parent, ack, read (9 requests,
// 9 events: complete records its persisted event too). Baseline: the
// same 64 clients making as many `status` round trips, in the same run.
// Between the two, the same clients send only progress, each to a
// delegation of its own, as many requests: a small command that writes,
// cheaper than register or complete, beside lifecycles 8 of whose 9
// requests write. b.N is lifecycles per client.
//
// Metrics: requests/s and status-requests/s; ratio(≥0.5) = requests/s
// over status-requests/s (the end-to-end target); events/s (set beside
// the plain-file group commit of eventlog's BenchmarkConcurrentAppenders);
// ms/complete-p50 and ms/progress-p50 at 64 clients, and
// complete/progress(≤1.5). Where the platform tells it, the process's CPU
// time per request of each phase (cpu-us/request, cpu-us/status) and
// their ratio (cpu-ratio): what ratio would be on a machine where the CPU
// binds, measured without the noise of other loads. The progress phase:
// progress-only-requests/s, ratio-progress-only, cpu-us/progress-only,
// cpu-ratio-progress-only.
func BenchmarkLifecycles(b *testing.B) {
	const clients = 64
	dir := b.TempDir()
	serveBench(b, dir)
	socket := DefaultSocket(dir)
	ctx := context.Background()
	conns := make([]*Client, clients)
	for i := range conns {
		cl, err := Dial(ctx, socket)
		if err != nil {
			b.Fatal(err)
		}
		defer cl.Close()
		conns[i] = cl
	}
	run := func(f func(cl *Client, i int) error) time.Duration {
		var wg sync.WaitGroup
		errs := make(chan error, clients)
		t0 := time.Now()
		for i, cl := range conns {
			wg.Go(func() {
				if err := f(cl, i); err != nil {
					errs <- err
				}
			})
		}
		wg.Wait()
		d := time.Since(t0)
		close(errs)
		if err := <-errs; err != nil {
			b.Fatal(err)
		}
		return d
	}
	var mu sync.Mutex
	var completes, progresses []time.Duration
	b.ResetTimer()
	cpu0, cpuOK := processCPU()
	life := run(func(cl *Client, i int) error {
		parent := fmt.Sprintf("ses_parent%d", i%8)
		var cs, ps []time.Duration
		for range b.N {
			var d fsm.Delegation
			if err := cl.Call(ctx, "register", RegisterRequest{RootSessionID: "ses_root", ParentSessionID: parent, Agent: "researcher", ProjectID: "0123456789abcdef", Prompt: "Find the flaky test in the login flow."}, &d); err != nil {
				return err
			}
			if err := cl.Call(ctx, "start", StartRequest{ID: d.ID, SessionID: "ses_child"}, &d); err != nil {
				return err
			}
			for p := range 3 {
				t := time.Now()
				if err := cl.Call(ctx, "progress", ProgressRequest{ID: d.ID, Message: fmt.Sprintf("step %d: reading the retry layer", p)}, &d); err != nil {
					return err
				}
				ps = append(ps, time.Since(t))
			}
			t := time.Now()
			if err := cl.Call(ctx, "complete", CompleteRequest{ID: d.ID, Result: "TestLock races the token refresh.", Title: "Flaky test", Description: "The refresh races the logout."}, &d); err != nil {
				return err
			}
			cs = append(cs, time.Since(t))
			var ns Notifications
			if err := cl.Call(ctx, "notifications", NotificationsRequest{ParentSessionID: parent}, &ns); err != nil {
				return err
			}
			var ack projection.AckResult
			if err := cl.Call(ctx, "ack", AckRequest{ID: projection.TerminalNotificationID(d.ID)}, &ack); err != nil {
				return err
			}
			var rr projection.ReadResult
			if err := cl.Call(ctx, "read", ReadRequest{RootSessionID: "ses_root", ID: d.ID}, &rr); err != nil {
				return err
			}
		}
		mu.Lock()
		completes, progresses = append(completes, cs...), append(progresses, ps...)
		mu.Unlock()
		return nil
	})
	cpu1, _ := processCPU()
	// A small durable command, alone: each client's progress on a
	// delegation of its own, as many requests as its lifecycles made.
	ids := make([]string, clients)
	for i, cl := range conns {
		var d fsm.Delegation
		if err := cl.Call(ctx, "register", RegisterRequest{RootSessionID: "ses_root", ParentSessionID: "ses_floor", Agent: "researcher", ProjectID: "0123456789abcdef", Prompt: "Keep reporting."}, &d); err != nil {
			b.Fatal(err)
		}
		if err := cl.Call(ctx, "start", StartRequest{ID: d.ID, SessionID: "ses_child"}, &d); err != nil {
			b.Fatal(err)
		}
		ids[i] = d.ID
	}
	cpu2, _ := processCPU()
	progressOnly := run(func(cl *Client, i int) error {
		var d fsm.Delegation
		for p := range 9 * b.N {
			if err := cl.Call(ctx, "progress", ProgressRequest{ID: ids[i], Message: fmt.Sprintf("step %d: reading the retry layer", p)}, &d); err != nil {
				return err
			}
		}
		return nil
	})
	cpu3, _ := processCPU()
	status := run(func(cl *Client, _ int) error {
		for range 9 * b.N {
			if _, err := cl.Status(ctx); err != nil {
				return err
			}
		}
		return nil
	})
	cpu4, _ := processCPU()
	b.StopTimer()
	requests := float64(9 * b.N * clients)
	if cpuOK {
		// The process's CPU time per request, daemon and clients alike:
		// unlike the rates, it hardly moves with the machine's load.
		us := func(d time.Duration) float64 { return float64(d.Microseconds()) / requests }
		b.ReportMetric(us(cpu1-cpu0), "cpu-us/request")
		b.ReportMetric(us(cpu3-cpu2), "cpu-us/progress-only")
		b.ReportMetric(us(cpu4-cpu3), "cpu-us/status")
		b.ReportMetric(float64(cpu4-cpu3)/float64(cpu1-cpu0), "cpu-ratio")
		b.ReportMetric(float64(cpu4-cpu3)/float64(cpu3-cpu2), "cpu-ratio-progress-only")
	}
	b.ReportMetric(requests/life.Seconds(), "requests/s")
	b.ReportMetric(requests/progressOnly.Seconds(), "progress-only-requests/s")
	b.ReportMetric(requests/status.Seconds(), "status-requests/s")
	b.ReportMetric(status.Seconds()/life.Seconds(), "ratio(≥0.5)")
	b.ReportMetric(status.Seconds()/progressOnly.Seconds(), "ratio-progress-only")
	b.ReportMetric(float64(9*b.N*clients)/life.Seconds(), "events/s")
	slices.Sort(completes)
	slices.Sort(progresses)
	p50 := func(ds []time.Duration) float64 { return float64(ds[len(ds)/2].Microseconds()) / 1000 }
	b.ReportMetric(p50(completes), "ms/complete-p50")
	b.ReportMetric(p50(progresses), "ms/progress-p50")
	b.ReportMetric(p50(completes)/p50(progresses), "complete/progress(≤1.5)")
}
