package main

import (
	"context"

	"github.com/delegations/delegations/cmd/delegations/api"
)

var startVerb = verb{
	name:     "start",
	synopsis: "[--session CHILD] ID",
	summary:  "mark a registered delegation running",
	example:  "delegations start --session ses_child elegant-blue-tiger",
	run:      runStart,
}

func runStart(ctx context.Context, e *env, args []string) error {
	fs := newFlags(e)
	session := fs.String("session", "", "child session id")
	return applyToID(ctx, e, fs, args, func(id string) (any, error) {
		return api.StartRequest{ID: id, SessionID: *session}, nil
	})
}
