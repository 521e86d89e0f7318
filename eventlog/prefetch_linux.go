package eventlog

import (
	"os"
	"strconv"
	"strings"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// prefetchFile reads the first size bytes of f into the page cache, front
// to back, until quit is closed, unless nine tenths of them are cached
// already. Each chunk is read (and so waited for); the next prefetchAhead
// are asked for in the background meanwhile, which keeps the device's
// queue full. The descriptor reads at random: no readahead beyond what it
// asks for, whose large folios later commits would dirty whole; the
// pages come in pages of their own.
func prefetchFile(f *os.File, size int64, quit <-chan struct{}) {
	if avail, ok := availableMemory(); !ok || size > avail/2 {
		return
	}
	if cached, ok := cachedFraction(f, size); !ok || cached >= 0.9 {
		return
	}
	adviseRandom(f, nil)
	for off := int64(0); off < prefetchAhead*prefetchChunk && off < size; off += prefetchChunk {
		prefetch(f, off, prefetchChunk)
	}
	buf := make([]byte, prefetchChunk)
	for off := int64(0); off < size; off += prefetchChunk {
		select {
		case <-quit:
			return
		default:
		}
		if next := off + prefetchAhead*prefetchChunk; next < size {
			prefetch(f, next, prefetchChunk)
		}
		if _, err := f.ReadAt(buf, off); err != nil && off+prefetchChunk < size {
			return // the replay reads what it needs as before
		}
	}
}

// cachedFraction returns how much of f's first size bytes the page cache
// holds (mincore over a map of it that touches nothing), or false if the
// system cannot tell. For a file the process may not write, Linux 5.0 and
// later report every page cached: such a file is left alone.
func cachedFraction(f *os.File, size int64) (float64, bool) {
	if size <= 0 || int64(int(size)) != size {
		return 0, false
	}
	data, err := unix.Mmap(int(f.Fd()), 0, int(size), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return 0, false
	}
	defer unix.Munmap(data)
	page := int64(os.Getpagesize())
	vec := make([]byte, (size+page-1)/page)
	if _, _, errno := syscall.Syscall(syscall.SYS_MINCORE, uintptr(unsafe.Pointer(&data[0])), uintptr(len(data)), uintptr(unsafe.Pointer(&vec[0]))); errno != 0 {
		return 0, false
	}
	n := 0
	for _, v := range vec {
		n += int(v & 1)
	}
	return float64(n) / float64(len(vec)), true
}

// availableMemory returns the memory the page cache may grow into: the
// system's MemAvailable, or less if the process's cgroup (v2) allows less
// beyond what it uses; false if /proc cannot tell.
func availableMemory() (int64, bool) {
	meminfo, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0, false
	}
	var avail int64 = -1
	for line := range strings.Lines(string(meminfo)) {
		if v, ok := strings.CutPrefix(line, "MemAvailable:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				return 0, false
			}
			avail = kb << 10
		}
	}
	if avail < 0 {
		return 0, false
	}
	read := func(name string) (int64, bool) {
		b, err := os.ReadFile("/sys/fs/cgroup/" + name)
		if err != nil {
			return 0, false
		}
		n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
		return n, err == nil // "max": no limit
	}
	if limit, ok := read("memory.max"); ok {
		if used, ok := read("memory.current"); ok {
			avail = min(avail, max(limit-used, 0))
		}
	}
	return avail, true
}
