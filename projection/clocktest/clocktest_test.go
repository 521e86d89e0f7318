package clocktest

import (
	"testing"
	"time"
)

var t0 = time.Date(2026, 11, 21, 10, 0, 0, 0, time.UTC)

func TestManualClock(t *testing.T) {
	c := New(t0)
	fired := make(chan string, 3)
	c.AfterFunc(time.Minute, func() { fired <- "minute" })
	stop := c.AfterFunc(time.Second, func() { fired <- "second" })
	c.AfterFunc(time.Hour, func() { fired <- "hour" })
	if !stop() || stop() {
		t.Fatal("stop: want true once, then false")
	}
	if now := c.Advance(time.Minute); !now.Equal(t0.Add(time.Minute)) {
		t.Fatalf("now %v", now)
	}
	if got := <-fired; got != "minute" {
		t.Fatalf("fired %s", got)
	}
	select {
	case got := <-fired:
		t.Fatalf("%s fired early or after stop", got)
	default:
	}
}
