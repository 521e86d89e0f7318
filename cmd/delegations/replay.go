package main

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/delegations/delegations/cmd/delegations/api"
	"github.com/delegations/delegations/eventlog"
	"github.com/delegations/delegations/projection"
	"github.com/delegations/delegations/replay"
)

var replayVerb = verb{
	name:     "replay",
	synopsis: "[--rebuild] [--until SEQ|TIME]",
	summary:  "replay the log and report, per delegation, where a result got lost (exit 1 when something is wrong)",
	example:  "delegations replay --until 2026-11-21T10:40:00Z",
	run:      runReplay,
}

func runReplay(ctx context.Context, e *env, args []string) error {
	fs := newFlags(e)
	rebuild := fs.Bool("rebuild", false, "regenerate the views and artifacts from the log, then report what is left (stop the daemon first)")
	until := fs.String("until", "", "the state as of a sequence number or an RFC 3339 time")
	if _, err := parse(e, fs, args, 0); err != nil {
		return err
	}
	if *until != "" {
		if _, err := replay.ParsePoint(*until); err != nil {
			return usagef("--until: %v", err)
		}
		if *rebuild {
			return usagef("--rebuild is of the whole log; drop --until")
		}
	}
	if *rebuild {
		return runRebuild(ctx, e)
	}
	return e.inspect(ctx, api.ReplayRequest{Until: *until}, func(l *eventlog.Log, dir string) (api.Rendered, error) {
		defer eventlog.SetMappedBound(eventlog.CommandMappedBound)() // no daemon: this process holds nothing else
		return api.Replay(ctx, l, dir, storedDaemonID(dir), api.ReplayRequest{Until: *until}, e.progress())
	})
}

// runRebuild regenerates views and artifacts. It needs the data directory
// to itself, so it refuses to run beside a daemon.
func runRebuild(ctx context.Context, e *env) error {
	dir, err := dataDir(e.data)
	if err != nil {
		return err
	}
	if c, err := api.Dial(ctx, socketPath(e.socket, dir)); err == nil {
		st, _ := c.Status(ctx)
		c.Close()
		return fmt.Errorf("a daemon (pid %d) serves %s: stop it first, a rebuild needs the data directory to itself", st.PID, dir)
	}
	res, err := replay.Rebuild(ctx, dir, projection.Options{LockTimeout: 2 * time.Second, Logger: e.logger()}, replay.Options{Progress: e.progress()})
	if err != nil {
		return err
	}
	if e.json {
		b, err := json.Marshal(res)
		if err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "%s\n", b)
	} else {
		var b strings.Builder
		fmt.Fprintf(&b, "Rebuilt the views and artifacts of %s from its log; fixed %d finding(s).\n", res.After.DataDir, len(res.Fixed)+res.FixedUnlisted)
		for _, f := range res.Fixed {
			id := f.Delegation
			if id == "" {
				id = "(log)"
			}
			fmt.Fprintf(&b, "  fixed %s %s: %s\n", f.Code, id, f.Diagnosis)
		}
		if res.FixedUnlisted > 0 {
			fmt.Fprintf(&b, "  and %d more, not listed.\n", res.FixedUnlisted)
		}
		b.WriteString("\nAfter the rebuild:\n")
		b.WriteString(res.After.String())
		fmt.Fprint(e.stdout, b.String())
	}
	if res.After.Failed() {
		return errFindings
	}
	return nil
}

var verifyVerb = verb{
	name:     "verify",
	synopsis: "",
	summary:  "check record checksums, indexes, views and artifacts (exit 1 on damage)",
	example:  "delegations verify",
	run:      runVerify,
}

func runVerify(ctx context.Context, e *env, args []string) error {
	if _, err := parse(e, newFlags(e), args, 0); err != nil {
		return err
	}
	return e.inspect(ctx, api.VerifyRequest{}, func(l *eventlog.Log, dir string) (api.Rendered, error) {
		return api.Verify(ctx, l, dir, storedDaemonID(dir), e.progress())
	})
}

var timelineVerb = verb{
	name:     "timeline",
	synopsis: "ID",
	summary:  "every event of one delegation, refused ones included, with the gaps between steps",
	example:  "delegations timeline elegant-blue-tiger",
	run:      runTimeline,
}

func runTimeline(ctx context.Context, e *env, args []string) error {
	id, err := parseID(e, newFlags(e), args)
	if err != nil {
		return err
	}
	return e.inspect(ctx, api.IDRequest{ID: id}, func(l *eventlog.Log, _ string) (api.Rendered, error) {
		return api.Timeline(ctx, l, id)
	})
}

var importVerb = verb{
	name:     "import",
	synopsis: "DIR",
	summary:  "adopt the plugin's existing artifacts under DIR (<project>/<root session>/<id>.md); importing twice imports once",
	example:  "delegations import ~/.local/share/opencode/delegations",
	run:      runImport,
}

func runImport(ctx context.Context, e *env, args []string) error {
	rest, err := parse(e, newFlags(e), args, 1)
	if err != nil {
		return err
	}
	dir, err := filepath.Abs(rest[0])
	if err != nil {
		return err
	}
	var res api.Rendered
	if err := e.call(ctx, api.ImportRequest{Dir: dir}, &res); err != nil {
		return err
	}
	return e.printRendered(res)
}
