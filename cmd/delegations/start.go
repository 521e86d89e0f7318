package main

import (
	"context"

	"github.com/delegations/delegations/fsm"
	"github.com/delegations/delegations/projection"
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
	return applyToID(e, fs, args, func(s *projection.Store, id string) (fsm.Delegation, error) {
		return s.Start(ctx, id, *session)
	})
}
