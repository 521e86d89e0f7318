package main

import "context"

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
	id, err := parseID(e, fs, args)
	if err != nil {
		return err
	}
	s, err := e.open()
	if err != nil {
		return err
	}
	d, err := s.Start(ctx, id, *session)
	if err != nil {
		return err
	}
	return printRecord(e, d)
}
