//go:build delegationstest

package api

import (
	"context"
	"fmt"
	"time"

	"github.com/delegations/delegations/fsm"
	"github.com/delegations/delegations/projection/clocktest"
)

// A test build serves POST /v1/clock: {"advanceMs": n} moves the clock of
// a daemon run with `serve --manual-clock` (a clocktest.Clock) forward by
// n milliseconds and answers its time, {"now": ...}.
func init() { endpoints["clock"] = verb(small, (*Service).advanceClock) }

type clockRequest struct {
	AdvanceMs int64 `json:"advanceMs"`
}

func (s *Service) advanceClock(_ context.Context, req clockRequest) (map[string]string, error) {
	c, ok := s.Store().Clock().(*clocktest.Clock)
	if !ok {
		return nil, fmt.Errorf("%w: /v1/clock exists only when the daemon runs with --manual-clock", errNoEndpoint)
	}
	if req.AdvanceMs < 0 {
		return nil, fmt.Errorf("%w: advanceMs must not be negative: the clock only moves forward", fsm.ErrInvalid)
	}
	return map[string]string{"now": fsm.FormatTime(c.Advance(time.Duration(req.AdvanceMs) * time.Millisecond))}, nil
}
