package main

import (
	"context"
	"fmt"

	"github.com/delegations/delegations/cmd/delegations/api"
	"github.com/delegations/delegations/projection"
)

var notificationsVerb = verb{
	name:     "notifications",
	synopsis: "[--parent-session P] [--wait DURATION]",
	summary:  "print the notifications due for delivery; each stays until acknowledged",
	example:  "delegations --json notifications --parent-session ses_parent",
	run:      runNotifications,
}

func runNotifications(ctx context.Context, e *env, args []string) error {
	fs := newFlags(e)
	parent := fs.String("parent-session", "", "only this parent session's notifications")
	wait := fs.Duration("wait", 0, "when none is due, wait this long for one")
	if _, err := parse(e, fs, args, 0); err != nil {
		return err
	}
	if *wait < 0 {
		return usagef("--wait must not be negative")
	}
	if *wait > 0 {
		if err := e.needDaemon(ctx, "notifications --wait"); err != nil {
			return err
		}
	}
	var res api.Notifications
	if err := e.call(ctx, api.NotificationsRequest{ParentSessionID: *parent, WaitMs: wait.Milliseconds()}, &res); err != nil {
		return err
	}
	if e.json {
		return writeJSON(e.stdout, res)
	}
	for _, n := range res.Notifications {
		if _, err := fmt.Fprintf(e.stdout, "# %s (to %s)\n%s\n\n", n.ID, n.Parent, n.Text); err != nil {
			return err
		}
	}
	return nil
}

var ackVerb = verb{
	name:     "ack",
	synopsis: "[--failed REASON] NOTIFICATION_ID",
	summary:  "record that a notification was delivered (or, with --failed, that delivery failed)",
	example:  "delegations ack terminal:elegant-blue-tiger",
	run:      runAck,
}

func runAck(ctx context.Context, e *env, args []string) error {
	fs := newFlags(e)
	failed := fs.String("failed", "", "delivery failed for this reason; the notification stays due")
	rest, err := parse(e, fs, args, 1)
	if err != nil {
		return err
	}
	var res projection.AckResult
	if err := e.call(ctx, api.AckRequest{ID: rest[0], Failed: *failed}, &res); err != nil {
		return err
	}
	if e.json {
		return writeJSON(e.stdout, res)
	}
	switch {
	case *failed != "":
		_, err = fmt.Fprintf(e.stdout, "%s delivery failure recorded; it stays due\n", res.ID)
	case res.Already:
		_, err = fmt.Fprintf(e.stdout, "%s was already acknowledged\n", res.ID)
	default:
		_, err = fmt.Fprintf(e.stdout, "%s acknowledged\n", res.ID)
	}
	return err
}
