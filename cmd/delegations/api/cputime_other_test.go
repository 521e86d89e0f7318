//go:build !unix

package api

import "time"

// processCPU reports that this platform does not tell the process's CPU
// time.
func processCPU() (time.Duration, bool) { return 0, false }

// processUsage reports that this platform does not tell the process's
// usage.
func processUsage() (usage, bool) { return usage{}, false }
