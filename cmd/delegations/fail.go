package main

import (
	"context"

	"github.com/delegations/delegations/cmd/delegations/api"
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
	return applyToID(ctx, e, fs, args, func(id string) (any, error) {
		if *errText == "" {
			return nil, usagef("missing --error")
		}
		return api.FailRequest{ID: id, Error: *errText}, nil
	})
}
