// Package clocktest is a projection.Clock that moves only when told to,
// for tests of deadlines and waits without sleeping: the daemon's tests in
// one process, and the end-to-end tests through a binary built with
// -tags delegationstest, whose `serve --manual-clock` serves POST /v1/clock
// to move it. The shipped program never links it.
package clocktest

import (
	"context"
	"sync"
	"time"
)

// Clock is a clock that moves only when told to.
type Clock struct {
	mu     sync.Mutex
	now    time.Time
	timers map[*timer]struct{}
	set    chan struct{} // closed and replaced whenever a timer is set
}

type timer struct {
	at time.Time
	f  func()
}

// New returns a clock stopped at start.
func New(start time.Time) *Clock {
	return &Clock{now: start, timers: map[*timer]struct{}{}, set: make(chan struct{})}
}

func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *Clock) AfterFunc(d time.Duration, f func()) func() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &timer{at: c.now.Add(d), f: f}
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
func (c *Clock) AwaitTimer(ctx context.Context, at time.Time) error {
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
func (c *Clock) Advance(d time.Duration) time.Time {
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
