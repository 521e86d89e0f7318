package main

import (
	"context"

	"github.com/delegations/delegations/cmd/delegations/api"
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
	return applyToID(ctx, e, fs, args, func(id string) (any, error) {
		return api.CancelRequest{ID: id, Reason: *reason}, nil
	})
}
