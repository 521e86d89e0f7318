// Package eventlogtest is the event log's contract, written once and run
// against every backend: a plain bbolt file (eventlog's tests), a replica
// whose upstream is etcd and etcdlog's own Log (etcdlog's tests). A daemon
// sharing a log through etcd holds an *eventlog.Log opened with
// Options.Upstream, so whatever a caller may rely on from a single-file log
// (sequence numbers without gaps, idempotency keys, expected versions,
// refused input, Wait, cancellation) must hold there too; one suite is how
// that stays true as either side changes.
//
// Each clause is a subtest that opens a new, empty log through the
// backend's open function. What only one backend has (bbolt's file lock
// and damage checks, etcd's faults and request limits, two processes on
// one etcd) is tested beside that backend, not here.
package eventlogtest

import (
	"context"
	"iter"
	"testing"

	"github.com/delegations/delegations/eventlog"
)

// Log is what the contract is about: the methods an *eventlog.Log offers,
// plain or a replica, and which etcdlog's Log offers as well.
type Log interface {
	Append(ctx context.Context, a eventlog.Append) (eventlog.Result, error)
	Records(from uint64) iter.Seq2[eventlog.Record, error]
	Stream(stream string) ([]eventlog.Record, error)
	Last() uint64
	Wait(ctx context.Context, after uint64) (uint64, error)
	Close() error
}

// Backend is one new, empty log for one clause, and what the clause may
// need besides. Every Log a backend hands out is closed by the backend when
// the test ends; a clause may close one earlier.
type Backend struct {
	Log Log
	// Reopen opens the same log again after the clause has closed Log, as
	// a process that restarts would.
	Reopen func(t *testing.T) Log
	// Writer, if not nil, opens a second writer of the same log: another
	// process sharing it. Wait must be woken by its appends. A backend
	// with one writer per log leaves it nil, and Log appends instead.
	Writer func(t *testing.T) Log
	// MaxEntries is the most entries one append may hold:
	// eventlog.MaxEntries, or fewer where the backend's transactions are
	// smaller.
	MaxEntries int
	// PageLen is how many records the backend reads at a time; the suite
	// reads across and from around its multiples.
	PageLen int
}

// Run runs every clause of the contract, each as a subtest on a log from
// open.
func Run(t *testing.T, open func(t *testing.T) Backend) {
	for _, c := range []struct {
		name string
		run  func(t *testing.T, b Backend)
	}{
		{"AppendReadReopen", appendReadReopen},
		{"RecordsAcrossPages", recordsAcrossPages},
		{"LargePayloads", largePayloads},
		{"IdempotencyKey", idempotencyKey},
		{"ExpectedVersion", expectedVersion},
		{"BadInput", badInput},
		{"ConcurrentAppenders", concurrentAppenders},
		{"ConcurrentAppendsToOneStream", concurrentAppendsToOneStream},
		{"Wait", wait},
		{"CancelledAppend", cancelledAppend},
	} {
		t.Run(c.name, func(t *testing.T) {
			b := open(t)
			if b.Log == nil || b.Reopen == nil || b.MaxEntries <= 0 || b.PageLen <= 0 {
				t.Fatalf("backend lacks a log, Reopen, MaxEntries or PageLen: %+v", b)
			}
			c.run(t, b)
		})
	}
}
