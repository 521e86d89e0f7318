package main

import (
	"context"

	"github.com/delegations/delegations/cmd/delegations/api"
	"github.com/delegations/delegations/fsm"
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
	return applyToID(ctx, e, fs, args, func(id string) (any, error) {
		text, err := e.text(fs, "result", *result, fsm.MaxResultLen)
		return api.CompleteRequest{ID: id, Result: text, Title: *title, Description: *description}, err
	})
}
