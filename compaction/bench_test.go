package compaction_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/delegations/delegations/compaction"
	"github.com/delegations/delegations/eventlog"
	"github.com/delegations/delegations/eventlog/historytest"
	"github.com/delegations/delegations/fsm"
	"github.com/delegations/delegations/projection"
	"github.com/delegations/delegations/projection/artifact"
)

const (
	benchRoot    = "ses_root"
	benchProject = "0123456789abcdef"
	benchHistory = 100_000
	benchActive  = 20
	benchTarget  = 200 * time.Microsecond // README "Benchmarks": compaction block under 200 µs
)

// BenchmarkCompaction measures what the compaction hook costs: Carried plus
// Block, per call, on a store holding 100,000 historical delegations
// (terminal and read, so not carried) and 20 active ones in the same root,
// and on a store holding only the 20 active ones, in the same run.
//
// Metrics: big-ns/op and small-ns/op (each one Carried + Block), and the
// big store's split into big-carried-ns/op and big-block-ns/op;
// ratio(≤1) = big / 200 µs, the README's target; history-cost-ratio =
// big / small, ≈1 when the cost follows what is carried and not history.
// The reported ns/op is the sum of both stores' calls.
//
// Building the history takes about 35 s on two cores (logged with -v): each
// historical delegation is one append of its whole lifecycle (registered,
// started, completed, persisted, notified, read; the events the store's
// commands produce) from 64 goroutines, so the log's group commit writes
// ~1000 delegations per commit and the store's own projector builds every
// view. No artifact files are written for the history: the block never
// reads them. The 20 active ones go through the Store's commands.
func BenchmarkCompaction(b *testing.B) {
	start := time.Now()
	big := benchStore(b, benchHistory)
	b.Logf("built a store with %d historical and %d active delegations in %v", benchHistory, benchActive, time.Since(start).Round(time.Millisecond))
	small := benchStore(b, 0)

	b.Run("carried+block", func(b *testing.B) {
		var bigCarried, bigBlock, smallT time.Duration
		o := compaction.Options{DataDir: big.Dir()}
		// Alternate the stores so that both see the same machine noise.
		for range b.N {
			t := time.Now()
			running, unread := carried(b, big)
			t1 := time.Now()
			block(b, running, unread, o)
			t2 := time.Now()
			running, unread = carried(b, small)
			block(b, running, unread, o)
			bigCarried += t1.Sub(t)
			bigBlock += t2.Sub(t1)
			smallT += time.Since(t2)
		}
		perOp := func(d time.Duration) float64 { return float64(d.Nanoseconds()) / float64(b.N) }
		bigOp, smallOp := perOp(bigCarried+bigBlock), perOp(smallT)
		b.ReportMetric(bigOp, "big-ns/op")
		b.ReportMetric(smallOp, "small-ns/op")
		b.ReportMetric(perOp(bigCarried), "big-carried-ns/op")
		b.ReportMetric(perOp(bigBlock), "big-block-ns/op")
		b.ReportMetric(bigOp/float64(benchTarget.Nanoseconds()), "ratio(≤1)")
		b.ReportMetric(bigOp/smallOp, "history-cost-ratio")
	})
}

// BenchmarkBlock is the rendering alone: 20 running and 10 unread entries,
// no I/O.
func BenchmarkBlock(b *testing.B) {
	var running, unread []fsm.Delegation
	for i := range 20 {
		running = append(running, runningEntry(fmt.Sprintf("Active task %d: trace the flaky login test across the retry layer and report which call races.", i), i))
	}
	for i := range 10 {
		unread = append(unread, unreadEntry(i))
	}
	o := compaction.Options{DataDir: "/home/ada/.local/share/opencode/delegations"}
	b.ReportAllocs()
	for b.Loop() {
		compaction.Block(running, unread, o)
	}
}

func runningEntry(prompt string, i int) fsm.Delegation {
	return running(fmt.Sprintf("%s-blue-tiger", []string{"able", "bold", "cool", "deft"}[i%4]), "researcher", prompt, time.Duration(i)*time.Minute)
}

func unreadEntry(i int) fsm.Delegation {
	return unread("calm-green-otter", fsm.Complete, "Login flow survey", "Three login paths; token refresh races with logout.", time.Duration(30-i)*time.Minute)
}

// carried is the store half of one compaction hook call.
func carried(b *testing.B, s *projection.Store) (running, unread []fsm.Delegation) {
	running, unread, err := s.Carried(benchRoot, compaction.DefaultMaxUnread)
	if err != nil {
		b.Fatal(err)
	}
	if len(running) != benchActive || len(unread) != 0 {
		b.Fatalf("carried %d running, %d unread; want %d, 0", len(running), len(unread), benchActive)
	}
	return running, unread
}

// block is the rendering half.
func block(b *testing.B, running, unread []fsm.Delegation, o compaction.Options) {
	if compaction.Block(running, unread, o) == "" {
		b.Fatal("empty block")
	}
}

// benchStore opens a store in a temporary directory with history
// terminal-and-read delegations and benchActive running ones, all in
// benchRoot.
func benchStore(b *testing.B, history int) *projection.Store {
	b.Helper()
	ctx := context.Background()
	s, err := projection.Open(b.TempDir(), projection.Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })

	// Unique ids, drawn repeatably.
	ids := historytest.IDs(fsm.NewIDGenerator(rand.NewChaCha8([32]byte{7})), history)
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	err = historytest.Append(ctx, s.Log(), len(ids), 64, func(i int) (eventlog.Append, error) {
		return historyAppend(ids[i], t0.Add(time.Duration(i)*time.Second))
	})
	if err != nil {
		b.Fatal(err)
	}

	for i := range benchActive {
		d, err := s.Register(ctx, projection.Registration{
			ProjectID: benchProject, RootSessionID: benchRoot, ParentSessionID: benchRoot,
			Agent: "researcher", Prompt: fmt.Sprintf("Active task %d: trace the flaky login test across the retry layer and report which call races.", i),
		})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := s.Start(ctx, d.ID, "ses_child"); err != nil {
			b.Fatal(err)
		}
		if _, err := s.Progress(ctx, d.ID, "half way"); err != nil {
			b.Fatal(err)
		}
	}
	return s
}

// historyAppend is the append of the whole lifecycle of one finished and
// read delegation: the events Register, Start, Complete, Persist, Ack and
// Read record.
func historyAppend(id string, at time.Time) (eventlog.Append, error) {
	var d *fsm.Delegation
	var cur fsm.Delegation
	var events []fsm.Event
	decide := func(cmd fsm.Event) error {
		cmd.ID, cmd.At = id, at
		evs, err := fsm.Decide(d, cmd, fsm.Config{})
		if err != nil {
			return err
		}
		for _, e := range evs {
			cur = fsm.Evolve(cur, e)
			events = append(events, e)
		}
		d = &cur
		return nil
	}
	if err := decide(fsm.Event{
		Kind: fsm.KindRegistered,
		Registration: fsm.Registration{
			ProjectID: benchProject, RootSessionID: benchRoot, ParentSessionID: benchRoot,
			Agent: "researcher", Prompt: "A finished task",
		},
	}); err != nil {
		return eventlog.Append{}, err
	}
	if err := decide(fsm.Event{Kind: fsm.KindStarted, Registration: fsm.Registration{
		SessionID: "ses_child",
	}}); err != nil {
		return eventlog.Append{}, err
	}
	if err := decide(fsm.Event{Kind: fsm.KindCompleted, Result: "Done: the answer."}); err != nil {
		return eventlog.Append{}, err
	}
	rel, err := artifact.RelPath(benchProject, benchRoot, id)
	if err != nil {
		return eventlog.Append{}, err
	}
	events = append(events,
		fsm.Event{Kind: fsm.KindPersisted, ID: id, At: at, ArtifactPath: rel, ArtifactSize: 200, ArtifactHash: 1},
		fsm.Event{Kind: fsm.KindNotified, ID: id, At: at, NotificationID: projection.TerminalNotificationID(id)},
		fsm.Event{Kind: fsm.KindRead, ID: id, At: at.Add(time.Millisecond)},
	)
	entries := make([]eventlog.Entry, len(events))
	for i, e := range events {
		entries[i] = eventlog.Entry{Kind: uint16(e.Kind), Time: e.At, Payload: e.MarshalPayload()}
	}
	return eventlog.Append{Stream: id, Entries: entries, CheckVersion: true}, nil
}
