package main

// Benchmarks of the daemon. Each measures its baseline in the same run,
// interleaved with the measured operation so that both see the same
// machine, and reports the ratio: compare ratios across machines, not
// absolute times. ns/op covers a whole iteration (both operations, and
// for the wake-up the complete call too); the reported metrics are the
// figures. Nothing here asserts on time.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptrace"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/delegations/delegations/cmd/delegations/api"
	"github.com/delegations/delegations/fsm"
	"github.com/delegations/delegations/projection"
)

// serveInProcess runs api.Serve on a fresh data directory in this process
// until the benchmark ends and returns a client of it.
func serveInProcess(b *testing.B) *api.Client {
	b.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan api.Status, 1)
	errc := make(chan error, 1)
	go func() {
		errc <- api.Serve(ctx, api.Config{DataDir: b.TempDir(), Ready: func(st api.Status) { ready <- st }})
	}()
	var st api.Status
	select {
	case st = <-ready:
	case err := <-errc:
		cancel()
		b.Fatalf("serve: %v", err)
	}
	c, err := api.Dial(ctx, st.Socket)
	if err != nil {
		cancel()
		b.Fatal(err)
	}
	b.Cleanup(func() {
		c.Close()
		cancel()
		if err := <-errc; err != nil {
			b.Errorf("serve: %v", err)
		}
	})
	return c
}

// mustCall runs a verb and stops the benchmark on an error.
func mustCall(b *testing.B, c *api.Client, verb string, req, resp any) {
	b.Helper()
	if err := c.Call(context.Background(), verb, req, resp); err != nil {
		b.Fatalf("%s: %v", verb, err)
	}
}

func micros(d time.Duration, n int) float64 { return float64(d.Microseconds()) / float64(n) }

// BenchmarkAPIRoundTrip: POST /v1/show over the unix socket through
// api.Client, against GET /v1/status on the same socket (a round trip
// that reads one counter) as the baseline. The ratio is what a verb costs
// beyond the HTTP exchange: decoding, a read transaction, encoding.
func BenchmarkAPIRoundTrip(b *testing.B) {
	c := serveInProcess(b)
	ctx := context.Background()
	var d fsm.Delegation
	mustCall(b, c, "register", registration("ses_root", "ses_parent", "benchmark"), &d)
	mustCall(b, c, "progress", api.ProgressRequest{ID: d.ID, Message: strings.Repeat("progress text ", 100)}, &d)

	var show, status time.Duration
	b.ResetTimer()
	for range b.N {
		t0 := time.Now()
		if _, err := c.Status(ctx); err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		var got fsm.Delegation
		if err := c.Call(ctx, "show", api.IDRequest{ID: d.ID}, &got); err != nil {
			b.Fatal(err)
		}
		t2 := time.Now()
		status += t1.Sub(t0)
		show += t2.Sub(t1)
	}
	b.StopTimer()
	b.ReportMetric(micros(show, b.N), "us/show")
	b.ReportMetric(micros(status, b.N), "us/status")
	b.ReportMetric(float64(show)/float64(status), "show/status")
}

// BenchmarkReadWakeup: a blocking read waits on a running delegation;
// another client completes it. Measured: from the complete call
// returning to the read returning (README "Benchmarks": the wake-up, here
// including the read's own durable commit). Baseline: a non-blocking read of a
// delegation already complete (the same work without the wait). Each
// iteration starts the clock only once the reader is parked in the
// store's wait, found in the goroutine dump (the daemon runs in process).
func BenchmarkReadWakeup(b *testing.B) {
	c := serveInProcess(b)
	ctx := context.Background()
	// The reader has a connection of its own, so the complete does not
	// wait for one.
	reader, err := api.Dial(ctx, c.Socket())
	if err != nil {
		b.Fatal(err)
	}
	defer reader.Close()
	var done fsm.Delegation
	mustCall(b, c, "register", registration("ses_root", "ses_parent", "baseline"), &done)
	mustCall(b, c, "complete", api.CompleteRequest{ID: done.ID, Result: "the baseline result"}, &done)

	var wakeup, baseline time.Duration
	early := 0 // reads that returned before the complete call did
	buf := make([]byte, 1<<20)
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		var d fsm.Delegation
		mustCall(b, c, "register", registration("ses_root", "ses_parent", "wake me"), &d)
		mustCall(b, c, "start", api.StartRequest{ID: d.ID}, &d)
		type answer struct {
			at  time.Time
			res projection.ReadResult
			err error
		}
		answers := make(chan answer, 1)
		sent := make(chan struct{})
		go func() {
			tctx := httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
				WroteRequest: func(httptrace.WroteRequestInfo) { close(sent) },
			})
			var a answer
			a.err = reader.Call(tctx, "read", api.ReadRequest{RootSessionID: "ses_root", ID: d.ID, WaitMs: 600_000}, &a.res)
			a.at = time.Now()
			answers <- a
		}()
		<-sent
		for !parkedInRead(buf) {
			runtime.Gosched()
		}
		b.StartTimer()

		var fin fsm.Delegation
		mustCall(b, c, "complete", api.CompleteRequest{ID: d.ID, Result: "the awaited result"}, &fin)
		completed := time.Now()
		a := <-answers
		if a.err != nil || !a.res.Artifact {
			b.Fatalf("blocking read: %+v %v", a.res, a.err)
		}
		if w := a.at.Sub(completed); w > 0 {
			wakeup += w
		} else {
			early++
		}

		t0 := time.Now()
		var res projection.ReadResult
		mustCall(b, c, "read", api.ReadRequest{RootSessionID: "ses_root", ID: done.ID}, &res)
		baseline += time.Since(t0)
	}
	b.StopTimer()
	b.ReportMetric(micros(wakeup, b.N), "us/wakeup")
	b.ReportMetric(micros(baseline, b.N), "us/read")
	b.ReportMetric(float64(wakeup)/float64(baseline), "wakeup/read")
	b.ReportMetric(float64(early)/float64(b.N), "early/op")
}

// parkedInRead reports whether a goroutine of this process is waiting
// inside a blocking read (for its delegation's watch, or the clock).
func parkedInRead(buf []byte) bool {
	n := runtime.Stack(buf, true)
	for g := range bytes.SplitSeq(buf[:n], []byte("\n\n")) {
		if bytes.Contains(g, []byte("projection.(*Store).awaitWatch(")) && bytes.Contains(g, []byte("[select")) {
			return true
		}
	}
	return false
}

// BenchmarkCLIThroughDaemon: the wall time of `delegations show ID` run as
// a process, through a daemon (the real binary, serving one data
// directory) against embedded (opening the log of an equivalent data
// directory itself), interleaved.
func BenchmarkCLIThroughDaemon(b *testing.B) {
	embedded, served := b.TempDir(), b.TempDir()
	register := func(data string) string {
		r := runBin(b, "", "--data", data, "register", "--root-session", "ses_root", "--parent-session", "ses_parent",
			"--agent", "researcher", "--project", "0123456789abcdef", "--prompt", "benchmark")
		if r.code != 0 {
			b.Fatalf("register: %+v", r)
		}
		return strings.TrimSpace(r.stdout)
	}
	embeddedID := register(embedded)
	startDaemon(b, served)
	servedID := register(served)

	show := func(data, id string) time.Duration {
		t0 := time.Now()
		r := runBin(b, "", "--data", data, "show", id)
		d := time.Since(t0)
		if r.code != 0 {
			b.Fatalf("show: %+v", r)
		}
		return d
	}
	var viaDaemon, alone time.Duration
	b.ResetTimer()
	for range b.N {
		viaDaemon += show(served, servedID)
		alone += show(embedded, embeddedID)
	}
	b.StopTimer()
	b.ReportMetric(micros(viaDaemon, b.N)/1000, "ms/daemon")
	b.ReportMetric(micros(alone, b.N)/1000, "ms/embedded")
	b.ReportMetric(float64(viaDaemon)/float64(alone), "daemon/embedded")
}

// BenchmarkHook measures `hook claude-code` as Claude Code runs it (a
// process per event, the event's JSON on stdin), through a daemon and
// opening the log itself, beside a trivial start of the same binary
// (`help`) and the CLI's `show` in the same set-up. SubagentStop of a
// known agent is the hot path (it fires after every agent turn: one
// active listing, one progress); SessionStart prints the block.
func BenchmarkHook(b *testing.B) {
	embedded, served, proj := b.TempDir(), b.TempDir(), b.TempDir()
	const session = "0b5e8a2c-6f0e-4c1a-9d55-6a3f2e1c7b90"
	launch := `{"hook_event_name":"PostToolUse","tool_name":"Agent","session_id":"` + session + `","tool_use_id":"toolu_1","cwd":"` + proj +
		`","tool_input":{"prompt":"benchmark","subagent_type":"Explore"},"tool_response":{"status":"async_launched","agentId":"a1"}}`
	stop := `{"hook_event_name":"SubagentStop","session_id":"` + session + `","agent_id":"a1","agent_type":"Explore","last_assistant_message":"still working"}`
	start := `{"hook_event_name":"SessionStart","source":"compact","session_id":"` + session + `"}`
	startDaemon(b, served)
	ids := map[string]string{}
	for _, data := range []string{embedded, served} {
		if r := runBin(b, launch, "--data", data, "hook", "claude-code"); r.code != 0 {
			b.Fatalf("PostToolUse: %+v", r)
		}
		r := runBin(b, "", "--data", data, "--json", "active", "--root-session", session)
		var res struct{ Delegations []struct{ ID string } }
		if err := json.Unmarshal([]byte(r.stdout), &res); err != nil || len(res.Delegations) != 1 {
			b.Fatalf("active: %+v %v", r, err)
		}
		ids[data] = res.Delegations[0].ID
	}
	timed := func(stdin string, args ...string) time.Duration {
		t0 := time.Now()
		r := runBin(b, stdin, args...)
		d := time.Since(t0)
		if r.code != 0 || (args[len(args)-1] == "claude-code" && stdin == start && !strings.Contains(r.stdout, "additionalContext")) {
			b.Fatalf("%v: %+v", args, r)
		}
		return d
	}
	var help, showD, showE, stopD, stopE, startD, startE time.Duration
	b.ResetTimer()
	for range b.N {
		help += timed("", "help")
		showD += timed("", "--data", served, "show", ids[served])
		showE += timed("", "--data", embedded, "show", ids[embedded])
		stopD += timed(stop, "--data", served, "hook", "claude-code")
		stopE += timed(stop, "--data", embedded, "hook", "claude-code")
		startD += timed(start, "--data", served, "hook", "claude-code")
		startE += timed(start, "--data", embedded, "hook", "claude-code")
	}
	b.StopTimer()
	for _, data := range []string{embedded, served} {
		if _, err := os.Stat(filepath.Join(data, hookLogName)); err == nil {
			b.Fatalf("the hooks logged errors in %s", data)
		}
	}
	ms := func(d time.Duration) float64 { return micros(d, b.N) / 1000 }
	b.ReportMetric(ms(help), "ms/help")
	b.ReportMetric(ms(stopD), "ms/SubagentStop-daemon")
	b.ReportMetric(ms(stopE), "ms/SubagentStop-embedded")
	b.ReportMetric(ms(startD), "ms/SessionStart-daemon")
	b.ReportMetric(ms(startE), "ms/SessionStart-embedded")
	b.ReportMetric(float64(stopD)/float64(help), "SubagentStop-daemon/help")
	b.ReportMetric(float64(stopD)/float64(showD), "SubagentStop-daemon/show-daemon")
	b.ReportMetric(float64(stopE)/float64(showE), "SubagentStop-embedded/show-embedded")
	b.ReportMetric(float64(startD)/float64(showD), "SessionStart-daemon/show-daemon")
}

// BenchmarkReadWakeup1000Socket: 1,000 blocking reads over the socket
// wait on one running delegation; another client completes it. Measured:
// for each read, from the complete call returning to the read's answer
// decoded by its client, as p50 and p99 (us/p50, us/p99). Baseline: the
// same with a single waiting read (us/single). Here the 1,000 answers
// (HTTP, JSON both ways, in this one process) dominate: see the api
// package's BenchmarkReadWakeup1000 for the wake-up itself.
func BenchmarkReadWakeup1000Socket(b *testing.B) {
	c := serveInProcess(b)
	ctx := context.Background()
	buf := make([]byte, 64<<20)
	// wake starts n blocking reads of a fresh running delegation, waits
	// until all are parked, completes it, and returns each read's delay.
	wake := func(n int) []time.Duration {
		var d fsm.Delegation
		mustCall(b, c, "register", registration("ses_root", "ses_parent", "wake us"), &d)
		mustCall(b, c, "start", api.StartRequest{ID: d.ID}, &d)
		at := make(chan time.Time, n)
		errs := make(chan error, n)
		for range n {
			go func() {
				var res projection.ReadResult
				err := c.Call(ctx, "read", api.ReadRequest{RootSessionID: "ses_root", ID: d.ID, WaitMs: 600_000}, &res)
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
		var fin fsm.Delegation
		mustCall(b, c, "complete", api.CompleteRequest{ID: d.ID, Result: "the awaited result"}, &fin)
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
	b.ReportMetric(micros(p50, b.N), "us/p50")
	b.ReportMetric(micros(p99, b.N), "us/p99")
	b.ReportMetric(micros(single, b.N), "us/single")
	b.ReportMetric(float64(p99)/float64(single), "p99/single")
}

// parkedReads counts the goroutines of this process waiting inside a
// blocking read (for its delegation's watch, or the clock).
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
