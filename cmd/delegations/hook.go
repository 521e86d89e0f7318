package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"time"

	"github.com/delegations/delegations/cmd/delegations/claudecode"
)

var hookVerb = verb{
	name:     "hook",
	synopsis: "claude-code",
	summary:  "record a Claude Code hook event (its JSON on stdin); always exits 0, errors go to " + hookLogName,
	example:  "echo '{\"hook_event_name\":\"SessionStart\",\"session_id\":\"s1\",\"source\":\"compact\"}' | delegations hook claude-code",
	run:      runHook,
}

// hookDaemonWait bounds how long a hook waits for the daemon it starts,
// within hookTimeout.
const hookDaemonWait = 2 * time.Second

// ensureDaemon starts a daemon (serve --detach) when none answers on the
// socket, so that hooks running at once (PostToolUse beside
// SubagentStart) do not compete for the log's lock, where the loser's
// event would be lost. It prints nothing.
func (e *env) ensureDaemon(ctx context.Context) error {
	dir, err := dataDir(e.data)
	if err != nil {
		return err
	}
	if dir, err = filepath.Abs(dir); err != nil {
		return err
	}
	socket := socketPath(e.socket, dir)
	if _, err := daemonStatus(ctx, socket); err == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, hookDaemonWait)
	defer cancel()
	quiet := *e
	quiet.stdout, quiet.json, quiet.be = io.Discard, false, nil
	return runDetached(ctx, &quiet, dir, socket, nil)
}

// hookFunc handles a hook; tests replace it.
var hookFunc = claudecode.Hook

// hookLogName is the file in the data directory where hooks append their
// errors: a hook must not fail its host, so nobody else would see them.
const hookLogName = "hook-errors.log"

// hookLogMax is the size past which the hook log is moved to
// hook-errors.log.1 and started afresh.
const hookLogMax = 1 << 20

// hookTimeout bounds a hook's work within the 10 s Claude Code is told to
// wait (install writes "timeout": 10), leaving it room to start a daemon
// on a loaded machine: a first hook that ran out of 5 s between register
// and start was seen under load.
const hookTimeout = 8 * time.Second

// runHook never fails: whatever goes wrong (even a bad argument) is
// appended to the log, nothing is printed, and the exit code is 0. Exit 2
// would block the host's action.
func runHook(ctx context.Context, e *env, args []string) (ret error) {
	// A fault (a bad memory access) panics rather than crashing, and any
	// panic is logged and exits 0: a crash would exit 2, which blocks the
	// host's action.
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	var input []byte
	defer func() {
		if p := recover(); p != nil {
			e.logHookError(fmt.Errorf("panic: %v\n%s", p, debug.Stack()), "", input)
			ret = nil
		}
	}()
	fs := newFlags(e)
	host, err := parseHost(e, fs, args)
	if errors.Is(err, errHelp) {
		return err
	}
	if err == nil && host != "claude-code" {
		err = fmt.Errorf("unknown host %q; the hosts are: claude-code", host)
	}
	var out []byte
	var diag bytes.Buffer
	if err == nil {
		// The store's warnings (an artifact not written) go to the log too.
		e.stderr = &diag
		ctx, cancel := context.WithTimeout(ctx, hookTimeout)
		defer cancel()
		input, err = io.ReadAll(io.LimitReader(e.stdin, claudecode.MaxInput+1))
		switch {
		case err != nil:
			err = fmt.Errorf("read stdin: %w", err)
		case len(input) > claudecode.MaxInput:
			err = fmt.Errorf("hook input over %d bytes", claudecode.MaxInput)
		default:
			out, err = hookFunc(ctx, input, func(ctx context.Context) (claudecode.Caller, error) {
				if e.be == nil && os.Getenv("DELEGATIONS_HOOK_DAEMON") != "0" {
					if err := e.ensureDaemon(ctx); err != nil {
						// The log opened here still records the event,
						// unless another hook holds it.
						fmt.Fprintf(&diag, "start the daemon: %v\n", err)
					}
				}
				return e.connect(ctx)
			})
		}
		if e.be != nil {
			err = errors.Join(err, e.be.Close())
			e.be = nil
		}
	}
	if err != nil || diag.Len() > 0 {
		e.logHookError(err, diag.String(), input)
	}
	if err == nil && len(out) > 0 {
		e.stdout.Write(out)
	}
	return nil
}

// logHookError appends one entry to the hook log in the data directory.
// If even that fails there is nowhere left to report: it gives up quietly.
func (e *env) logHookError(err error, diag string, input []byte) {
	dir, derr := dataDir(e.data)
	if derr != nil {
		return
	}
	if os.MkdirAll(dir, 0o700) != nil {
		return
	}
	path := filepath.Join(dir, hookLogName)
	if fi, err := os.Stat(path); err == nil && fi.Size() > hookLogMax {
		os.Rename(path, path+".1") // keep one older log; a failing hook fires often
	}
	f, ferr := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if ferr != nil {
		return
	}
	defer f.Close()
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s hook: ", time.Now().UTC().Format(time.RFC3339Nano))
	if err != nil {
		fmt.Fprintf(&b, "%v", err)
	}
	if diag != "" {
		fmt.Fprintf(&b, " (diagnostics: %s)", bytes.TrimSpace([]byte(diag)))
	}
	const maxShown = 2048
	if len(input) > maxShown {
		input = append(input[:maxShown:maxShown], "..."...)
	}
	fmt.Fprintf(&b, "\n  input: %s\n", bytes.TrimSpace(input))
	f.Write(b.Bytes())
}

// parseHost parses a verb whose argument is a host name, which may come
// before its flags (install claude-code --project .) or after them.
func parseHost(e *env, fs *flag.FlagSet, args []string) (string, error) {
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		_, err := parse(e, fs, args[1:], 0)
		return args[0], err
	}
	rest, err := parse(e, fs, args, 1)
	if err != nil {
		return "", err
	}
	return rest[0], nil
}
