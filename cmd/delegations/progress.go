package main

import (
	"context"

	"github.com/delegations/delegations/fsm"
	"github.com/delegations/delegations/projection"
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
	return applyToID(e, fs, args, func(s *projection.Store, id string) (fsm.Delegation, error) {
		text, err := e.text(fs, "message", *message, fsm.MaxMessageLen)
		if err != nil {
			return fsm.Delegation{}, err
		}
		return s.Progress(ctx, id, text)
	})
}
