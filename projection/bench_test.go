package projection

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/delegations/delegations/eventlog"
	"github.com/delegations/delegations/fsm"
	"github.com/delegations/delegations/projection/artifact"
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
		rel, err := artifact.RelPath(r.ProjectID, r.RootSessionID, "brave-red-fox")
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

// BenchmarkNotificationsOfOneParent: Notifications(parent) for a parent
// owed 100 terminal notifications in an outbox of 10,000 unacknowledged
// ones (100 parents of 100), against a store whose outbox holds only that
// parent's 100, alternated in one run. Each delegation's lifecycle up to
// its persisted event is one append (the views index it as the store's
// commands would).
//
// Metrics: us/big, us/small; ratio(≈1) = big / small, 1 when the cost
// follows the parent's entries and not the whole outbox.
func BenchmarkNotificationsOfOneParent(b *testing.B) {
	const parent = "ses_parent_0"
	big, small := outboxStore(b, 100, 100), outboxStore(b, 1, 100)
	var bigT, smallT time.Duration
	b.ResetTimer()
	for i := range b.N {
		call := func(s *Store, into *time.Duration) {
			t := time.Now()
			ns, err := s.Notifications(parent)
			*into += time.Since(t)
			if err != nil || len(ns) != 100 {
				b.Fatalf("%d notifications, %v", len(ns), err)
			}
		}
		if i%2 == 0 {
			call(big, &bigT)
			call(small, &smallT)
		} else {
			call(small, &smallT)
			call(big, &bigT)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(bigT.Microseconds())/float64(b.N), "us/big")
	b.ReportMetric(float64(smallT.Microseconds())/float64(b.N), "us/small")
	b.ReportMetric(float64(bigT)/float64(smallT), "ratio(≈1)")
}

// outboxStore opens a store holding parents × each persisted, not yet
// notified delegations of parents ses_parent_<n>: parents × each terminal
// notifications due.
func outboxStore(b *testing.B, parents, each int) *Store {
	b.Helper()
	s, err := Open(b.TempDir(), Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	ids := fsm.NewIDGenerator(rand.NewChaCha8([32]byte{5}))
	at := time.Now().Add(-time.Hour)
	ctx := context.Background()
	var batch []eventlog.Append
	seen := map[string]bool{}
	for p := range parents {
		for range each {
			id := ids.Next()
			for seen[id] {
				id = ids.Next()
			}
			seen[id] = true
			rel, err := artifact.RelPath("0123456789abcdef", "ses_root", id)
			if err != nil {
				b.Fatal(err)
			}
			var entries []eventlog.Entry
			for _, e := range []fsm.Event{
				{
					Kind: fsm.KindRegistered,
					Registration: fsm.Registration{
						ProjectID: "0123456789abcdef", RootSessionID: "ses_root",
						ParentSessionID: fmt.Sprintf("ses_parent_%d", p), Agent: "researcher", Prompt: "a task",
						Timeout: time.Hour,
					},
				},
				{Kind: fsm.KindCompleted, Result: "the result"},
				{Kind: fsm.KindPersisted, ArtifactPath: rel, ArtifactSize: 100, ArtifactHash: 1},
			} {
				e.ID, e.At = id, at
				entries = append(entries, eventlog.Entry{Kind: uint16(e.Kind), Time: e.At, Payload: e.MarshalPayload()})
			}
			batch = append(batch, eventlog.Append{Stream: id, Entries: entries, CheckVersion: true})
		}
	}
	// Appends run concurrently so that the group commit batches them.
	errs := make(chan error, len(batch))
	sem := make(chan struct{}, 64)
	for _, a := range batch {
		sem <- struct{}{}
		go func() {
			defer func() { <-sem }()
			_, err := s.log.Append(ctx, a)
			errs <- err
		}()
	}
	for range batch {
		if err := <-errs; err != nil {
			b.Fatal(err)
		}
	}
	return s
}
