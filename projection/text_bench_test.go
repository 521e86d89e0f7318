package projection

import (
	"context"
	"flag"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/delegations/delegations/projection/artifact"

	"github.com/delegations/delegations/fsm"
)

// BenchmarkTextSizes: what commands cost beside the size of their
// delegation's texts. One store; per iteration two delegations, one with
// small texts (1 KiB) and one with large ones (a 1 MiB progress, a 4 MiB
// result), each through register, start, progress and complete (its
// artifact written); then each is acknowledged and read, in alternating
// order.
//
// Metrics (per call): us/progress-1MiB, us/progress-1KiB;
// us/complete-4MiB and us/artifact-4MiB (artifact.Write of the same 4 MiB
// rendering alone, in the same iteration); us/ack-big, us/ack-small,
// us/read-big, us/read-small; complete/artifact(≤2); ack-big/small(≈1);
// KiB-written/<call>: the pages the call's commits allocated in the file
// (eventlog.Log.Allocated), deterministic where the times are not;
// cpu-us/<call>: the process's CPU time (user and system, every goroutine
// and the GC) over the call, which other processes on the cores do not
// inflate, where the platform tells it.
func BenchmarkTextSizes(b *testing.B) {
	s, err := Open(b.TempDir(), Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	small, progress, result := strings.Repeat("k", 1<<10), strings.Repeat("p", 1<<20), strings.Repeat("r", 4<<20)
	var progBig, progSmall, complBig, complSmall, artifactWrite, ackBig, ackSmall, readBig, readSmall time.Duration
	// What each timed call allocated in the file and the CPU time it
	// took, by the same names.
	written, cpu := map[*time.Duration]int64{}, map[*time.Duration]time.Duration{}
	_, cpuKnown := processCPU()
	timed := func(into *time.Duration, f func() error) {
		c0, _ := processCPU()
		a0, t0 := s.Log().Allocated(), time.Now()
		if err := f(); err != nil {
			b.Fatal(err)
		}
		*into += time.Since(t0)
		written[into] += s.Log().Allocated() - a0
		c1, _ := processCPU()
		cpu[into] += c1 - c0
	}
	life := func(prog, res string, progT, complT *time.Duration) string {
		r := registration()
		r.Prompt = small
		d, err := s.Register(ctx, r)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := s.Start(ctx, d.ID, "ses_child"); err != nil {
			b.Fatal(err)
		}
		timed(progT, func() error { _, err := s.Progress(ctx, d.ID, prog); return err })
		var done fsm.Delegation
		timed(complT, func() error {
			var err error
			done, err = s.Complete(ctx, d.ID, res, "t", "d")
			return err
		})
		if res == result {
			content := artifact.Render(&done)
			rel, err := artifact.RelPath(r.ProjectID, r.RootSessionID, "plain-white-yak")
			if err != nil {
				b.Fatal(err)
			}
			timed(&artifactWrite, func() error { _, _, err := artifact.Write(s.Dir(), rel, content); return err })
		}
		return d.ID
	}
	ackRead := func(id string, ackT, readT *time.Duration) {
		timed(ackT, func() error { _, err := s.Ack(ctx, TerminalNotificationID(id)); return err })
		timed(readT, func() error {
			rr, err := s.Read(ctx, registration().RootSessionID, id, 0)
			if err == nil && !rr.Artifact {
				err = fmt.Errorf("read of %s returned no artifact", id)
			}
			return err
		})
	}
	b.ResetTimer()
	for i := range b.N {
		big := life(progress, result, &progBig, &complBig)
		little := life(small, small, &progSmall, &complSmall)
		// After both lives, alternating which goes first: neither
		// follows the other's large writes every time.
		if i%2 == 0 {
			ackRead(big, &ackBig, &readBig)
			ackRead(little, &ackSmall, &readSmall)
		} else {
			ackRead(little, &ackSmall, &readSmall)
			ackRead(big, &ackBig, &readBig)
		}
	}
	b.StopTimer()
	us := func(d time.Duration) float64 { return float64(d.Microseconds()) / float64(b.N) }
	b.ReportMetric(us(progBig), "us/progress-1MiB")
	b.ReportMetric(us(progSmall), "us/progress-1KiB")
	b.ReportMetric(us(complBig), "us/complete-4MiB")
	b.ReportMetric(us(complSmall), "us/complete-1KiB")
	b.ReportMetric(us(artifactWrite), "us/artifact-4MiB")
	b.ReportMetric(us(ackBig), "us/ack-big")
	b.ReportMetric(us(ackSmall), "us/ack-small")
	b.ReportMetric(us(readBig), "us/read-big")
	b.ReportMetric(us(readSmall), "us/read-small")
	kib := func(d *time.Duration) float64 { return float64(written[d]) / 1024 / float64(b.N) }
	b.ReportMetric(kib(&progBig), "KiB-written/progress-1MiB")
	b.ReportMetric(kib(&complBig), "KiB-written/complete-4MiB")
	b.ReportMetric(kib(&ackBig), "KiB-written/ack-big")
	b.ReportMetric(kib(&readBig), "KiB-written/read-big")
	b.ReportMetric(kib(&ackSmall), "KiB-written/ack-small")
	if cpuKnown {
		for _, m := range []struct {
			d    *time.Duration
			name string
		}{
			{&progBig, "progress-1MiB"}, {&progSmall, "progress-1KiB"}, {&complBig, "complete-4MiB"},
			{&artifactWrite, "artifact-4MiB"}, {&readBig, "read-big"}, {&readSmall, "read-small"},
		} {
			b.ReportMetric(us(cpu[m.d]), "cpu-us/"+m.name)
		}
	}
	b.ReportMetric(float64(complBig)/float64(artifactWrite), "complete/artifact(≤2)")
	b.ReportMetric(float64(ackBig)/float64(ackSmall), "ack-big/small(≈1)")
}

var fileSizeEvents = flag.Int("filesize.events", 20_000,
	"events BenchmarkFileSize writes before it measures the file (README's figure is at 1000000)")

// BenchmarkFileSize: what the file holds beside the events' payloads, on a
// store built as a user's is. 16 clients each run lifecycles (register
// with a prompt, start, three progress messages, complete with a result,
// its artifact written; acknowledge the notification, read) through the
// Store until the log holds -filesize.events events. Texts are words, of
// lengths drawn around those of real delegations (prompt and result
// 0.2-1.6 KB, progress 0.1-0.7 KB: about 0.4 KB per event on average).
// Each of 16 roots has 3 parents.
//
// Metrics: file-bytes/payload-byte (the goal is ≤ 2), file-bytes/event,
// payload-bytes/event; MiB/<bucket> for every top-level bucket and every
// view (pages of its tree, overflow included), MiB/free (the other pages
// below the high water mark: free pages, the freelist, the meta pages) and
// MiB/unallocated (the file's tail past the high water mark, which bbolt
// grows 16 MiB at a time). The table is logged with -v. ns/op is one
// whole build.
func BenchmarkFileSize(b *testing.B) {
	const clients = 16
	words := strings.Fields("the cache test races on a shared map when two goroutines refresh it; " +
		"the fix takes the lock before reading, adds a regression test and runs the suite " +
		"ten times under the race detector without a failure while the flaky build stays green")
	text := func(rng *rand.Rand, lo, hi int) string {
		n := lo + rng.IntN(hi-lo)
		var sb strings.Builder
		for sb.Len() < n {
			sb.WriteString(words[rng.IntN(len(words))])
			sb.WriteByte(' ')
		}
		return sb.String()[:n]
	}
	for b.Loop() {
		dir := b.TempDir()
		s, err := Open(dir, Options{})
		if err != nil {
			b.Fatal(err)
		}
		ctx := context.Background()
		var wg sync.WaitGroup
		for c := range clients {
			wg.Go(func() {
				rng := rand.New(rand.NewPCG(uint64(c), 13))
				root := fmt.Sprintf("ses_root%02d", c)
				for n := 0; s.Log().Last() < uint64(*fileSizeEvents); n++ {
					r := Registration{
						ProjectID: "0123456789abcdef", RootSessionID: root,
						ParentSessionID: fmt.Sprintf("ses_parent%02d_%d", c, n%3),
						Agent:           "general", Prompt: text(rng, 200, 1600),
					}
					d, err := s.Register(ctx, r)
					if err == nil {
						_, err = s.Start(ctx, d.ID, fmt.Sprintf("ses_child%02d_%d", c, n))
					}
					for range 3 {
						if err == nil {
							_, err = s.Progress(ctx, d.ID, text(rng, 100, 700))
						}
					}
					if err == nil {
						_, err = s.Complete(ctx, d.ID, text(rng, 200, 1600), "", "")
					}
					if err == nil {
						_, err = s.Ack(ctx, TerminalNotificationID(d.ID))
					}
					if err == nil {
						_, err = s.Read(ctx, root, d.ID, 0)
					}
					if err != nil {
						b.Error(err)
						return
					}
				}
			})
		}
		wg.Wait()
		var payload, events int64
		for r, err := range s.Log().Records(1) {
			if err != nil {
				b.Fatal(err)
			}
			payload += int64(len(r.Payload))
			events++
		}
		if err := s.Close(); err != nil {
			b.Fatal(err)
		}
		path := filepath.Join(dir, LogFile)
		fi, err := os.Stat(path)
		if err != nil {
			b.Fatal(err)
		}
		sizes, fill, err := bucketSizes(path, fi.Size())
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(fi.Size())/float64(payload), "file-bytes/payload-byte")
		b.ReportMetric(float64(fi.Size())/float64(events), "file-bytes/event")
		b.ReportMetric(float64(payload)/float64(events), "payload-bytes/event")
		names := slices.Sorted(maps.Keys(sizes))
		b.Logf("%d events, %d payload bytes, file %d bytes (%.2f per payload byte)", events, payload, fi.Size(), float64(fi.Size())/float64(payload))
		for _, name := range names {
			b.ReportMetric(float64(sizes[name])/(1<<20), "MiB/"+name)
			b.Logf("  %-16s %10.1f MiB %6.1f%% of the file, leaves %3.0f%% full", name, float64(sizes[name])/(1<<20), 100*float64(sizes[name])/float64(fi.Size()), 100*fill[name])
		}
	}
}

// bucketSizes returns the bytes of pages each bucket's tree takes in the
// bbolt file at path, size bytes long (views: each view apart; the views
// bucket itself without them), under "free" the other pages below the
// high water mark and under "unallocated" the rest of the file; and the
// share of each bucket's leaf pages in use.
func bucketSizes(path string, size int64) (out map[string]int64, fill map[string]float64, err error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		return nil, nil, err
	}
	defer db.Close()
	out, fill = map[string]int64{}, map[string]float64{}
	ps := int64(db.Info().PageSize)
	pages := func(s bolt.BucketStats) int64 {
		return ps * int64(s.BranchPageN+s.BranchOverflowN+s.LeafPageN+s.LeafOverflowN)
	}
	leafFill := func(s bolt.BucketStats) float64 {
		if n := s.LeafPageN + s.LeafOverflowN; n > 0 {
			return float64(s.LeafInuse) / float64(int64(n)*ps)
		}
		return 0
	}
	err = db.View(func(tx *bolt.Tx) error {
		out["free"] = tx.Size()
		out["unallocated"] = size - tx.Size()
		return tx.ForEach(func(name []byte, bk *bolt.Bucket) error {
			out["free"] -= pages(bk.Stats())
			total := pages(bk.Stats())
			if string(name) == "views" {
				err := bk.ForEach(func(k, v []byte) error {
					if sub := bk.Bucket(k); v == nil && sub != nil {
						st := sub.Stats()
						n := pages(st)
						out["views/"+string(k)] = n
						fill["views/"+string(k)] = leafFill(st)
						total -= n
					}
					return nil
				})
				if err != nil {
					return err
				}
			}
			out[string(name)] = total
			fill[string(name)] = leafFill(bk.Stats())
			return nil
		})
	})
	return out, fill, err
}
