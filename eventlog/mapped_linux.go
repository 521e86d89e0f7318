package eventlog

import (
	"os"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// statm is /proc/self/statm, kept open: a pread of it (about 1 µs) is how
// overMapped learns the process's file-backed resident memory.
var statm = sync.OnceValue(func() *os.File {
	f, err := os.Open("/proc/self/statm")
	if err != nil {
		return nil
	}
	return f
})

// fileResident returns the process's file-backed and shared resident
// memory in bytes (RssFile + RssShmem: statm's third field, in pages), or
// false if /proc cannot tell.
func fileResident() (int64, bool) {
	f := statm()
	if f == nil {
		return 0, false
	}
	var buf [128]byte
	n, err := syscall.Pread(int(f.Fd()), buf[:], 0)
	if err != nil || n <= 0 {
		return 0, false
	}
	field, v, digits := 0, int64(0), false
	for _, c := range buf[:n] {
		switch {
		case c >= '0' && c <= '9':
			v, digits = v*10+int64(c-'0'), true
		case digits:
			if field == 2 {
				return v * int64(os.Getpagesize()), true
			}
			field, v, digits = field+1, 0, false
		}
	}
	return 0, false
}

func overMapped() bool {
	n, ok := fileResident()
	return ok && n > mappedBound.Load()
}

// dropRange drops the page-table entries of n bytes of a shared file
// mapping from addr: the pages stay in the page cache. Errors are ignored:
// the pages then stay mapped, as they would without the call.
func dropRange(addr, n uintptr) {
	if n > 0 {
		_, _, _ = syscall.Syscall(syscall.SYS_MADVISE, addr, n, syscall.MADV_DONTNEED)
	}
}

// adviseRandom tells the kernel that f, or the map data of a file, is read
// in no order: it reads no more than the pages read (see pageFile.mapFile).
func adviseRandom(f *os.File, data []byte) {
	if f != nil {
		_ = unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_RANDOM)
	}
	if data != nil {
		_ = unix.Madvise(data, unix.MADV_RANDOM)
	}
}

// prefetch asks the kernel to read n bytes of f from off, in the
// background, into pages of their own (readahead's own requests may
// allocate large folios).
func prefetch(f *os.File, off, n int64) {
	_ = unix.Fadvise(int(f.Fd()), off, n, unix.FADV_WILLNEED)
}
