package api

import (
	"context"
	"time"

	"github.com/delegations/delegations/projection"
)

// sleep waits until d has passed on the clock or ctx ends.
func sleep(ctx context.Context, clock projection.Clock, d time.Duration) error {
	done := make(chan struct{})
	defer clock.AfterFunc(d, func() { close(done) })()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
