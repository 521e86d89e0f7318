package replay

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
	"syscall"
	"testing"

	"github.com/delegations/delegations/eventlog"
	"github.com/delegations/delegations/projection"
)

var rssEvents = flag.Int("rss.events", 100_000, "events in the store of BenchmarkRSS (1000000 for the large one; kept under -replay.store)")

// rssGoal is issue 13's bound on the daemon's resident memory under any
// command.
const rssGoal = 256 << 20

// BenchmarkRSS measures the process's peak resident memory (VmHWM: heap
// and stacks, and the pages of the log and of the scratch file mapped in,
// which a user sees in top's RES) while it does what the daemon does for
// the long commands: open the store (a writable open walks every page of
// the file), verify, replay; and replay as the command runs it without a
// daemon (eventlog.CommandMappedBound). Each phase starts from the memory left after
// the previous one, returned to the system, with the peak reset
// (/proc/self/clear_refs); peak-rss-MiB is the largest, rss/256MiB its
// ratio to the goal. Linux only.
func BenchmarkRSS(b *testing.B) {
	if testing.Short() {
		b.Skip("builds a store; run without -short")
	}
	dir := b.TempDir()
	if *benchStore != "" {
		dir = filepath.Join(*benchStore, fmt.Sprint(*rssEvents))
	}
	buildBenchStore(b, dir, *rssEvents)
	ctx := context.Background()
	phases := []string{"open", "verify", "replay", "replay-command"}
	peaks := make([]int64, len(phases))
	for b.Loop() {
		var l *eventlog.Log
		for i, phase := range phases {
			debug.FreeOSMemory()
			if err := os.WriteFile("/proc/self/clear_refs", []byte("5"), 0); err != nil {
				b.Skipf("cannot reset the peak resident memory: %v", err)
			}
			var err error
			switch phase {
			case "open":
				l, err = eventlog.Open(filepath.Join(dir, projection.LogFile), eventlog.Options{Projectors: []eventlog.Projector{projection.ViewsProjector()}})
			case "verify":
				var rep *Report
				if rep, err = Verify(ctx, l, dir, Options{}); err == nil && !rep.ViewsChecked {
					err = fmt.Errorf("verify did not compare the views:\n%s", rep)
				}
			case "replay":
				_, err = Run(ctx, l, dir, Options{})
			case "replay-command": // as the command runs it without a daemon
				restore := eventlog.SetMappedBound(eventlog.CommandMappedBound)
				_, err = Run(ctx, l, dir, Options{})
				restore()
			}
			if err != nil {
				b.Fatal(err)
			}
			peaks[i] = max(peaks[i], peakRSS(b))
		}
		l.Close()
	}
	var peak int64
	for i, phase := range phases {
		b.ReportMetric(float64(peaks[i])/(1<<20), phase+"-peak-rss-MiB")
		peak = max(peak, peaks[i])
	}
	b.ReportMetric(float64(peak)/(1<<20), "peak-rss-MiB")
	b.ReportMetric(float64(peak)/rssGoal, "rss/256MiB(≤1)")
	b.ReportMetric(0, "ns/op")
}

// peakRSS is the process's peak resident memory in bytes: getrusage's
// maximum, which is VmHWM (reset by clear_refs) on Linux.
func peakRSS(b *testing.B) int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return ru.Maxrss << 10
}
