package api

import (
	"os"
	"runtime/debug"
)

// The daemon's garbage collector policy (SetGCPolicy). A lifecycle
// request allocates a few dozen KiB that die with it (HTTP buffers, JSON,
// records read through the views) over a live heap of a few MiB: with
// Go's default (GOGC=100) the collector ran about every 70 requests of
// BenchmarkLifecycles and took a tenth of the CPU, besides the assists it
// charges to the requests themselves. A higher percent runs it a fifth as
// often; the soft limit keeps what that lets the heap grow to well within
// the daemon's memory goal (README, issue 13: under 256 MiB), the
// collector running more often as the heap nears it.
const (
	daemonGCPercent   = 400
	daemonMemoryLimit = 128 << 20
)

// SetGCPolicy applies the daemon's garbage collector policy to this
// process: daemonGCPercent unless $GOGC is set, and daemonMemoryLimit
// unless $GOMEMLIMIT is (the runtime has applied those already). It
// returns what restores the settings before it, for a test or benchmark
// that serves in process.
func SetGCPolicy() (restore func()) {
	var undo []func()
	if _, set := os.LookupEnv("GOGC"); !set {
		prev := debug.SetGCPercent(daemonGCPercent)
		undo = append(undo, func() { debug.SetGCPercent(prev) })
	}
	if _, set := os.LookupEnv("GOMEMLIMIT"); !set {
		prev := debug.SetMemoryLimit(daemonMemoryLimit)
		undo = append(undo, func() { debug.SetMemoryLimit(prev) })
	}
	return func() {
		for _, f := range undo {
			f()
		}
	}
}
