package eventlog

import (
	"os"
	"sync"
	"sync/atomic"
)

// Prefetch reads the log's file into the page cache in the background,
// front to back, for a caller about to read all of it (a replay). Such a
// read follows the records' keys, which on a file its commits have
// rewritten for a while lie all over it, through bbolt's mapping, which
// the kernel fills page by page as it is touched (bbolt maps the file
// MADV_RANDOM): on a cold 837 MB log here that ran at 66 MB/s, where the
// disk reads 600 MB/s in order. A file nine tenths cached is left alone
// (one mincore: 17 ms at 837 MB), and so is one larger than half the
// memory available, which would push out its own front, and others'
// pages, before the read reached it. The pages are the kernel's, kept or
// dropped under memory pressure like any file's. stop ends the prefetch
// and waits for it: for the read under way, 512 KiB, on a disk that
// answers.
func (l *Log) Prefetch() (stop func()) {
	if prefetchOff.Load() {
		return func() {}
	}
	f, err := os.Open(l.path)
	if err != nil {
		return func() {} // the read goes on without: slower, not wrong
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return func() {}
	}
	quit := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		defer f.Close()
		prefetchFile(f, fi.Size(), quit)
	})
	var once sync.Once
	return func() {
		once.Do(func() { close(quit) })
		wg.Wait()
	}
}

// The prefetch's requests (prefetchFile): reads of prefetchChunk bytes,
// with prefetchAhead more asked for in the background. The kernel drops
// background requests past what the device queues (here, past 8-16 MiB in
// flight) and reads at most about 2 MiB of one; the reads themselves
// always complete.
const (
	prefetchChunk = 512 << 10
	prefetchAhead = 8
)

// prefetchOff turns Prefetch off: only for a benchmark's baseline
// (SetPrefetch).
var prefetchOff atomic.Bool

// SetPrefetch turns Prefetch on or off in this process, and returns what
// restores the setting before it: a benchmark measures a cold read with
// and without it.
func SetPrefetch(on bool) (restore func()) {
	prev := prefetchOff.Swap(!on)
	return func() { prefetchOff.Store(prev) }
}
