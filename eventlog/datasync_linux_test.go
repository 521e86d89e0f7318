package eventlog

import (
	"os"

	"golang.org/x/sys/unix"
)

// datasync flushes f's data as bbolt's commits do here (fdatasync), for the
// plain-file baseline.
func datasync(f *os.File) error { return unix.Fdatasync(int(f.Fd())) }
