package main

import "context"

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
	id, err := parseID(e, fs, args)
	if err != nil {
		return err
	}
	if *errText == "" {
		return usagef("missing --error")
	}
	s, err := e.open()
	if err != nil {
		return err
	}
	d, err := s.Fail(ctx, id, *errText)
	if err != nil {
		return err
	}
	return printRecord(e, d)
}
