package main

import (
	"context"

	"github.com/delegations/delegations/cmd/delegations/api"
	"github.com/delegations/delegations/fsm"
)

var progressVerb = verb{
	name:     "progress",
	synopsis: "[--message TEXT | --message -] ID",
	summary:  "record a heartbeat and the child's latest text (the partial output kept on timeout)",
	example:  `delegations progress --message "Read 3 of 5 files" elegant-blue-tiger`,
	run:      runProgress,
}

func runProgress(ctx context.Context, e *env, args []string) error {
	fs := newFlags(e)
	message := fs.String("message", "", "latest assistant text; - reads stdin")
	return applyToID(ctx, e, fs, args, func(id string) (any, error) {
		text, err := e.text(fs, "message", *message, fsm.MaxMessageLen)
		return api.ProgressRequest{ID: id, Message: text}, err
	})
}
