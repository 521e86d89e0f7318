package projection

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// BenchmarkCompleteInLargeRoot: Complete (its commit, the artifact's
// write, fsync and rename, and the persisted commit) of a delegation
// whose session directory holds 10,000 artifacts, against the same in a
// directory of 20, alternated in one run. The artifacts are plain files
// named as artifacts: what an artifact write would have listed.
//
// Metrics: us/big, us/small (per Complete); ratio(≤1.1) = big / small,
// ≈1 when an artifact write does not depend on its directory's size.
func BenchmarkCompleteInLargeRoot(b *testing.B) {
	open := func(artifacts int) (*Store, func() string) {
		dir := b.TempDir()
		s, err := Open(dir, Options{})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { s.Close() })
		r := registration()
		rel, err := ArtifactRelPath(r.ProjectID, r.RootSessionID, "brave-red-fox")
		if err != nil {
			b.Fatal(err)
		}
		sdir := filepath.Dir(filepath.Join(dir, rel))
		if err := os.MkdirAll(sdir, 0o700); err != nil {
			b.Fatal(err)
		}
		for i := range artifacts {
			if err := os.WriteFile(filepath.Join(sdir, fmt.Sprintf("filler-%d.md", i)), []byte("# an artifact\n"), 0o600); err != nil {
				b.Fatal(err)
			}
		}
		ctx := context.Background()
		return s, func() string {
			d, err := s.Register(ctx, r)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := s.Start(ctx, d.ID, "ses_child"); err != nil {
				b.Fatal(err)
			}
			return d.ID
		}
	}
	big, bigNext := open(10_000)
	small, smallNext := open(20)
	ctx := context.Background()
	var bigT, smallT time.Duration
	b.ResetTimer()
	for i := range b.N {
		b.StopTimer()
		bid, sid := bigNext(), smallNext()
		b.StartTimer()
		// Alternate which goes first, so that both see the same disk.
		complete := func(s *Store, id string, into *time.Duration) {
			t := time.Now()
			if _, err := s.Complete(ctx, id, "the result", "", ""); err != nil {
				b.Fatal(err)
			}
			*into += time.Since(t)
		}
		if i%2 == 0 {
			complete(big, bid, &bigT)
			complete(small, sid, &smallT)
		} else {
			complete(small, sid, &smallT)
			complete(big, bid, &bigT)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(bigT.Microseconds())/float64(b.N), "us/big")
	b.ReportMetric(float64(smallT.Microseconds())/float64(b.N), "us/small")
	b.ReportMetric(float64(bigT)/float64(smallT), "ratio(≤1.1)")
}
