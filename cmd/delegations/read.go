package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"

	"github.com/delegations/delegations/cmd/delegations/api"
	"github.com/delegations/delegations/fsm"
	"github.com/delegations/delegations/projection"
)

var readVerb = verb{
	name:     "read",
	synopsis: "--root-session R [--wait DURATION] ID",
	summary:  "return a delegation's result as delegation_read does, and mark it read",
	example:  "delegations read --root-session ses_root elegant-blue-tiger",
	run:      runRead,
}

func runRead(ctx context.Context, e *env, args []string) error {
	fs := newFlags(e)
	root := fs.String("root-session", "", "the caller's root session: only its delegations are visible")
	wait := fs.Duration("wait", 0, "wait this long for an active delegation to finish")
	rest, err := parse(e, fs, args, 1)
	if err != nil {
		return err
	}
	if *root == "" {
		return usagef("missing --root-session")
	}
	if *wait < 0 {
		return usagef("--wait must not be negative")
	}
	if *wait > 0 {
		if err := e.needDaemon(ctx, "read --wait"); err != nil {
			return err
		}
	}
	var res projection.ReadResult
	if err := e.call(ctx, api.ReadRequest{RootSessionID: *root, ID: rest[0], WaitMs: wait.Milliseconds()}, &res); err != nil {
		return err
	}
	if e.json {
		return writeJSON(e.stdout, res)
	}
	// Verbatim: a bridge reading stdout gets the artifact's bytes, not one
	// more newline than the file has.
	_, err = io.WriteString(e.stdout, res.Text)
	return err
}

var listVerb = verb{
	name:     "list",
	synopsis: "--root-session R [--status S] [--unread] [--order id|time] [--limit N [--after ID]]",
	summary:  "list a root session's delegations as delegation_list does",
	example:  "delegations list --root-session ses_root --unread",
	run:      runList,
}

func runList(ctx context.Context, e *env, args []string) error {
	fs := newFlags(e)
	root := fs.String("root-session", "", "the caller's root session")
	status := fs.String("status", "", "only this status: registered, running, complete, error, cancelled, timeout")
	unread := fs.Bool("unread", false, "only unread delegations")
	order := fs.String("order", "id", "id (the plugin's order) or time (registration order)")
	limit := fs.Int("limit", 0, "at most this many delegations (0: all); stderr then names the --after of the next page")
	after := fs.String("after", "", "start after this delegation id: the cursor a --limit listing printed")
	if _, err := parse(e, fs, args, 0); err != nil {
		return err
	}
	if *root == "" {
		return usagef("missing --root-session")
	}
	if *order != "id" && *order != "time" {
		return usagef("--order is id or time, not %q", *order)
	}
	if *status != "" {
		if _, err := fsm.ParseState(*status); err != nil {
			return usagef("--status: %v", err)
		}
	}
	if *limit < 0 {
		return usagef("--limit %d is negative", *limit)
	}
	// Text alone unless --json asks for the records, which then pass
	// through undecoded: --json prints the daemon's bytes.
	var res struct {
		Delegations json.RawMessage `json:"delegations"`
		Text        string          `json:"text"`
		Next        string          `json:"next,omitempty"`
	}
	req := api.ListRequest{RootSessionID: *root, Status: *status, Unread: *unread, Order: *order, Limit: *limit, After: *after, TextOnly: !e.json}
	if err := e.call(ctx, req, &res); err != nil {
		return err
	}
	if e.json {
		return writeJSON(e.stdout, res)
	}
	if _, err := fmt.Fprintln(e.stdout, res.Text); err != nil {
		return err
	}
	if res.Next != "" {
		fmt.Fprintf(e.stderr, "more: add --after %s for the next page\n", res.Next)
	}
	return nil
}
