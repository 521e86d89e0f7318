//go:build !linux

package eventlog

import "os"

// Elsewhere the mappings' pages are left to the system: MADV_DONTNEED does
// not promise the same (on some systems it may discard them).

func fileResident() (int64, bool) { return 0, false }

func overMapped() bool { return false }

func dropRange(addr, n uintptr) {}

func adviseRandom(f *os.File, data []byte) {}

func prefetch(f *os.File, off, n int64) {}
