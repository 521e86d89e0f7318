package api

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/delegations/delegations/eventlog"
	"github.com/delegations/delegations/fsm"
	"github.com/delegations/delegations/projection"
)

// keeper keeps the daemon's store writable. After a failed commit the log
// refuses every write (the commit's outcome is unknown: it may or may not
// be on disk); the keeper then reopens it, with backoff on the daemon's
// clock, until an open succeeds, and swaps the new store into the service.
// Opening reads what is on disk, so the outcome of the failed commit is
// known again: a client that retries with the same idempotency key gets
// the first result if the commit had landed, and a new one if not.
type keeper struct {
	svc    *Service
	open   func() (*projection.Store, error)
	clock  projection.Clock
	logger *slog.Logger
	kick   chan struct{} // a write failed; 1-buffered

	mu       sync.Mutex
	cause    error     // the failed write; nil while ok
	since    time.Time // when it failed
	attempts int       // reopen attempts since
	lastErr  error     // why the last attempt failed
	next     time.Time // when the next attempt is due
	backoff  time.Duration
	// reopenedAt is the log's last sequence number when it was last
	// reopened: a failure before any new commit keeps the backoff growing.
	reopenedAt uint64
	swapped    chan struct{} // closed and replaced at every swap
}

func newKeeper(svc *Service, open func() (*projection.Store, error), clock projection.Clock, logger *slog.Logger) *keeper {
	return &keeper{svc: svc, open: open, clock: clock, logger: logger, kick: make(chan struct{}, 1),
		backoff: retryFirst, reopenedAt: svc.Store().Log().Last(), swapped: make(chan struct{})}
}

// failed notes err if it says the log refuses writes, and returns err,
// explained for a client.
func (k *keeper) failed(err error) error {
	if !errors.Is(err, eventlog.ErrBroken) && !(errors.Is(err, eventlog.ErrClosed) && k.broken()) {
		return err
	}
	k.mu.Lock()
	if k.cause == nil && errors.Is(err, eventlog.ErrBroken) {
		k.cause, k.since, k.attempts, k.lastErr = err, k.clock.Now(), 0, nil
		if k.svc.Store().Log().Last() > k.reopenedAt {
			k.backoff = retryFirst // the log wrote since it was last reopened
		}
		k.logger.Error("a write failed; the log refuses writes until it is reopened, which the daemon does by itself",
			"err", err, "firstAttemptIn", k.backoff)
		select {
		case k.kick <- struct{}{}:
		default:
		}
	}
	attempts := k.attempts
	k.mu.Unlock()
	return fmt.Errorf("%w; the daemon reopens the log by itself, with backoff (%d attempts so far; GET /v1/status shows its state): "+
		"run the command again once it has (a register with the same idempotency key)", err, attempts)
}

// broken reports whether the daemon is recovering from a failed write.
func (k *keeper) broken() bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.cause != nil
}

// replaced returns a channel closed when the store is next replaced.
func (k *keeper) replaced() <-chan struct{} {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.swapped
}

// state fills in the health fields of a status.
func (k *keeper) state(st *Status) {
	k.mu.Lock()
	defer k.mu.Unlock()
	st.State = "ok"
	if k.cause == nil {
		return
	}
	st.State = "broken"
	st.Error = k.cause.Error()
	st.BrokenSince = fsm.FormatTime(k.since)
	st.Attempts = k.attempts
	if k.lastErr != nil {
		st.LastAttemptError = k.lastErr.Error()
	}
	if !k.next.IsZero() {
		st.NextAttempt = fsm.FormatTime(k.next)
	}
}

// run reopens the log after each failed write until ctx ends.
func (k *keeper) run(ctx context.Context) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-k.kick:
		}
		for k.broken() {
			k.mu.Lock()
			wait := k.backoff
			k.next = k.clock.Now().Add(wait)
			k.backoff = min(2*k.backoff, retryMax)
			k.mu.Unlock()
			if err := sleep(ctx, k.clock, wait); err != nil {
				return nil
			}
			k.reopen()
		}
	}
}

// reopen closes the broken store and opens it again.
func (k *keeper) reopen() {
	k.mu.Lock()
	k.attempts++
	attempt := k.attempts
	k.next = time.Time{}
	k.mu.Unlock()
	k.svc.reopening.Lock()
	defer k.svc.reopening.Unlock()
	old := k.svc.Store()
	acked := old.Log().Last()
	k.logger.Warn("reopening the log after a failed write", "attempt", attempt, "lastAcknowledged", acked)
	// Closing waits for running commands; with the log broken they fail at
	// once. Waits on the old store end, and go on on the new one.
	if err := old.Close(); err != nil {
		k.logger.Warn("closing the broken log", "err", err)
	}
	s, err := k.open()
	if err != nil {
		k.logger.Error("reopening the log failed; trying again later", "attempt", attempt, "err", err)
		k.mu.Lock()
		k.lastErr = err
		k.mu.Unlock()
		return
	}
	last := s.Log().Last()
	k.svc.store.Store(s)
	if last > acked {
		k.logger.Warn("the commit that failed had reached the disk: its records are kept; retries with the same idempotency key return them",
			"from", acked+1, "to", last)
	} else {
		k.logger.Info("the commit that failed had not reached the disk; retries append it again")
	}
	k.logger.Info("reopened the log; writes resume", "attempt", attempt, "lastSeq", last)
	k.mu.Lock()
	k.cause, k.lastErr, k.attempts, k.reopenedAt = nil, nil, 0, last
	close(k.swapped)
	k.swapped = make(chan struct{})
	k.mu.Unlock()
}
