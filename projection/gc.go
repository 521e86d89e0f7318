package projection

import (
	"os"
	"runtime/debug"
)

// The garbage collector policy of a process that runs the store: the
// daemon, and the CLI's replay, verify and timeline without one. Both
// allocate much that dies young over a live heap of a few MiB (a
// lifecycle request a few dozen KiB of HTTP buffers, JSON and records; a
// replay about half a kilobyte per event). With Go's default (GOGC=100)
// the collector took a tenth of BenchmarkLifecycles' CPU and a fifth of a
// 1M-event replay's. A higher percent runs it a fifth as often; the soft
// limit keeps the heap well within the memory goal (README, issue 13: a
// resident process under 256 MiB), the collector running more often as
// the heap nears it.
const (
	gcPercent     = 400
	gcMemoryLimit = 128 << 20
)

// SetGCPolicy applies the policy to this process: gcPercent unless $GOGC
// is set, and gcMemoryLimit unless $GOMEMLIMIT is (the runtime has applied
// those already). It returns what restores the settings before it, for a
// test or benchmark that runs the store in process.
func SetGCPolicy() (restore func()) {
	var undo []func()
	if _, set := os.LookupEnv("GOGC"); !set {
		prev := debug.SetGCPercent(gcPercent)
		undo = append(undo, func() { debug.SetGCPercent(prev) })
	}
	if _, set := os.LookupEnv("GOMEMLIMIT"); !set {
		prev := debug.SetMemoryLimit(gcMemoryLimit)
		undo = append(undo, func() { debug.SetMemoryLimit(prev) })
	}
	return func() {
		for _, f := range undo {
			f()
		}
	}
}
