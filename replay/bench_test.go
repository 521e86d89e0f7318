package replay

import (
	"context"
	"encoding/binary"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/metrics"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cespare/xxhash/v2"
	bolt "go.etcd.io/bbolt"

	"github.com/delegations/delegations/eventlog"
	"github.com/delegations/delegations/eventlog/historytest"
	"github.com/delegations/delegations/fsm"
	"github.com/delegations/delegations/projection"
	"github.com/delegations/delegations/projection/artifact"
)

// benchEvents is the size of the large store the benchmarks replay (1M by
// default); events=100000 is the cheap form for a quick run.
var (
	benchEvents = flag.Int("replay.events", 1_000_000, "events in the large store of BenchmarkReplay and BenchmarkVerify")
	benchStore  = flag.String("replay.store", "", "data directory of the large store, kept between runs (built there when it holds no log); default: a temporary one")
)

// prose is cut into the benchmark's texts, so that they are of realistic
// size and not all alike.
const prose = "Read the failing test and the code under it, bisect the recent changes, " +
	"and report which commit made TestLock flaky, with the evidence: the log lines, " +
	"the port it binds and the race the detector prints when it runs twenty times. "

func text(n, size int) string {
	var b strings.Builder
	b.Grow(size)
	fmt.Fprintf(&b, "%d: ", n)
	for b.Len() < size {
		b.WriteString(prose)
	}
	return b.String()[:size]
}

// benchHistory is one delegation's life, 9 events from registration to
// read, with texts of the sizes agents write (a 1.2 KB prompt, three
// progress notes of 300 bytes, a 1.5 KB result: about 0.4 KB per event),
// and its artifact as the store renders it.
func benchHistory(id string, n int, at time.Time) (entries []eventlog.Entry, rel string, file []byte) {
	root := fmt.Sprintf("ses_root%03d", n%100)
	rel, err := artifact.RelPath("0123456789abcdef", root, id)
	if err != nil {
		panic(err)
	}
	evs := []fsm.Event{
		{Kind: fsm.KindRegistered, Registration: fsm.Registration{ProjectID: "0123456789abcdef", RootSessionID: root,
			ParentSessionID: fmt.Sprintf("ses_parent%04d", n%1000), Agent: "researcher", Prompt: text(n, 1200), Timeout: fsm.DefaultTimeout}},
		{Kind: fsm.KindStarted, Registration: fsm.Registration{SessionID: fmt.Sprintf("ses_child%07d", n)}},
		{Kind: fsm.KindProgressed, Message: text(n+1, 300)},
		{Kind: fsm.KindProgressed, Message: text(n+2, 300)},
		{Kind: fsm.KindProgressed, Message: text(n+3, 300)},
		{Kind: fsm.KindCompleted, Result: text(n, 1500), Title: "TestLock races", Description: "TestLock races on a port"},
		{Kind: fsm.KindPersisted, ArtifactPath: rel},
		{Kind: fsm.KindNotified, NotificationID: projection.TerminalNotificationID(id)},
		{Kind: fsm.KindRead},
	}
	var d fsm.Delegation
	entries = make([]eventlog.Entry, len(evs))
	for i := range evs {
		at = at.Add(time.Second)
		e := &evs[i]
		e.ID, e.At = id, at
		if e.Kind == fsm.KindPersisted {
			file = artifact.Render(&d)
			e.ArtifactSize, e.ArtifactHash = int64(len(file)), xxhash.Sum64(file)
		}
		d = fsm.Evolve(d, *e)
		entries[i] = eventlog.Entry{Kind: uint16(e.Kind), Time: at, Payload: e.MarshalPayload()}
	}
	return entries, rel, file
}

// buildBenchStore writes a store of about events records in dir: the log
// with its views (the store's projector runs in each append, as in the
// daemon) and every artifact. Many goroutines append, so that group commit
// packs thousands of records into each commit. A store already there is
// kept (-replay.store).
func buildBenchStore(b *testing.B, dir string, events int) {
	b.Helper()
	path := filepath.Join(dir, projection.LogFile)
	if _, err := os.Stat(path); err == nil {
		return
	}
	l, err := eventlog.Open(path, eventlog.Options{Projectors: []eventlog.Projector{projection.ViewsProjector()}})
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	n := events / 9
	ids := historytest.IDs(fsm.NewIDGenerator(nil), n)
	t0 := time.Date(2026, 11, 21, 10, 0, 0, 0, time.UTC)
	err = historytest.Append(context.Background(), l, n, 64, func(i int) (eventlog.Append, error) {
		entries, rel, artifact := benchHistory(ids[i], i, t0.Add(time.Duration(i)*time.Millisecond))
		file := filepath.Join(dir, rel)
		if err := os.MkdirAll(filepath.Dir(file), 0o700); err != nil {
			return eventlog.Append{}, err
		}
		if err := os.WriteFile(file, artifact, 0o600); err != nil {
			return eventlog.Append{}, err
		}
		return eventlog.Append{Stream: ids[i], Entries: entries}, nil
	})
	if err != nil {
		b.Fatal(err)
	}
}

// bareScan walks the records with a bbolt cursor, no decoding: the floor
// under any replay. The eventlog's bucket of records is "events".
func bareScan(b *testing.B, path string) (records int, d time.Duration) {
	b.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	start := time.Now()
	var sum uint64
	err = db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket([]byte("events")).Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			sum += binary.BigEndian.Uint64(k) + uint64(len(v))
			records++
		}
		return nil
	})
	d = time.Since(start)
	if err != nil || sum == 0 {
		b.Fatal(err)
	}
	return records, d
}

// heapPeak samples the heap's live objects every millisecond until stop is
// called, which returns the largest sample.
func heapPeak() (stop func() uint64) {
	runtime.GC()
	sample := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	var peak atomic.Uint64
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(time.Millisecond)
		defer t.Stop()
		for {
			metrics.Read(sample)
			if v := sample[0].Value.Uint64(); v > peak.Load() {
				peak.Store(v)
			}
			select {
			case <-done:
				return
			case <-t.C:
			}
		}
	})
	return func() uint64 {
		close(done)
		wg.Wait()
		return peak.Load()
	}
}

// writer appends one progress event at a time, each its own commit and
// fsync as a command through the daemon, until stop is called, which
// returns the slowest append and how many there were.
func writer(b *testing.B, l *eventlog.Log, stream string) (stop func() (worst time.Duration, n int)) {
	ctx := context.Background()
	reg := fsm.Event{Kind: fsm.KindRegistered, Registration: fsm.Registration{ProjectID: "0123456789abcdef", RootSessionID: "ses_writer",
		ParentSessionID: "ses_writer", Agent: "researcher", Prompt: "write", Timeout: fsm.DefaultTimeout}}
	if _, err := l.Append(ctx, eventlog.Append{Stream: stream, Entries: []eventlog.Entry{{Kind: uint16(reg.Kind), Time: time.Now(), Payload: reg.MarshalPayload()}}}); err != nil {
		b.Fatal(err)
	}
	var quit atomic.Bool
	var worst time.Duration
	n := 0
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 0; !quit.Load(); i++ {
			ev := fsm.Event{Kind: fsm.KindProgressed, Message: text(i, 300)}
			start := time.Now()
			if _, err := l.Append(ctx, eventlog.Append{Stream: stream, Entries: []eventlog.Entry{{Kind: uint16(ev.Kind), Time: time.Now(), Payload: ev.MarshalPayload()}}}); err != nil {
				b.Error(err)
				return
			}
			worst = max(worst, time.Since(start))
			n++
		}
	})
	return func() (time.Duration, int) {
		quit.Store(true)
		wg.Wait()
		return worst, n
	}
}

// cpuTime returns the CPU time (user and system) the process has used: a
// run's CPU time, unlike its wall time, does not grow when other
// processes share the cores.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// pages returns the bytes the log's pages span (eventlog.Tx.Pages).
func pages(b *testing.B, l *eventlog.Log) int64 {
	var n int64
	if err := l.View(func(tx *eventlog.Tx) error { n = tx.Pages(); return nil }); err != nil {
		b.Fatal(err)
	}
	return n
}

// benchStores runs fn on the stores of each size: 100k events, and
// -replay.events.
func benchStores(b *testing.B, fn func(b *testing.B, dir string)) {
	if testing.Short() {
		b.Skip("builds a large store; run without -short")
	}
	sizes := []int{100_000}
	if *benchEvents != sizes[0] {
		sizes = append(sizes, *benchEvents)
	}
	for _, size := range sizes {
		b.Run(fmt.Sprintf("events=%d", size), func(b *testing.B) {
			dir := b.TempDir()
			if *benchStore != "" {
				dir = filepath.Join(*benchStore, fmt.Sprint(size))
			}
			buildBenchStore(b, dir, size)
			fn(b, dir)
		})
	}
}

// BenchmarkReplay runs Run, as the replay command does (its collector set
// by projection.SetGCPolicy), on a store of
// realistic texts with its views and artifacts, beside a bare cursor scan
// of the same file measured in the same run: events/s and the ratio to the
// scan, events per second of the process's CPU time (which other
// processes on the cores inflate less than the wall time), the artifacts
// checked per second, the bytes and objects allocated per event (which no
// load changes), the peak of the heap's live objects, and against a writer that
// appends one event per commit, its slowest append during a replay over
// its slowest alone (stall ratio) and how far the file's pages grew per
// append in each (eventlog.Tx.Pages: a reader that kept freed pages from
// reuse would make them grow beside it).
// The large size is -replay.events (1M by default); -short skips it.
func BenchmarkReplay(b *testing.B) {
	benchStores(b, func(b *testing.B, dir string) {
		defer eventlog.SetMappedBound(eventlog.CommandMappedBound)() // as the command runs it
		benchRun(b, dir, Run)
	})
}

// BenchmarkVerify is BenchmarkReplay for Verify, as the verify command
// runs it: the log's own checks, then the replay's checks without the
// lifecycle diagnoses.
func BenchmarkVerify(b *testing.B) {
	benchStores(b, func(b *testing.B, dir string) { benchRun(b, dir, Verify) })
}

func benchRun(b *testing.B, dir string, run func(context.Context, *eventlog.Log, string, Options) (*Report, error)) {
	ctx := context.Background()
	path := filepath.Join(dir, projection.LogFile)
	var scan time.Duration
	events := 0
	for i := range 3 {
		n, d := bareScan(b, path)
		if i == 0 || d < scan {
			scan, events = d, n
		}
	}
	l, err := eventlog.Open(path, eventlog.Options{Projectors: []eventlog.Projector{projection.ViewsProjector()}})
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	// The store is healthy: the findings are the parents' all-complete
	// notifications, which no bridge acknowledged, and the writers'
	// delegations, which never end.
	check := func(rep *Report) {
		bad := 0
		for _, f := range rep.Findings {
			if f.Code != CodeAllCompleteNotNotified && !strings.HasPrefix(f.Delegation, "bench-writer-") {
				bad++
			}
		}
		if bad != 0 || rep.ViewsChecked != (rep.Mode == ModeVerify) || int(rep.Events) < events {
			b.Fatalf("%d events, views checked %v, %d errors, %d warnings:\n%s", rep.Events, rep.ViewsChecked, rep.Errors, rep.Warnings, rep)
		}
	}

	defer projection.SetGCPolicy()() // as the command runs it
	peak := heapPeak()
	var mem0, mem1 runtime.MemStats
	runtime.ReadMemStats(&mem0)
	cpu0 := cpuTime(b)
	b.ResetTimer()
	for b.Loop() {
		rep, err := run(ctx, l, dir, Options{})
		if err != nil {
			b.Fatal(err)
		}
		check(rep)
	}
	cpu := (cpuTime(b) - cpu0) / time.Duration(b.N)
	runtime.ReadMemStats(&mem1)
	heap := peak()
	elapsed := b.Elapsed() / time.Duration(b.N)

	// The writer alone for as long as one run, then beside one.
	size := pages(b, l)
	stop := writer(b, l, fmt.Sprintf("bench-writer-%d", time.Now().UnixNano()))
	time.Sleep(elapsed)
	alone, nAlone := stop()
	grownAlone := pages(b, l) - size

	size = pages(b, l)
	stop = writer(b, l, fmt.Sprintf("bench-writer-%d", time.Now().UnixNano()))
	rep, err := run(ctx, l, dir, Options{})
	beside, nBeside := stop()
	if err != nil {
		b.Fatal(err)
	}
	check(rep)
	grownBeside := pages(b, l) - size

	perSec := float64(events) / elapsed.Seconds()
	scanPerSec := float64(events) / scan.Seconds()
	b.ReportMetric(perSec, "events/s")
	b.ReportMetric(float64(events)/cpu.Seconds(), "events/cpu-s")
	b.ReportMetric(float64(rep.Artifacts)/elapsed.Seconds(), "artifacts/s")
	b.ReportMetric(float64(mem1.TotalAlloc-mem0.TotalAlloc)/float64(b.N)/float64(events), "alloc-B/event")
	b.ReportMetric(float64(mem1.Mallocs-mem0.Mallocs)/float64(b.N)/float64(events), "allocs/event")
	b.ReportMetric(scanPerSec, "scan-events/s")
	b.ReportMetric(perSec/scanPerSec, "run/scan")
	b.ReportMetric(float64(heap)/(1<<20), "peak-heap-MiB")
	b.ReportMetric(float64(alone.Microseconds())/1000, "writer-worst-alone-ms")
	b.ReportMetric(float64(beside.Microseconds())/1000, "writer-worst-beside-ms")
	b.ReportMetric(float64(beside)/float64(alone), "stall-ratio")
	b.ReportMetric(float64(grownAlone)/float64(max(nAlone, 1)), "pages-growth-alone-B/append")
	b.ReportMetric(float64(grownBeside)/float64(max(nBeside, 1)), "pages-growth-beside-B/append")
	b.ReportMetric(float64(nAlone), "appends-alone")
	b.ReportMetric(float64(nBeside), "appends-beside")
	b.ReportMetric(0, "ns/op")
}
