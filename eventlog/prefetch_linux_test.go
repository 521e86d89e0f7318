package eventlog

import (
	"math"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// TestPrefetchCachesTheFile: a log out of the page cache is in it once
// prefetched, every page of it; a prefetch stopped before it starts asks
// for no more than its first requests.
func TestPrefetchCachesTheFile(t *testing.T) {
	f, size := coldLog(t)
	stopped := make(chan struct{})
	close(stopped)
	prefetchFile(f, size, stopped)
	if cached, most := cachedPages(t, f, size), pages((prefetchAhead+1)*prefetchChunk); cached > most {
		t.Errorf("%d pages cached by a prefetch stopped before it started, want at most %d (its first requests)", cached, most)
	}
	drop(t, f)
	prefetchFile(f, size, nil)
	if cached, all := cachedPages(t, f, size), pages(size); cached != all {
		t.Errorf("%d of %d pages cached after the prefetch", cached, all)
	}
}

// TestPrefetchLeavesALargeFileAlone: a file larger than half the memory
// available is not read; one of exactly half is, whole.
func TestPrefetchLeavesALargeFileAlone(t *testing.T) {
	f, size := coldLog(t)
	prefetchWithin(f, size, 2*size-1, nil)
	if cached := cachedPages(t, f, size); cached != 0 {
		t.Errorf("%d pages cached by a prefetch with less than twice the file's size available, want none", cached)
	}
	prefetchWithin(f, size, 2*size, nil)
	if cached, all := cachedPages(t, f, size), pages(size); cached != all {
		t.Errorf("%d of %d pages cached by a prefetch with twice the file's size available", cached, all)
	}
}

// coldLog opens a log file of many pages, none of them in the page cache;
// the test skips where the file system keeps them.
func coldLog(t *testing.T) (*os.File, int64) {
	t.Helper()
	f, err := os.Open(fillMapped(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
		t.Skipf("cannot drop the file's cached pages: %v", err)
	}
	if cached := cachedPages(t, f, fi.Size()); cached != 0 {
		t.Skipf("%d of %d pages stay cached after FADV_DONTNEED (a file system that keeps them)", cached, pages(fi.Size()))
	}
	return f, fi.Size()
}

// drop drops f's pages from the page cache.
func drop(t *testing.T, f *os.File) {
	t.Helper()
	if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
		t.Fatal(err)
	}
}

// TestMemoryAvailable: MemAvailable, lowered by the headroom of the
// process's memory cgroup or any above it, v2 or v1; a hierarchy without a
// limit, or one whose files cannot be read, changes nothing.
func TestMemoryAvailable(t *testing.T) {
	const meminfo = "MemTotal:       24000000 kB\nMemFree:         1000 kB\nMemAvailable:    1000 kB\n"
	type file struct{ name, text string }
	for _, tc := range []struct {
		name   string
		files  []file // under a root holding proc/ and cgroup/
		want   int64
		wantOK bool
	}{
		{"no cgroup file", []file{{"proc/meminfo", meminfo}}, 1000 << 10, true},
		{"no meminfo", []file{{"proc/self/cgroup", "0::/\n"}}, 0, false},
		{"meminfo without MemAvailable", []file{{"proc/meminfo", "MemTotal: 5 kB\n"}}, 0, false},
		{"meminfo garbled", []file{{"proc/meminfo", "MemAvailable: lots kB\n"}}, 0, false},
		{"v2, no limit", []file{
			{"proc/meminfo", meminfo}, {"proc/self/cgroup", "0::/a/b\n"},
			{"cgroup/a/b/memory.max", "max\n"}, {"cgroup/a/b/memory.current", "5\n"},
		}, 1000 << 10, true},
		{"v2, the parent's limit", []file{
			{"proc/meminfo", meminfo}, {"proc/self/cgroup", "0::/a/b\n"},
			{"cgroup/a/b/memory.max", "max\n"}, {"cgroup/a/b/memory.current", "5\n"},
			{"cgroup/a/memory.max", "700000\n"}, {"cgroup/a/memory.current", "200000\n"},
		}, 500000, true},
		{"v2, own and parent's: the least", []file{
			{"proc/meminfo", meminfo}, {"proc/self/cgroup", "0::/a/b\n"},
			{"cgroup/a/b/memory.max", "300000\n"}, {"cgroup/a/b/memory.current", "100000\n"},
			{"cgroup/a/memory.max", "700000\n"}, {"cgroup/a/memory.current", "200000\n"},
		}, 200000, true},
		{"v2, its inactive page cache not counted as used", []file{
			{"proc/meminfo", meminfo}, {"proc/self/cgroup", "0::/a\n"},
			{"cgroup/a/memory.max", "700000\n"}, {"cgroup/a/memory.current", "600000\n"},
			{"cgroup/a/memory.stat", "anon 100000\nfile 500000\nactive_file 100000\ninactive_file 400000\n"},
		}, 500000, true},
		{"v1, its inactive page cache not counted as used", []file{
			{"proc/meminfo", meminfo}, {"proc/self/cgroup", "4:memory:/a\n"},
			{"cgroup/memory/a/memory.limit_in_bytes", "700000\n"}, {"cgroup/memory/a/memory.usage_in_bytes", "600000\n"},
			{"cgroup/memory/a/memory.stat", "inactive_file 1\ntotal_inactive_file 400000\n"},
		}, 500000, true},
		{"v2, over its limit", []file{
			{"proc/meminfo", meminfo}, {"proc/self/cgroup", "0::/a\n"},
			{"cgroup/a/memory.max", "100\n"}, {"cgroup/a/memory.current", "200\n"},
		}, 0, true},
		{"v2 seen from inside a container: the root's", []file{
			{"proc/meminfo", meminfo}, {"proc/self/cgroup", "0::/docker/x\n"},
			{"cgroup/memory.max", "600000\n"}, {"cgroup/memory.current", "100000\n"},
		}, 500000, true},
		{"v1 memory controller", []file{
			{"proc/meminfo", meminfo}, {"proc/self/cgroup", "5:cpu,cpuacct:/x\n4:memory:/a/b\n0::/\n"},
			{"cgroup/memory/a/b/memory.limit_in_bytes", "400000\n"}, {"cgroup/memory/a/b/memory.usage_in_bytes", "100000\n"},
			{"cgroup/memory/memory.limit_in_bytes", "9223372036854771712\n"}, {"cgroup/memory/memory.usage_in_bytes", "7000000\n"},
		}, 300000, true},
		{"limit without usage", []file{
			{"proc/meminfo", meminfo}, {"proc/self/cgroup", "0::/a\n"},
			{"cgroup/a/memory.max", "100\n"},
		}, 1000 << 10, true},
		{"a path not absolute", []file{
			{"proc/meminfo", meminfo}, {"proc/self/cgroup", "0::a\n"},
			{"cgroup/memory.max", "100\n"}, {"cgroup/memory.current", "0\n"},
		}, 1000 << 10, true},
		{"a path climbing out", []file{
			{"proc/meminfo", meminfo}, {"proc/self/cgroup", "0::/../x\n"},
			{"x/memory.max", "100\n"}, {"x/memory.current", "0\n"},
		}, 1000 << 10, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			for _, f := range tc.files {
				name := filepath.Join(root, f.name)
				if err := os.MkdirAll(filepath.Dir(name), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(name, []byte(f.text), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			got, ok := memoryAvailable(filepath.Join(root, "proc"), filepath.Join(root, "cgroup"))
			if got != tc.want || ok != tc.wantOK {
				t.Errorf("memoryAvailable = %d, %t; want %d, %t", got, ok, tc.want, tc.wantOK)
			}
		})
	}
	if got := cgroupHeadroom(t.TempDir(), "/", "memory.max", "memory.current", "inactive_file"); got != math.MaxInt64 {
		t.Errorf("cgroupHeadroom of an empty hierarchy = %d, want no limit", got)
	}
}

func pages(size int64) int64 {
	p := int64(os.Getpagesize())
	return (size + p - 1) / p
}

// cachedPages counts the pages of f's first size bytes in the page cache.
func cachedPages(t *testing.T, f *os.File, size int64) int64 {
	t.Helper()
	fr, ok := cachedFraction(f, size)
	if !ok {
		t.Skip("mincore cannot tell what is cached")
	}
	return int64(fr*float64(pages(size)) + 0.5)
}
