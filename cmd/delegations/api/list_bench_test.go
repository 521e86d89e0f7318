package api

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"math/rand/v2"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/delegations/delegations/eventlog"
	"github.com/delegations/delegations/eventlog/historytest"
	"github.com/delegations/delegations/fsm"
	"github.com/delegations/delegations/projection"
	"github.com/delegations/delegations/projection/artifact"
)

var listDelegations = flag.Int("list.delegations", 10_000, "delegations in the root BenchmarkList lists")

const (
	listRoot    = "ses_bigroot"
	listProject = "0123456789abcdef"
	listTarget  = 50 * time.Millisecond // issue 13: list of a 10,000-delegation root under 50 ms
)

// BenchmarkList: `list` of one root holding -list.delegations (10,000)
// finished delegations, each with a 1 KiB prompt, a 1 KiB progress text
// and an 8 KiB result, through the daemon's socket (api.Serve in process,
// api.Client decoding the answer), against `status` round trips on the
// same socket in the same run.
//
// Metrics: ms/list (the whole root, by id, as the CLI's text listing asks
// for it: textOnly), ms/list-time (the same by time), ms/list-records (by
// id with the summaries, left undecoded as the CLI's --json does),
// ms/list-decoded (every summary decoded into an fsm.Delegation, as a Go
// client of api.List pays), ms/page (limit 100 from the middle of the
// root, by id, with summaries), us/status; cpu-ms/list, the CPU time this
// process (server, client and garbage collector) spends on ms/list's
// listing, which other work on a shared machine inflates far less than
// the time it takes;
// MiB-alloc/list, what one whole listing allocates in this process
// (server and client: an upper bound of the peak it adds);
// ratio(≤1) = ms/list over the 50 ms goal; list/status.
//
// Building the root writes each delegation's lifecycle in one append from
// 64 goroutines (the store's projector builds the views), as
// compaction's benchmark does: about 20 s here.
func BenchmarkList(b *testing.B) {
	dir := b.TempDir()
	start := time.Now()
	buildListRoot(b, dir, *listDelegations)
	b.Logf("built a root of %d delegations in %v", *listDelegations, time.Since(start).Round(time.Millisecond))
	// Sub-benchmarks, so that the root is built once, not once per b.N.
	b.Run(fmt.Sprintf("in-process/delegations=%d", *listDelegations), func(b *testing.B) { benchListInProcess(b, dir) })
	c := serveBench(b, dir)
	b.Run(fmt.Sprintf("socket/delegations=%d", *listDelegations), func(b *testing.B) { benchList(b, c) })
}

// benchListInProcess: Service.List as a caller in the daemon's process
// (the status page) pays it, and Store.Summaries, the read transaction
// and decoding alone; ms/service and ms/store.
func benchListInProcess(b *testing.B, dir string) {
	s, err := projection.Open(dir, projection.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	svc := NewService(s)
	ctx := context.Background()
	var service, store time.Duration
	b.ResetTimer()
	for range b.N {
		t0 := time.Now()
		l, err := svc.List(ctx, ListRequest{RootSessionID: listRoot})
		if err != nil || len(l.Delegations) != *listDelegations {
			b.Fatalf("list: %d delegations, %v", len(l.Delegations), err)
		}
		t1 := time.Now()
		if _, err := s.Summaries(listRoot, projection.ListOptions{}); err != nil {
			b.Fatal(err)
		}
		service += t1.Sub(t0)
		store += time.Since(t1)
	}
	b.StopTimer()
	b.ReportMetric(float64(service.Microseconds())/1000/float64(b.N), "ms/service")
	b.ReportMetric(float64(store.Microseconds())/1000/float64(b.N), "ms/store")
}

func benchList(b *testing.B, c *Client) {
	ctx := context.Background()

	var first List
	if err := c.Call(ctx, "list", ListRequest{RootSessionID: listRoot, Limit: *listDelegations / 2}, &first); err != nil {
		b.Fatal(err)
	}
	middle := first.Next

	var list, listCPU, byTime, records, decode, page, status time.Duration
	var alloc uint64
	var ms runtime.MemStats
	b.ResetTimer()
	for range b.N {
		t0 := time.Now()
		if _, err := c.Status(ctx); err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		runtime.ReadMemStats(&ms)
		before := ms.TotalAlloc
		cpu0, _ := processCPU()
		t2 := time.Now()
		var all cliList
		if err := c.Call(ctx, "list", ListRequest{RootSessionID: listRoot, TextOnly: true}, &all); err != nil {
			b.Fatal(err)
		}
		t3 := time.Now()
		cpu1, _ := processCPU()
		listCPU += cpu1 - cpu0
		runtime.ReadMemStats(&ms)
		alloc += ms.TotalAlloc - before
		if n := strings.Count(all.Text, "\n- **"); n != *listDelegations || all.Next != "" {
			b.Fatalf("listed %d delegations (next %q), want %d", n, all.Next, *listDelegations)
		}
		t4 := time.Now()
		var timed cliList
		if err := c.Call(ctx, "list", ListRequest{RootSessionID: listRoot, Order: "time", TextOnly: true}, &timed); err != nil {
			b.Fatal(err)
		}
		t5 := time.Now()
		var raw cliList
		if err := c.Call(ctx, "list", ListRequest{RootSessionID: listRoot}, &raw); err != nil {
			b.Fatal(err)
		}
		t5r := time.Now()
		var decoded List
		if err := c.Call(ctx, "list", ListRequest{RootSessionID: listRoot}, &decoded); err != nil {
			b.Fatal(err)
		}
		if len(decoded.Delegations) != *listDelegations {
			b.Fatalf("decoded %d delegations, want %d", len(decoded.Delegations), *listDelegations)
		}
		t5d := time.Now()
		var p List
		if err := c.Call(ctx, "list", ListRequest{RootSessionID: listRoot, Limit: 100, After: middle}, &p); err != nil {
			b.Fatal(err)
		}
		t6 := time.Now()
		if len(p.Delegations) != 100 || p.Next == "" {
			b.Fatalf("page of %d delegations (next %q), want 100 and a next", len(p.Delegations), p.Next)
		}
		status += t1.Sub(t0)
		list += t3.Sub(t2)
		byTime += t5.Sub(t4)
		records += t5r.Sub(t5)
		decode += t5d.Sub(t5r)
		page += t6.Sub(t5d)
	}
	b.StopTimer()
	msOf := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 / float64(b.N) }
	b.ReportMetric(msOf(list), "ms/list")
	if _, ok := processCPU(); ok {
		b.ReportMetric(msOf(listCPU), "cpu-ms/list")
	}
	b.ReportMetric(msOf(byTime), "ms/list-time")
	b.ReportMetric(msOf(records), "ms/list-records")
	b.ReportMetric(msOf(decode), "ms/list-decoded")
	b.ReportMetric(msOf(page), "ms/page")
	b.ReportMetric(micros(status, b.N), "us/status")
	b.ReportMetric(float64(alloc)/float64(b.N)/(1<<20), "MiB-alloc/list")
	b.ReportMetric(float64(list)/float64(b.N)/float64(listTarget), "ratio(≤1)")
	b.ReportMetric(float64(list)/float64(max(status, 1)), "list/status")
}

// cliList is what the CLI's list decodes: the text it prints, and the
// records undecoded (--json prints them as they came).
type cliList struct {
	Delegations json.RawMessage `json:"delegations"`
	Text        string          `json:"text"`
	Next        string          `json:"next,omitempty"`
}

func micros(d time.Duration, n int) float64 { return float64(d.Microseconds()) / float64(n) }

// serveBench runs Serve on dir in this process until the benchmark ends
// and returns a client of it.
func serveBench(b *testing.B, dir string) *Client {
	b.Helper()
	b.Cleanup(projection.SetGCPolicy()) // the daemon's, as serve applies it
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan Status, 1)
	done := make(chan error, 1)
	go func() {
		done <- Serve(ctx, Config{DataDir: dir, Ready: func(st Status) { ready <- st }})
	}()
	var st Status
	select {
	case st = <-ready:
	case err := <-done:
		cancel()
		b.Fatalf("serve: %v", err)
	}
	c, err := Dial(ctx, st.Socket)
	if err != nil {
		cancel()
		b.Fatal(err)
	}
	b.Cleanup(func() {
		c.Close()
		cancel()
		if err := <-done; err != nil {
			b.Errorf("serve: %v", err)
		}
	})
	return c
}

// buildListRoot writes n finished delegations of listRoot into a store in
// dir, each in one append of the events its commands record (registered,
// started, progressed, completed, persisted, notified, and read for every
// other one), and closes the store. No artifact files are written: list
// never reads them.
func buildListRoot(b *testing.B, dir string, n int) {
	b.Helper()
	s, err := projection.Open(dir, projection.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	ids := historytest.IDs(fsm.NewIDGenerator(rand.NewChaCha8([32]byte{13})), n)
	text := func(what string, i, size int) string {
		line := fmt.Sprintf("%s of delegation %d: the retry layer races the token refresh; ", what, i)
		return strings.Repeat(line, size/len(line)+1)[:size]
	}
	t0 := time.Now().Add(-time.Duration(n) * time.Second)
	err = historytest.Append(context.Background(), s.Log(), n, 64, func(i int) (eventlog.Append, error) {
		events := []fsm.Event{
			{
				Kind: fsm.KindRegistered,
				Registration: fsm.Registration{
					ProjectID: listProject, RootSessionID: listRoot, ParentSessionID: listRoot,
					Agent: "researcher", Prompt: text("Prompt", i, 1<<10), Timeout: time.Hour,
				},
			},
			{Kind: fsm.KindStarted, Registration: fsm.Registration{SessionID: "ses_child"}},
			{Kind: fsm.KindProgressed, Message: text("Progress", i, 1<<10)},
			{Kind: fsm.KindCompleted, Result: text("Result", i, 8<<10), Title: fmt.Sprintf("Survey %d", i), Description: "Three login paths; the refresh races the logout."},
		}
		rel, err := artifact.RelPath(listProject, listRoot, ids[i])
		if err != nil {
			return eventlog.Append{}, err
		}
		events = append(events,
			fsm.Event{Kind: fsm.KindPersisted, ArtifactPath: rel, ArtifactSize: 9 << 10, ArtifactHash: 1},
			fsm.Event{Kind: fsm.KindNotified, NotificationID: projection.TerminalNotificationID(ids[i])})
		if i%2 == 0 {
			events = append(events, fsm.Event{Kind: fsm.KindRead})
		}
		entries := historytest.Entries(ids[i], t0.Add(time.Duration(i)*time.Second), time.Millisecond, events)
		return eventlog.Append{Stream: ids[i], Entries: entries, CheckVersion: true}, nil
	})
	if err != nil {
		b.Fatal(err)
	}
}
