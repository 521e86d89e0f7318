//go:build unix

package api

import (
	"bytes"
	"os"
	"strconv"
	"syscall"
	"time"
)

// processCPU returns the CPU time (user and system) this process has used,
// and whether the platform tells it.
func processCPU() (time.Duration, bool) {
	u, ok := processUsage()
	return u.cpu(), ok
}

// processUsage returns this process's usage so far, and whether the
// platform tells its CPU time.
func processUsage() (usage, bool) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return usage{}, false
	}
	u := usage{user: time.Duration(ru.Utime.Nano()), sys: time.Duration(ru.Stime.Nano())}
	if io, err := os.ReadFile("/proc/self/io"); err == nil {
		for line := range bytes.Lines(io) {
			if v, ok := bytes.CutPrefix(line, []byte("write_bytes: ")); ok {
				u.written, _ = strconv.ParseInt(string(bytes.TrimSpace(v)), 10, 64)
			}
		}
	}
	return u, true
}
