package main

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/delegations/delegations/cmd/delegations/api"
	"github.com/delegations/delegations/fsm"
)

var activeVerb = verb{
	name:     "active",
	synopsis: "[--project ID | --project-dir DIR] [--root-session R] [--parent-session P]",
	summary:  "list active delegations, earliest deadline first (for a bridge reconciling after a restart)",
	example:  "delegations --json active --root-session ses_root",
	run:      runActive,
}

func runActive(ctx context.Context, e *env, args []string) error {
	fs := newFlags(e)
	var r api.ActiveRequest
	fs.StringVar(&r.ProjectID, "project", "", "only this project's delegations")
	projectDir := fs.String("project-dir", "", "only the delegations of the project of this directory")
	fs.StringVar(&r.RootSessionID, "root-session", "", "only this root session's delegations")
	fs.StringVar(&r.ParentSessionID, "parent-session", "", "only this parent session's delegations")
	if _, err := parse(e, fs, args, 0); err != nil {
		return err
	}
	if *projectDir != "" {
		dir, err := filepath.Abs(*projectDir)
		if err != nil {
			return err
		}
		r.ProjectDir = dir
	}
	var res api.Delegations
	if err := e.call(ctx, r, &res); err != nil {
		return err
	}
	if e.json {
		return writeJSON(e.stdout, res)
	}
	var b strings.Builder
	for _, d := range res.Delegations {
		fmt.Fprintf(&b, "%s %s deadline %s agent %s parent %s\n", d.ID, d.State, fsm.FormatTime(d.TimeoutAt), d.Agent, d.ParentSessionID)
	}
	_, err := fmt.Fprint(e.stdout, b.String())
	return err
}
