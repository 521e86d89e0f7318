package projection

import "time"

// Clock is time as the store reads it: the events' timestamps, the
// deadlines, and the timers that end its waits. The daemon runs its
// deadline sweeper and its retries on the store's clock too, so that a
// test that moves one clock moves all of them. The program runs on
// WallClock; tests in one process run in a testing/synctest bubble, whose
// wall clock is fake, and the end-to-end tests on the manual clock of a
// test build (package clocktest).
type Clock interface {
	Now() time.Time
	// AfterFunc calls f in its own goroutine once d has passed, unless
	// stop is called first.
	AfterFunc(d time.Duration, f func()) (stop func() bool)
}

// WallClock is the real time.
type WallClock struct{}

func (WallClock) Now() time.Time { return time.Now() }

func (WallClock) AfterFunc(d time.Duration, f func()) func() bool { return time.AfterFunc(d, f).Stop }

// stamped is a clock whose readings come from now (Options.Now) and whose
// timers are another clock's.
type stamped struct {
	Clock
	now func() time.Time
}

func (c stamped) Now() time.Time { return c.now() }

// Clock returns the store's clock.
func (s *Store) Clock() Clock { return s.clock }
