package api

import (
	"context"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime/pprof"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/delegations/delegations/eventlog"
	"github.com/delegations/delegations/eventlog/historytest"
	"github.com/delegations/delegations/fsm"
	"github.com/delegations/delegations/projection"
	"github.com/delegations/delegations/projection/artifact"
)

var (
	historyEvents  = flag.Int("history.events", 1_000_000, "events of history in BenchmarkLifecyclesHistory's large store")
	historyUniform = flag.Bool("history.uniform", false, "BenchmarkLifecyclesHistory's history ids drawn from the whole space, as stores written before the hour's adjective have them")
	historyKeys    = flag.String("history.keys", "", "BenchmarkLifecyclesHistory's registrations carry idempotency keys, in the history too, as a bridge writes them: opencode, claude, claude-session (the hooks' key before), or random (a random tool call id alone)")
)

// historyKey returns the idempotency key of registration n, made at at,
// under -history.keys:
//   - opencode: as the OpenCode plugin writes it, the id of the message
//     that made the tool call (OpenCode's message ids ascend with time)
//     and the call's id;
//   - claude: as Claude Code's hooks do, the session's start (the time of
//     its first registration here), its id (a session per 5
//     registrations) and the tool call's. It flatters: the history's
//     sessions register 30 s apart, and after the history the 16 clients
//     share the count, so a session's registrations come within
//     milliseconds, where a real session's come minutes apart among other
//     active sessions' (whose keys, led by recent starts, still land near
//     the index's end), and a session started days before it registers
//     (long-lived, resumed) takes its keys to older pages;
//   - claude-session: the session's id and the tool call's, as the hooks
//     wrote them in the release before;
//   - random: a tool call's id alone, as both bridges wrote it before;
//
// and "" without the flag.
func historyKey(at time.Time, n uint64) string {
	call := func() string { return fmt.Sprintf("%016x%016x", rand.Uint64(), rand.Uint64()) }
	switch *historyKeys {
	case "opencode":
		return fmt.Sprintf("opencode:msg_%012x%014x:call_%s", (at.UnixMilli()<<12)&(1<<48-1), rand.Uint64()>>8, call())
	case "claude", "claude-session":
		r := rand.New(rand.NewPCG(n/5, 0))
		session := fmt.Sprintf("%016x%016x", r.Uint64(), r.Uint64())
		if *historyKeys == "claude-session" {
			return fmt.Sprintf("claude:%s:toolu_%s", session, call())
		}
		// In the history a session's 5 registrations are historySpacing
		// apart; after it, they come as the clients make them.
		started := at.Add(-time.Duration(n%5) * historySpacing)
		if n >= liveRegistrations {
			v, _ := sessionStarts.LoadOrStore(n/5, at)
			started = v.(time.Time)
		}
		return fmt.Sprintf("claude:%s:%s:toolu_%s", started.UTC().Format("2006-01-02T15:04:05.000Z"), session, call())
	case "random":
		return "opencode:call_" + call()
	}
	return ""
}

// sessionStarts holds the start of each session of historyKey's claude
// model after the history: the time of its first registration.
var sessionStarts sync.Map

// historySpacing is the time between two registrations of the history;
// liveRegistrations numbers the first registration after it, for
// historyKey.
const (
	historySpacing    = 30 * time.Second
	liveRegistrations = 1 << 40
)

// registrations counts the benchmark's registrations after the history's,
// for historyKey.
var registrations atomic.Uint64

// historyParents are the parent sessions of BenchmarkLifecyclesHistory:
// each keeps one delegation running for the whole history, so its cycle
// never closes while registrations keep joining it.
var historyParents = []string{"ses_parentA", "ses_parentB", "ses_parentC"}

// BenchmarkLifecyclesHistory: is the lifecycle rate flat as history grows?
// Two daemons (api.Serve in process), each over its own store: one empty,
// one holding -history.events events (1M by default) of finished
// lifecycles in one root session, spread over 3 parent sessions whose
// cycles never close (each parent keeps a delegation running, in both
// stores). 16 clients per daemon run whole lifecycles (register, start, 3
// progress, complete, notifications, ack, read). b.N is rounds: in each,
// every client runs one lifecycle on the empty store, then one on the
// large store, so that the machine's load falls on both alike. The
// history is built once per process, before the timer, through the log
// in appends of one delegation's 9 events (its projector keeps the views;
// no artifact files are written for it), and copied for each run, out of
// the page cache (see historyStore): s/build says how long building took.
// The history's delegations were registered 30 s apart (38 days, more
// than the adjectives' cycle of 854 hours), their ids drawn as the store
// draws them (those of one hour share its adjective);
// -history.uniform draws them from the whole space, as in a store written
// before that (or imported from the plugin), whose trees keyed by id take
// each new id on a page no commit has touched for long. -history.keys
// gives every registration an idempotency key, in the history too, as a
// bridge writes it (see historyKey): the log's idempotency index, sorted
// by key, takes a random one anywhere.
//
// Metrics: lifecycles/s on each store and ratio(≥0.9) = large over empty;
// the process's CPU time per lifecycle on each (cpu-us/lifecycle-*, the
// clients' included; sys-us/lifecycle-* the kernel's part) and cpu-ratio =
// empty over large, which, unlike the rates, hardly moves with the
// machine's load; written-B/lifecycle-*, the bytes the process dirtied in
// the page cache (Linux counts whole folios: a page written in a large
// folio counts the folio, and fdatasync's CPU follows the folio's size).
func BenchmarkLifecyclesHistory(b *testing.B) {
	if testing.Short() {
		b.Skip("builds a store of -history.events events")
	}
	switch *historyKeys {
	case "", "opencode", "claude", "claude-session", "random":
	default:
		b.Fatalf("-history.keys %q: want opencode, claude, claude-session or random", *historyKeys)
	}
	const clients = 16
	emptyDir, largeDir := b.TempDir(), b.TempDir()
	build := historyStore(b, largeDir, *historyEvents)
	historyStore(b, emptyDir, 0)
	// The labels name each store's goroutines (the daemon's, inherited
	// from the goroutine that serves it, and the clients'), so that a
	// -cpuprofile splits by store: go tool pprof -tagfocus store=large.
	emptyCtx := pprof.WithLabels(context.Background(), pprof.Labels("store", "empty"))
	largeCtx := pprof.WithLabels(context.Background(), pprof.Labels("store", "large"))
	var empty, large []*Client
	pprof.Do(emptyCtx, pprof.Labels(), func(context.Context) { empty = historyClients(b, emptyDir, clients) })
	pprof.Do(largeCtx, pprof.Labels(), func(context.Context) { large = historyClients(b, largeDir, clients) })
	b.ResetTimer()
	var emptyTime, largeTime time.Duration
	var emptyUse, largeUse usage
	use0, useOK := processUsage()
	for range b.N {
		pprof.Do(emptyCtx, pprof.Labels(), func(context.Context) { emptyTime += runLifecycles(b, empty, 1) })
		use1, _ := processUsage()
		pprof.Do(largeCtx, pprof.Labels(), func(context.Context) { largeTime += runLifecycles(b, large, 1) })
		use2, _ := processUsage()
		emptyUse, largeUse, use0 = emptyUse.add(use1.sub(use0)), largeUse.add(use2.sub(use1)), use2
	}
	b.StopTimer()
	lifecycles := float64(clients * b.N)
	if useOK {
		b.ReportMetric(float64(emptyUse.cpu().Microseconds())/lifecycles, "cpu-us/lifecycle-empty")
		b.ReportMetric(float64(largeUse.cpu().Microseconds())/lifecycles, "cpu-us/lifecycle-large")
		b.ReportMetric(float64(emptyUse.sys.Microseconds())/lifecycles, "sys-us/lifecycle-empty")
		b.ReportMetric(float64(largeUse.sys.Microseconds())/lifecycles, "sys-us/lifecycle-large")
		b.ReportMetric(float64(emptyUse.written)/lifecycles, "written-B/lifecycle-empty")
		b.ReportMetric(float64(largeUse.written)/lifecycles, "written-B/lifecycle-large")
		b.ReportMetric(emptyUse.cpu().Seconds()/largeUse.cpu().Seconds(), "cpu-ratio")
	}
	b.ReportMetric(lifecycles/emptyTime.Seconds(), "lifecycles/s-empty")
	b.ReportMetric(lifecycles/largeTime.Seconds(), "lifecycles/s-large")
	b.ReportMetric(emptyTime.Seconds()/largeTime.Seconds(), "ratio(≥0.9)")
	b.ReportMetric(build.Seconds(), "s/build")
	b.ReportMetric(float64(*historyEvents), "events-large")
}

// usage is what a process has used: CPU time in user space and in the
// kernel, and the bytes it caused to be written to storage (Linux's
// /proc/self/io write_bytes; 0 elsewhere).
type usage struct {
	user, sys time.Duration
	written   int64
}

func (u usage) cpu() time.Duration { return u.user + u.sys }

func (u usage) add(v usage) usage {
	return usage{u.user + v.user, u.sys + v.sys, u.written + v.written}
}

func (u usage) sub(v usage) usage {
	return usage{u.user - v.user, u.sys - v.sys, u.written - v.written}
}

// historyClients serves dir and dials n clients to it.
func historyClients(b *testing.B, dir string, n int) []*Client {
	b.Helper()
	serveBench(b, dir)
	conns := make([]*Client, n)
	for i := range conns {
		cl, err := Dial(context.Background(), DefaultSocket(dir))
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { cl.Close() })
		conns[i] = cl
	}
	return conns
}

// runLifecycles has every client run n whole lifecycles under one of the
// history parents, and returns how long they took.
func runLifecycles(b *testing.B, conns []*Client, n int) time.Duration {
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make(chan error, len(conns))
	t0 := time.Now()
	for i, cl := range conns {
		parent := historyParents[i%len(historyParents)]
		wg.Go(func() {
			for range n {
				if err := lifecycle(ctx, cl, parent); err != nil {
					errs <- err
					return
				}
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

// lifecycle runs one delegation of root ses_root under parent from
// registration to its read.
func lifecycle(ctx context.Context, cl *Client, parent string) error {
	var d fsm.Delegation
	if err := cl.Call(ctx, "register", RegisterRequest{RootSessionID: "ses_root", ParentSessionID: parent, Agent: "researcher", ProjectID: "0123456789abcdef", Prompt: "Find the flaky test in the login flow.", IdempotencyKey: historyKey(time.Now(), liveRegistrations+registrations.Add(1))}, &d); err != nil {
		return err
	}
	if err := cl.Call(ctx, "start", StartRequest{ID: d.ID, SessionID: "ses_child"}, &d); err != nil {
		return err
	}
	for p := range 3 {
		if err := cl.Call(ctx, "progress", ProgressRequest{ID: d.ID, Message: fmt.Sprintf("step %d: reading the retry layer", p)}, &d); err != nil {
			return err
		}
	}
	if err := cl.Call(ctx, "complete", CompleteRequest{ID: d.ID, Result: "TestLock races the token refresh.", Title: "Flaky test", Description: "The refresh races the logout."}, &d); err != nil {
		return err
	}
	var ns Notifications
	if err := cl.Call(ctx, "notifications", NotificationsRequest{ParentSessionID: parent}, &ns); err != nil {
		return err
	}
	var ack projection.AckResult
	if err := cl.Call(ctx, "ack", AckRequest{ID: projection.TerminalNotificationID(d.ID)}, &ack); err != nil {
		return err
	}
	var rr projection.ReadResult
	return cl.Call(ctx, "read", ReadRequest{RootSessionID: "ses_root", ID: d.ID}, &rr)
}

// historyTemplates holds, per history size, a store built by buildHistory
// in a directory of its own, which TestMain removes: the benchmark runs
// more than once in a process (b.N = 1 first), and building a large
// store takes a while.
var historyTemplates = struct {
	sync.Mutex
	dirs  map[int]string
	build map[int]time.Duration
}{dirs: map[int]string{}, build: map[int]time.Duration{}}

// historyStore puts a store of events events of history (see
// buildHistory) in dir, a copy of one built once per process, and
// returns how long building it took.
func historyStore(b *testing.B, dir string, events int) time.Duration {
	b.Helper()
	historyTemplates.Lock()
	defer historyTemplates.Unlock()
	tmpl, ok := historyTemplates.dirs[events]
	if !ok {
		var err error
		if tmpl, err = os.MkdirTemp("", "lifecycles-history-"); err != nil {
			b.Fatal(err)
		}
		historyTemplates.dirs[events] = tmpl
		t0 := time.Now()
		buildHistory(b, tmpl, events)
		historyTemplates.build[events] = time.Since(t0)
	}
	src, err := os.Open(filepath.Join(tmpl, projection.LogFile))
	if err != nil {
		b.Fatal(err)
	}
	defer src.Close()
	dst, err := os.OpenFile(filepath.Join(dir, projection.LogFile), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		b.Fatal(err)
	}
	// The daemon opens the copy as it would open its own file after a
	// reboot: out of the page cache. The copy's cached pages are the
	// benchmark's, not the store's: the kernel may cache a copy in large
	// folios, which a commit writing one page of one marks dirty whole
	// (see eventlog's pageFile.mapFile), and no daemon's file is copied.
	if err := dst.Sync(); err != nil {
		b.Fatal(err)
	}
	if err := dropCache(dst); err != nil {
		b.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		b.Fatal(err)
	}
	return historyTemplates.build[events]
}

// removeHistoryTemplates removes what historyStore built.
func removeHistoryTemplates() {
	for _, dir := range historyTemplates.dirs {
		os.RemoveAll(dir)
	}
}

// buildHistory opens a store in dir, starts one delegation per history
// parent that stays running (so that its cycle never closes), then appends
// events/9 finished lifecycles of root ses_root (registered, started, 3
// progressed, completed, persisted, notified, read), each in one append,
// from 64 goroutines so that they share commits. It closes the store.
func buildHistory(b *testing.B, dir string, events int) {
	b.Helper()
	s, err := projection.Open(dir, projection.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	for _, p := range historyParents {
		d, err := s.Register(ctx, projection.Registration{ProjectID: "0123456789abcdef", RootSessionID: "ses_root", ParentSessionID: p, Agent: "researcher", Prompt: "Keep the cycle open.", Timeout: 24 * time.Hour})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := s.Start(ctx, d.ID, "ses_anchor"); err != nil {
			b.Fatal(err)
		}
	}
	n := events / 9
	// One registration every historySpacing: the history spans more than
	// a cycle of the adjectives' hours, as a store's does after a month of
	// heavy use, so that the hour's adjective holds ids of earlier cycles.
	start := time.Now().Add(-time.Duration(n) * historySpacing)
	at := func(i int) time.Time { return start.Add(time.Duration(i) * historySpacing) }
	gen := fsm.NewIDGenerator(rand.NewChaCha8([32]byte{13}))
	var ids []string
	if *historyUniform {
		ids = historytest.IDs(gen, n)
	} else if ids, err = historytest.IDsAt(gen, n, at); err != nil {
		b.Fatal(err)
	}
	err = historytest.Append(ctx, s.Log(), n, 64, func(i int) (eventlog.Append, error) {
		rel, err := artifact.RelPath("0123456789abcdef", "ses_root", ids[i])
		if err != nil {
			return eventlog.Append{}, err
		}
		events := historytest.Finished(fsm.Registration{ProjectID: "0123456789abcdef", RootSessionID: "ses_root", ParentSessionID: historyParents[i%len(historyParents)]},
			rel, projection.TerminalNotificationID(ids[i]))
		entries := historytest.Entries(ids[i], at(i), time.Millisecond, events)
		a := eventlog.Append{Stream: ids[i], Entries: entries, CheckVersion: true}
		if key := historyKey(at(i), uint64(i)); key != "" {
			a.Key = "register:" + key
		}
		return a, nil
	})
	if err != nil {
		b.Fatal(err)
	}
}
