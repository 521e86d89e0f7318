//go:build unix

package projection

import (
	"syscall"
	"time"
)

// processCPU returns the CPU time (user and system) this process has used:
// a call's CPU time, unlike its wall time, does not grow when other
// processes share the cores. ok is false where the platform does not tell.
func processCPU() (d time.Duration, ok bool) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, false
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), true
}
