package main

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"

	"github.com/delegations/delegations/cmd/delegations/api"
	"github.com/delegations/delegations/eventlog"
)

var backupVerb = verb{
	name:     "backup",
	synopsis: "FILE",
	summary:  "write a consistent copy of the log to FILE (never overwritten), through the daemon while it serves",
	example:  "delegations backup ~/delegations-$(date +%F).db",
	run:      runBackup,
}

func runBackup(ctx context.Context, e *env, args []string) error {
	rest, err := parse(e, newFlags(e), args, 1)
	if err != nil {
		return err
	}
	path, err := filepath.Abs(rest[0])
	if err != nil {
		return err
	}
	dir, err := dataDir(e.data)
	if err != nil {
		return err
	}
	req := api.BackupRequest{Path: path}
	var res api.BackupResponse
	c, err := api.Dial(ctx, socketPath(e.socket, dir))
	switch {
	case err == nil:
		e.be = c
		err = c.Call(ctx, "backup", req, &res)
	case errors.Is(err, api.ErrNoDaemon):
		// Alone: read-only, so a backup works beside other readers and
		// in a read-only data directory.
		err = e.withLog(dir, func(l *eventlog.Log, _ string) error {
			var err error
			res, err = api.Backup(l, req)
			return err
		})
	}
	if err != nil {
		return err
	}
	if e.json {
		return writeJSON(e.stdout, res)
	}
	_, err = fmt.Fprintf(e.stdout, "wrote %s (%d bytes, records up to %d at least)\n", res.Path, res.Bytes, res.LastSeq)
	return err
}
