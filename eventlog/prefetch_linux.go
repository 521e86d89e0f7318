package eventlog

import (
	"math"
	"os"
	"path/filepath"
	"slices"
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
	if avail, ok := availableMemory(); ok {
		prefetchWithin(f, size, avail, quit)
	}
}

// prefetchWithin is prefetchFile with avail bytes of memory available: a
// file larger than half of it is left alone.
func prefetchWithin(f *os.File, size, avail int64, quit <-chan struct{}) {
	if size > avail/2 {
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

// availableMemory returns the memory the page cache may grow into, or
// false if /proc cannot tell.
func availableMemory() (int64, bool) { return memoryAvailable("/proc", "/sys/fs/cgroup") }

// memoryAvailable returns the system's MemAvailable (procDir/meminfo), or
// less where the process's memory cgroup, or one above it, allows less
// beyond what it uses: cgroup v2 under cgroupDir, v1's memory controller
// under cgroupDir/memory, the process's place in each read from
// procDir/self/cgroup. A page cache charged to a cgroup at its limit
// evicts the cgroup's own pages first, as one filling the system's memory
// does everyone's.
func memoryAvailable(procDir, cgroupDir string) (int64, bool) {
	meminfo, err := os.ReadFile(filepath.Join(procDir, "meminfo"))
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
	self, err := os.ReadFile(filepath.Join(procDir, "self", "cgroup"))
	if err != nil {
		return avail, true
	}
	for line := range strings.Lines(string(self)) {
		// hierarchy-ID:controllers:path; v2's is 0::path.
		id, rest, _ := strings.Cut(strings.TrimSpace(line), ":")
		controllers, path, ok := strings.Cut(rest, ":")
		switch {
		case !ok || !strings.HasPrefix(path, "/"):
		case id == "0" && controllers == "":
			avail = min(avail, cgroupHeadroom(cgroupDir, path, "memory.max", "memory.current", "inactive_file"))
		case slices.Contains(strings.Split(controllers, ","), "memory"):
			avail = min(avail, cgroupHeadroom(filepath.Join(cgroupDir, "memory"), path, "memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file"))
		}
	}
	return avail, true
}

// cgroupHeadroom returns the least any cgroup from path up to the root of
// the hierarchy mounted at mount allows beyond what it uses (its limit and
// usage files named limitFile and usageFile; the usage less the page
// cache it may drop first, memory.stat's inactiveKey, as MemAvailable
// counts it); math.MaxInt64 where none sets a limit or none can be read.
// A path missing under the mount (a container that sees its own cgroup as
// the root, without a namespace) is passed over on the way up.
func cgroupHeadroom(mount, path, limitFile, usageFile, inactiveKey string) int64 {
	read := func(name string) (int64, bool) {
		b, err := os.ReadFile(name)
		if err != nil {
			return 0, false
		}
		n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
		return n, err == nil // v2's "max": no limit
	}
	inactive := func(dir string) int64 {
		b, err := os.ReadFile(filepath.Join(dir, "memory.stat"))
		if err != nil {
			return 0
		}
		for line := range strings.Lines(string(b)) {
			if v, ok := strings.CutPrefix(line, inactiveKey+" "); ok {
				if n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64); err == nil {
					return n
				}
			}
		}
		return 0
	}
	headroom := int64(math.MaxInt64)
	for p := filepath.Clean(path); ; p = filepath.Dir(p) {
		dir := filepath.Join(mount, p)
		if limit, ok := read(filepath.Join(dir, limitFile)); ok {
			if used, ok := read(filepath.Join(dir, usageFile)); ok {
				headroom = min(headroom, max(limit-max(used-inactive(dir), 0), 0))
			}
		}
		if p == "/" {
			return headroom
		}
	}
}
