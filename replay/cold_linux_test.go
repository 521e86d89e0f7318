package replay

import (
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/delegations/delegations/eventlog"
	"github.com/delegations/delegations/projection"
)

// BenchmarkReplayCold runs Run on a store out of the page cache, as the
// first replay after a reboot meets it: each round drops the store's
// files from the cache (FADV_DONTNEED), replays it with the log
// prefetched (eventlog.Log.Prefetch, as the command does), drops them
// again and replays it without, the two in turn first. Reports the
// seconds of each and ratio(<1) = prefetched over not; the artifact
// files, read cold in both, are most of what is left of the prefetched
// one.
func BenchmarkReplayCold(b *testing.B) {
	benchStores(b, func(b *testing.B, dir string) {
		defer eventlog.SetMappedBound(eventlog.CommandMappedBound)()
		// As the command: the log opened for the replay alone, its map
		// gone with it (the kernel keeps a mapped page cached).
		replay := func(prefetch bool) time.Duration {
			defer eventlog.SetPrefetch(prefetch)()
			dropCached(b, dir)
			t0 := time.Now()
			l, err := eventlog.Open(filepath.Join(dir, projection.LogFile), eventlog.Options{ReadOnly: true})
			if err != nil {
				b.Fatal(err)
			}
			defer l.Close()
			if _, err := Run(context.Background(), l, dir, Options{}); err != nil {
				b.Fatal(err)
			}
			return time.Since(t0)
		}
		var with, without time.Duration
		b.ResetTimer()
		for i := range b.N {
			if i%2 == 0 {
				with += replay(true)
				without += replay(false)
			} else {
				without += replay(false)
				with += replay(true)
			}
		}
		b.StopTimer()
		b.ReportMetric(with.Seconds()/float64(b.N), "s/replay-prefetched")
		b.ReportMetric(without.Seconds()/float64(b.N), "s/replay-not-prefetched")
		b.ReportMetric(with.Seconds()/without.Seconds(), "ratio(<1)")
	})
}

// dropCached drops every file under dir from the page cache, or skips the
// benchmark where the system keeps them.
func dropCached(b *testing.B, dir string) {
	b.Helper()
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := unix.Fdatasync(int(f.Fd())); err != nil {
			return err
		}
		return unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
	})
	if err != nil {
		b.Skipf("cannot drop the store's files from the page cache: %v", err)
	}
}
