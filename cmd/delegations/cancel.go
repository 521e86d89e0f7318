package main

import "context"

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
	id, err := parseID(e, fs, args)
	if err != nil {
		return err
	}
	s, err := e.open()
	if err != nil {
		return err
	}
	d, err := s.Cancel(ctx, id, *reason)
	if err != nil {
		return err
	}
	return printRecord(e, d)
}
