package main

import (
	"context"

	"github.com/delegations/delegations/fsm"
	"github.com/delegations/delegations/projection"
)

var cancelVerb = verb{
	name:     "cancel",
	synopsis: "[--reason TEXT] ID",
	summary:  "end a delegation before completion",
	example:  `delegations cancel --reason "user changed their mind" elegant-blue-tiger`,
	run:      runCancel,
}

func runCancel(ctx context.Context, e *env, args []string) error {
	fs := newFlags(e)
	reason := fs.String("reason", "", "why it was cancelled")
	return applyToID(e, fs, args, func(s *projection.Store, id string) (fsm.Delegation, error) {
		return s.Cancel(ctx, id, *reason)
	})
}
