package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/delegations/delegations/cmd/delegations/api"
	"github.com/delegations/delegations/eventlog"
	"github.com/delegations/delegations/projection"
)

// errFindings ends a reporting verb that found something wrong: the
// report is printed, the exit code is 1.
var errFindings = reported{errors.New("findings")}

// inspect runs a reporting verb that only reads the log (replay, verify,
// timeline): through the daemon when one runs; otherwise on the log opened
// alone, without the recovery opening the store does, so it sees the data
// directory exactly as it is.
func (e *env) inspect(ctx context.Context, req any, alone func(log *eventlog.Log, dir string) (api.Rendered, error)) error {
	dir, err := dataDir(e.data)
	if err != nil {
		return err
	}
	var res api.Rendered
	c, err := api.Dial(ctx, socketPath(e.socket, dir))
	switch {
	case err == nil:
		e.be = c
		err = c.Call(ctx, e.verb.name, req, &res)
	case errors.Is(err, api.ErrNoDaemon):
		defer projection.SetGCPolicy()() // this process does nothing else
		err = e.withLog(dir, func(l *eventlog.Log, abs string) error {
			var err error
			res, err = alone(l, abs)
			return err
		})
	}
	if err != nil {
		return err
	}
	return e.printRendered(res)
}

// withLog opens the log of data directory dir alone and read-only (no
// views caught up, nothing recovered or written) for fn.
func (e *env) withLog(dir string, fn func(l *eventlog.Log, abs string) error) error {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	path := filepath.Join(abs, projection.LogFile)
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("no log at %s: nothing was recorded in this data directory (check --data)", path)
	}
	// Read-only: nothing to recover here, and the command works in a
	// read-only data directory, beside other readers.
	l, err := eventlog.Open(path, eventlog.Options{LockTimeout: 2 * time.Second, Logger: e.logger(), ReadOnly: true})
	if err != nil {
		return err
	}
	err = fn(l, abs)
	if cerr := l.Close(); cerr != nil && err == nil {
		err = cerr
	}
	return err
}

// needDaemon refuses what only makes sense through a daemon: without one
// this process holds the log, and nothing else can change it while it
// waits.
func (e *env) needDaemon(ctx context.Context, what string) error {
	be, err := e.connect(ctx)
	if err != nil {
		return err
	}
	if _, embedded := be.(local); embedded {
		return fmt.Errorf("%s needs a running daemon: without one this command would hold the log, so nothing could change while it waits, and every writer would be locked out; start `delegations serve`", what)
	}
	return nil
}

// printRendered prints a report: its JSON with --json, else its text.
func (e *env) printRendered(res api.Rendered) error {
	var err error
	if e.json {
		_, err = fmt.Fprintf(e.stdout, "%s\n", res.JSON)
	} else {
		_, err = fmt.Fprint(e.stdout, res.Text)
	}
	if err == nil && res.Failed {
		return errFindings
	}
	return err
}

func (e *env) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(e.stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// progress returns a callback that draws the progress of long work on
// stderr when it is a terminal, and nil otherwise.
func (e *env) progress() func(done, total int) {
	f, ok := e.stderr.(*os.File)
	if !ok {
		return nil
	}
	if fi, err := f.Stat(); err != nil || fi.Mode()&os.ModeCharDevice == 0 {
		return nil
	}
	name := e.verb.name
	return func(done, total int) {
		if done >= total {
			fmt.Fprintf(f, "\r\033[K") // done: leave the line clean for the report
			return
		}
		fmt.Fprintf(f, "\r\033[K%s: %d/%d", name, done, total)
	}
}
