package api

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/delegations/delegations/eventlog"
)

// Clock is the daemon's time: the store's timestamps, the deadline
// sweeper's and the retries' timers, and the notifications' quiet periods.
type Clock interface {
	Now() time.Time
	// AfterFunc calls f in its own goroutine once d has passed, unless
	// stop is called first.
	AfterFunc(d time.Duration, f func()) (stop func() bool)
}

// RealClock is the wall clock.
type RealClock struct{}

func (RealClock) Now() time.Time { return time.Now() }

func (RealClock) AfterFunc(d time.Duration, f func()) func() bool {
	return time.AfterFunc(d, f).Stop
}

// ManualClock is a clock that moves only when told to, for tests of
// deadlines without sleeping. `delegations serve --manual-clock` serves
// POST /v1/clock to move it.
type ManualClock struct {
	mu     sync.Mutex
	now    time.Time
	timers map[*manualTimer]struct{}
}

type manualTimer struct {
	at time.Time
	f  func()
}

// NewManualClock returns a clock stopped at start.
func NewManualClock(start time.Time) *ManualClock {
	return &ManualClock{now: start, timers: map[*manualTimer]struct{}{}}
}

func (c *ManualClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *ManualClock) AfterFunc(d time.Duration, f func()) func() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &manualTimer{at: c.now.Add(d), f: f}
	if d <= 0 {
		go f()
		return func() bool { return false }
	}
	c.timers[t] = struct{}{}
	return func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		_, pending := c.timers[t]
		delete(c.timers, t)
		return pending
	}
}

// Advance moves the clock forward by d and fires the timers that are due.
func (c *ManualClock) Advance(d time.Duration) time.Time {
	c.mu.Lock()
	c.now = c.now.Add(d)
	now := c.now
	var due []func()
	for t := range c.timers {
		if !t.at.After(now) {
			due = append(due, t.f)
			delete(c.timers, t)
		}
	}
	c.mu.Unlock()
	for _, f := range due {
		go f()
	}
	return now
}

// waitLog waits until the log has a record after seq, the clock reaches
// until (never, when zero), or ctx ends; only the last is an error.
func waitLog(ctx context.Context, log *eventlog.Log, clock Clock, seq uint64, until time.Time) error {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if !until.IsZero() {
		stop := clock.AfterFunc(until.Sub(clock.Now()), cancel)
		defer stop()
	}
	_, err := log.Wait(wctx, seq)
	switch {
	case ctx.Err() != nil:
		return ctx.Err()
	case errors.Is(err, context.Canceled):
		return nil // the clock reached until
	}
	return err
}

// sleep waits until d has passed on the clock or ctx ends.
func sleep(ctx context.Context, clock Clock, d time.Duration) error {
	done := make(chan struct{})
	defer clock.AfterFunc(d, func() { close(done) })()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
