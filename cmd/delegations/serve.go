package main

import (
	"context"
	"log/slog"
	"time"

	"github.com/delegations/delegations/cmd/delegations/api"
)

var serveVerb = verb{
	name:     "serve",
	synopsis: "[--socket PATH] [--default-timeout 15m] [--log-level info]",
	summary:  "run the daemon: the API on a unix socket, deadlines, artifact retries",
	example:  "delegations serve &  # then every other verb goes through it",
	run:      runServe,
}

func runServe(ctx context.Context, e *env, args []string) error {
	fs := newFlags(e)
	socket := fs.String("socket", "", "listen here (default: --socket before the verb, $DELEGATIONS_SOCKET, else .delegations.sock in the data directory)")
	timeout := fs.Duration("default-timeout", 0, "deadline of delegations registered without one (default: $DELEGATIONS_DEFAULT_TIMEOUT, else 15m)")
	level := fs.String("log-level", "info", "debug, info, warn or error")
	manual := fs.Bool("manual-clock", false, "for tests: the clock stands still until POST /v1/clock moves it")
	if _, err := parse(e, fs, args, 0); err != nil {
		return err
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(*level)); err != nil {
		return usagef("--log-level: %v", err)
	}
	if *timeout == 0 {
		var err error
		if *timeout, err = defaultTimeout(); err != nil {
			return err
		}
	}
	dir, err := dataDir(e.data)
	if err != nil {
		return err
	}
	if *socket == "" {
		*socket = socketPath(e.socket, dir)
	}
	opts := &slog.HandlerOptions{Level: lvl}
	var h slog.Handler = slog.NewTextHandler(e.stderr, opts)
	if e.json {
		h = slog.NewJSONHandler(e.stderr, opts)
	}
	cfg := api.Config{
		DataDir:        dir,
		Socket:         *socket,
		DefaultTimeout: *timeout,
		LockTimeout:    2 * time.Second,
		Logger:         slog.New(h),
	}
	if *manual {
		cfg.Clock = api.NewManualClock(time.Now())
	}
	return api.Serve(ctx, cfg)
}
