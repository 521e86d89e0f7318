package main

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/delegations/delegations/cmd/delegations/api"
	"github.com/delegations/delegations/fsm"
)

var registerVerb = verb{
	name: "register",
	synopsis: "--root-session R --parent-session P --agent NAME (--project ID | --project-dir DIR)\n" +
		"         [--parent-message M] [--parent-agent A] [--session CHILD] [--model M] [--timeout 15m]\n" +
		"         [--idempotency-key K] [--prompt TEXT | --prompt - | prompt on stdin]",
	summary: "record a new delegation and print its id",
	example: `delegations register --root-session ses_root --parent-session ses_root --agent researcher --project-dir . --prompt "Find the flaky test"`,
	run:     runRegister,
}

func runRegister(ctx context.Context, e *env, args []string) error {
	fs := newFlags(e)
	var r api.RegisterRequest
	var prompt string
	var timeout time.Duration
	fs.StringVar(&r.RootSessionID, "root-session", "", "root session id (scopes list, read and compaction)")
	fs.StringVar(&r.ParentSessionID, "parent-session", "", "session that called delegate")
	fs.StringVar(&r.Agent, "agent", "", "agent that runs the delegation")
	fs.StringVar(&r.ProjectID, "project", "", "project id")
	fs.StringVar(&r.ProjectDir, "project-dir", "", "directory to derive the project id from (as the plugin does)")
	fs.StringVar(&r.ParentMessageID, "parent-message", "", "message of the delegate call")
	fs.StringVar(&r.ParentAgent, "parent-agent", "", "agent of the parent session")
	fs.StringVar(&r.SessionID, "session", "", "child session id, if already created")
	fs.StringVar(&r.Model, "model", "", "model of the child session")
	fs.DurationVar(&timeout, "timeout", 0, "deadline after registration (default 15m, or $DELEGATIONS_DEFAULT_TIMEOUT)")
	fs.StringVar(&r.IdempotencyKey, "idempotency-key", "", "a retry with the same key returns the first delegation")
	fs.StringVar(&prompt, "prompt", "", "the task; - or absent with a pipe reads stdin")
	if _, err := parse(e, fs, args, 0); err != nil {
		return err
	}
	var missing []string
	for _, f := range []struct{ flag, value string }{
		{"--root-session", r.RootSessionID}, {"--parent-session", r.ParentSessionID}, {"--agent", r.Agent},
	} {
		if f.value == "" {
			missing = append(missing, f.flag)
		}
	}
	if len(missing) > 0 {
		return usagef("missing %s", strings.Join(missing, ", "))
	}
	switch {
	case r.ProjectID == "" && r.ProjectDir == "":
		return usagef("give --project ID or --project-dir DIR")
	case r.ProjectID != "" && r.ProjectDir != "":
		return usagef("give --project or --project-dir, not both")
	case r.ProjectDir != "":
		// The daemon does not share our working directory.
		abs, err := filepath.Abs(r.ProjectDir)
		if err != nil {
			return fmt.Errorf("--project-dir %q: %w", r.ProjectDir, err)
		}
		r.ProjectDir = abs
	}
	if timeout < 0 {
		return usagef("--timeout must not be negative")
	}
	r.TimeoutMs = timeout.Milliseconds()
	var err error
	if r.Prompt, err = e.text(fs, "prompt", prompt, fsm.MaxPromptLen); err != nil {
		return err
	}
	var d fsm.Delegation
	if err := e.call(ctx, r, &d); err != nil {
		return err
	}
	if e.json {
		return writeJSON(e.stdout, d)
	}
	_, err = fmt.Fprintln(e.stdout, d.ID)
	return err
}
