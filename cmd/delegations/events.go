package main

import (
	"context"
	"fmt"

	"github.com/delegations/delegations/cmd/delegations/api"
)

var eventsVerb = verb{
	name:     "events",
	synopsis: "[--from SEQ] [--delegation ID] [--follow]",
	summary:  "print the event log, refused commands included (JSON lines with --json)",
	example:  "delegations --json events --follow --delegation elegant-blue-tiger",
	run:      runEvents,
}

func runEvents(ctx context.Context, e *env, args []string) error {
	fs := newFlags(e)
	var r api.EventsRequest
	fs.Uint64Var(&r.From, "from", 1, "first sequence number")
	fs.StringVar(&r.Delegation, "delegation", "", "only this delegation's events")
	fs.BoolVar(&r.Follow, "follow", false, "keep printing new events until interrupted (needs a running daemon)")
	if _, err := parse(e, fs, args, 0); err != nil {
		return err
	}
	if r.Delegation != "" {
		id, err := idArg(r.Delegation)
		if err != nil {
			return err
		}
		r.Delegation = id
	}
	if r.Follow {
		if err := e.needDaemon(ctx, "events --follow"); err != nil {
			return err
		}
	}
	be, err := e.connect(ctx)
	if err != nil {
		return err
	}
	err = be.Events(ctx, r, func(ev api.Event) error {
		if e.json {
			return writeJSON(e.stdout, ev)
		}
		_, err := fmt.Fprintln(e.stdout, ev.Line())
		return err
	})
	if r.Follow && ctx.Err() != nil {
		return nil // interrupted: the normal end of a follow
	}
	return err
}
