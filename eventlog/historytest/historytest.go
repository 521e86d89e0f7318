// Package historytest writes the history the benchmarks measure against:
// many finished delegations, each whole lifecycle in one append, from
// many goroutines, so that group commit packs thousands of records into
// each commit and building a store of a million events takes minutes,
// not hours. What each lifecycle holds is the caller's: the benchmarks
// measure different things against different histories.
package historytest

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/delegations/delegations/eventlog"
	"github.com/delegations/delegations/fsm"
)

// IDs returns n distinct delegation ids drawn from gen, uniformly from
// the whole space: with a seeded generator, the same ids on every run.
func IDs(gen *fsm.IDGenerator, n int) []string {
	seen := make(map[string]bool, n)
	ids := make([]string, 0, n)
	for len(ids) < n {
		if id := gen.Next(); !seen[id] {
			seen[id] = true
			ids = append(ids, id)
		}
	}
	return ids
}

// IDsAt returns n distinct delegation ids drawn as a store draws them
// (fsm.GenerateID), the i-th at at(i): the ids of one hour share its
// adjective, as in a store this release wrote.
func IDsAt(gen *fsm.IDGenerator, n int, at func(i int) time.Time) ([]string, error) {
	seen := make(map[string]bool, n)
	ids := make([]string, n)
	for i := range ids {
		id, err := fsm.GenerateID(gen, at(i), func(id string) (bool, error) { return seen[id], nil }, 0)
		if err != nil {
			return nil, err
		}
		seen[id] = true
		ids[i] = id
	}
	return ids, nil
}

// Entries returns the entries of events for delegation id: event j
// recorded at at + j*step, its id and time set.
func Entries(id string, at time.Time, step time.Duration, events []fsm.Event) []eventlog.Entry {
	entries := make([]eventlog.Entry, len(events))
	for j, e := range events {
		e.ID, e.At = id, at.Add(time.Duration(j)*step)
		entries[j] = eventlog.Entry{Kind: uint16(e.Kind), Time: e.At, Payload: e.MarshalPayload()}
	}
	return entries
}

// Append appends lifecycle(i) for each i below n to l, from workers
// goroutines, each taking the next i; lifecycle runs in those goroutines.
// A goroutine stops at its first error; Append returns the first error
// once all have stopped.
func Append(ctx context.Context, l *eventlog.Log, n, workers int, lifecycle func(i int) (eventlog.Append, error)) error {
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for range workers {
		wg.Go(func() {
			for i := int(next.Add(1)) - 1; i < n; i = int(next.Add(1)) - 1 {
				a, err := lifecycle(i)
				if err == nil {
					_, err = l.Append(ctx, a)
				}
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// Finished returns the events of a whole lifecycle that ends read, as
// the history benchmarks (BenchmarkLifecyclesHistory, BenchmarkViewPages)
// write it: registered with reg's sessions and project, started, three
// progress texts, completed, its artifact persisted at rel, notified
// (notification is the terminal notification's id) and read.
func Finished(reg fsm.Registration, rel, notification string) []fsm.Event {
	return []fsm.Event{
		{Kind: fsm.KindRegistered, Registration: fsm.Registration{ProjectID: reg.ProjectID, RootSessionID: reg.RootSessionID, ParentSessionID: reg.ParentSessionID,
			Agent: "researcher", Prompt: "Find the flaky test in the login flow.", Timeout: time.Hour}},
		{Kind: fsm.KindStarted, Registration: fsm.Registration{SessionID: "ses_child"}},
		{Kind: fsm.KindProgressed, Message: "step 0: reading the retry layer"},
		{Kind: fsm.KindProgressed, Message: "step 1: reading the retry layer"},
		{Kind: fsm.KindProgressed, Message: "step 2: reading the retry layer"},
		{Kind: fsm.KindCompleted, Result: "TestLock races the token refresh.", Title: "Flaky test", Description: "The refresh races the logout."},
		{Kind: fsm.KindPersisted, ArtifactPath: rel, ArtifactSize: 600, ArtifactHash: 1},
		{Kind: fsm.KindNotified, NotificationID: notification},
		{Kind: fsm.KindRead},
	}
}
