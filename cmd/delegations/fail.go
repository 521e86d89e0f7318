package main

import (
	"context"

	"github.com/delegations/delegations/fsm"
	"github.com/delegations/delegations/projection"
)

var failVerb = verb{
	name:     "fail",
	synopsis: "--error TEXT ID",
	summary:  "end a delegation with an error",
	example:  `delegations fail --error "child session crashed" elegant-blue-tiger`,
	run:      runFail,
}

func runFail(ctx context.Context, e *env, args []string) error {
	fs := newFlags(e)
	errText := fs.String("error", "", "what went wrong")
	return applyToID(e, fs, args, func(s *projection.Store, id string) (fsm.Delegation, error) {
		if *errText == "" {
			return fsm.Delegation{}, usagef("missing --error")
		}
		return s.Fail(ctx, id, *errText)
	})
}
