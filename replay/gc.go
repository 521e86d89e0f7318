package replay

import (
	"os"
	"runtime/debug"
)

// A replay allocates about half a kilobyte per event (the texts it
// decodes, most dropped a few events later) over a live heap of a few
// MiB, which the default collector (GOGC=100) goes through every few
// thousand events: at 1M events, a fifth of the replay's CPU. A process
// that does nothing but a replay (the CLI's replay, verify and timeline
// without a daemon) lets the heap grow to gcPercent/100+1 times the live
// one, under gcMemoryLimit, which keeps it bounded whatever the history
// holds (the collector works harder near the limit instead).
const (
	gcPercent     = 400
	gcMemoryLimit = 192 << 20
)

// TuneGC sets the garbage collector of a process that runs nothing but
// replays, unless the environment sets it (GOGC, GOMEMLIMIT). It returns
// what puts the settings back. Never in the daemon, whose heap is not
// the replay's.
func TuneGC() (restore func()) {
	if os.Getenv("GOGC") != "" || os.Getenv("GOMEMLIMIT") != "" {
		return func() {}
	}
	percent := debug.SetGCPercent(gcPercent)
	limit := debug.SetMemoryLimit(gcMemoryLimit)
	return func() {
		debug.SetGCPercent(percent)
		debug.SetMemoryLimit(limit)
	}
}
