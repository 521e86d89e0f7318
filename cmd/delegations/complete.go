package main

import (
	"context"

	"github.com/delegations/delegations/fsm"
	"github.com/delegations/delegations/projection"
)

var completeVerb = verb{
	name:     "complete",
	synopsis: "[--title T] [--description D] [--result TEXT | --result - | result on stdin] ID",
	summary:  "end a delegation with its result",
	example:  `echo "The flaky test races on the cache." | delegations complete elegant-blue-tiger`,
	run:      runComplete,
}

func runComplete(ctx context.Context, e *env, args []string) error {
	fs := newFlags(e)
	result := fs.String("result", "", "the result; - or absent with a pipe reads stdin")
	title := fs.String("title", "", "title (default: the result's first line, cut to 30 characters)")
	description := fs.String("description", "", "description (default: the result's first 150 characters)")
	return applyToID(e, fs, args, func(s *projection.Store, id string) (fsm.Delegation, error) {
		text, err := e.text(fs, "result", *result, fsm.MaxResultLen)
		if err != nil {
			return fsm.Delegation{}, err
		}
		return s.Complete(ctx, id, text, *title, *description)
	})
}
