package projection

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

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
// (eventlog.Log.Allocated), deterministic where the times are not.
func BenchmarkTextSizes(b *testing.B) {
	s, err := Open(b.TempDir(), Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	small, progress, result := strings.Repeat("k", 1<<10), strings.Repeat("p", 1<<20), strings.Repeat("r", 4<<20)
	var progBig, progSmall, complBig, complSmall, artifactWrite, ackBig, ackSmall, readBig, readSmall time.Duration
	// What each timed call allocated in the file, by the same names.
	written := map[*time.Duration]int64{}
	timed := func(into *time.Duration, f func() error) {
		a0, t0 := s.Log().Allocated(), time.Now()
		if err := f(); err != nil {
			b.Fatal(err)
		}
		*into += time.Since(t0)
		written[into] += s.Log().Allocated() - a0
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
	b.ReportMetric(float64(complBig)/float64(artifactWrite), "complete/artifact(≤2)")
	b.ReportMetric(float64(ackBig)/float64(ackSmall), "ack-big/small(≈1)")
}
