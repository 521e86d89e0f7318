package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/delegations/delegations/cmd/delegations/api"
	"github.com/delegations/delegations/fsm"
)

var showVerb = verb{
	name:     "show",
	synopsis: "ID",
	summary:  "print a delegation's record",
	example:  "delegations --json show elegant-blue-tiger",
	run:      runShow,
}

func runShow(ctx context.Context, e *env, args []string) error {
	fs := newFlags(e)
	id, err := parseID(e, fs, args)
	if err != nil {
		return err
	}
	var d fsm.Delegation
	if err := e.call(ctx, api.IDRequest{ID: id}, &d); err != nil {
		return err
	}
	if e.json {
		return writeJSON(e.stdout, d)
	}
	return writeRecordText(e.stdout, d)
}

// writeRecordText prints a record for people: one "Label: value" line per
// set field, then the long texts indented below.
func writeRecordText(w io.Writer, d fsm.Delegation) error {
	var b strings.Builder
	line := func(label, value string) {
		if value != "" {
			fmt.Fprintf(&b, "%-13s %s\n", label+":", value)
		}
	}
	when := func(t time.Time) string {
		if t.IsZero() {
			return ""
		}
		return fsm.FormatTime(t)
	}
	line("ID", d.ID)
	line("Status", string(d.State))
	line("Agent", d.Agent)
	line("Model", d.Model)
	line("Project", d.ProjectID)
	line("Root session", d.RootSessionID)
	line("Parent", d.ParentSessionID)
	line("Parent msg", d.ParentMessageID)
	line("Parent agent", d.ParentAgent)
	line("Session", d.SessionID)
	line("Created", when(d.CreatedAt))
	line("Started", when(d.StartedAt))
	line("Heartbeat", when(d.LastHeartbeatAt))
	line("Completed", when(d.CompletedAt))
	if !d.TimeoutAt.IsZero() {
		line("Deadline", fmt.Sprintf("%s (timeout %s)", when(d.TimeoutAt), d.Timeout))
	}
	line("Title", d.Title)
	line("Description", d.Description)
	line("Error", d.Error)
	if d.Rejected > 0 {
		line("Refused", fmt.Sprintf("%d late command(s) after %s (see `delegations events --delegation %s`)", d.Rejected, d.State, d.ID))
	}
	line("Events", fmt.Sprint(d.Version))
	block := func(label, text string) {
		if text != "" {
			fmt.Fprintf(&b, "\n%s:\n", label)
			for l := range strings.Lines(text) {
				b.WriteString("  " + strings.TrimRight(l, "\n") + "\n")
			}
		}
	}
	block("Prompt", d.Prompt)
	if d.State.Active() {
		block("Progress", d.Progress)
	} else {
		block("Result", d.ResultText())
	}
	_, err := io.WriteString(w, b.String())
	return err
}
