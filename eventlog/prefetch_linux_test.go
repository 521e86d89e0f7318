package eventlog

import (
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// TestPrefetchCachesTheFile: a log out of the page cache is in it once
// prefetched, every page of it; a prefetch stopped before it starts asks
// for no more than its first requests.
func TestPrefetchCachesTheFile(t *testing.T) {
	path := fillMapped(t)
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
		t.Skipf("cannot drop the file's cached pages: %v", err)
	}
	if cached := cachedPages(t, f, fi.Size()); cached > pages(fi.Size())/10 {
		t.Skipf("%d of %d pages stay cached after FADV_DONTNEED (a file system that keeps them)", cached, pages(fi.Size()))
	}
	stopped := make(chan struct{})
	close(stopped)
	prefetchFile(f, fi.Size(), stopped)
	if cached, most := cachedPages(t, f, fi.Size()), pages((prefetchAhead+1)*prefetchChunk); cached > most {
		t.Errorf("%d pages cached by a prefetch stopped before it started, want at most %d (its first requests)", cached, most)
	}
	if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
		t.Fatal(err)
	}
	prefetchFile(f, fi.Size(), nil)
	if cached, all := cachedPages(t, f, fi.Size()), pages(fi.Size()); cached != all {
		t.Errorf("%d of %d pages cached after the prefetch", cached, all)
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
