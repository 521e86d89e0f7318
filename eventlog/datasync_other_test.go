//go:build !linux

package eventlog

import "os"

// datasync flushes f's data as bbolt's commits do on this system (fsync).
func datasync(f *os.File) error { return f.Sync() }
