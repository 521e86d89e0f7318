package api

import (
	"context"
	"sync"
	"time"
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
	set    chan struct{} // closed and replaced whenever a timer is set
}

type manualTimer struct {
	at time.Time
	f  func()
}

// NewManualClock returns a clock stopped at start.
func NewManualClock(start time.Time) *ManualClock {
	return &ManualClock{now: start, timers: map[*manualTimer]struct{}{}, set: make(chan struct{})}
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
	close(c.set)
	c.set = make(chan struct{})
	return func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		_, pending := c.timers[t]
		delete(c.timers, t)
		return pending
	}
}

// AwaitTimer blocks until a timer due at exactly at is set, or ctx ends.
// Tests use it to know that a wait has begun before they move the clock.
func (c *ManualClock) AwaitTimer(ctx context.Context, at time.Time) error {
	for {
		c.mu.Lock()
		set := c.set
		for t := range c.timers {
			if t.at.Equal(at) {
				c.mu.Unlock()
				return nil
			}
		}
		c.mu.Unlock()
		select {
		case <-set:
		case <-ctx.Done():
			return ctx.Err()
		}
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
