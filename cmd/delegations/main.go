// Command delegations is the durable store behind a background-agents
// plugin bridge: every delegation transition is an event in a bbolt log.
//
// Usage:
//
//	delegations [--data DIR] [--json] VERB [flags] [args]
//
// Run `delegations help` for the verbs.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/delegations/delegations/cmd/delegations/api"
	"github.com/delegations/delegations/eventlog"
	"github.com/delegations/delegations/fsm"
	"github.com/delegations/delegations/projection"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	// After the first signal the default returns: a second one ends a
	// daemon that is slow to stop.
	context.AfterFunc(ctx, stop)
	err := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(exitCode(err))
}

// env is what every verb gets: the streams, the global flags and the
// backend, connected on first use.
type env struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	data           string
	socket         string
	json           bool
	be             backend
	verb           *verb // the verb being run, for its help and errors
}

// backend runs the API's verbs: through the daemon when one serves the
// data directory (api.Client), else in process on the log (api.Local).
// Both pass the same JSON, so every verb prints the same either way.
type backend interface {
	Call(ctx context.Context, verb string, req, resp any) error
	Events(ctx context.Context, r api.EventsRequest, emit func(api.Event) error) error
	Close() error
}

// verb is one subcommand. Each lives in its own file.
type verb struct {
	name     string
	synopsis string // flags and arguments
	summary  string
	example  string
	run      func(ctx context.Context, e *env, args []string) error
}

// verbs lists the subcommands in the order help shows them.
func verbs() []verb {
	return []verb{
		registerVerb, startVerb, progressVerb, completeVerb, failVerb, cancelVerb,
		showVerb, readVerb, listVerb, activeVerb, notificationsVerb, ackVerb, compactVerb, eventsVerb,
		replayVerb, timelineVerb, verifyVerb, importVerb, backupVerb, recoverVerb, migrateVerb, serveVerb, uiVerb, hookVerb, installVerb, mcpVerb,
	}
}

// usageError marks errors in how the command was called: exit code 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return &usageError{fmt.Sprintf(format, args...)}
}

// reported marks an error already written out; main only sets the exit code.
type reported struct{ err error }

func (r reported) Error() string { return r.err.Error() }
func (r reported) Unwrap() error { return r.err }

func exitCode(err error) int {
	var ue *usageError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ue):
		return 2
	default:
		return 1
	}
}

// run is the whole program: parse the global flags, find the verb, run it,
// report its error. It returns what main turns into the exit code.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	e := &env{stdin: stdin, stdout: stdout, stderr: stderr}
	global := flag.NewFlagSet("delegations", flag.ContinueOnError)
	global.SetOutput(io.Discard)
	global.StringVar(&e.data, "data", "", "data directory (default: $DELEGATIONS_DATA, $XDG_DATA_HOME/opencode/delegations, ~/.local/share/opencode/delegations)")
	global.StringVar(&e.socket, "socket", "", "the daemon's socket (default: $DELEGATIONS_SOCKET, else .delegations.sock in the data directory)")
	global.BoolVar(&e.json, "json", false, "print JSON on stdout")
	if err := global.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			printHelp(stdout)
			return nil
		}
		fmt.Fprintf(stderr, "delegations: %v\n\n", err)
		printHelp(stderr)
		return usagef("%v", err)
	}
	rest := global.Args()
	if len(rest) == 0 {
		fmt.Fprint(stderr, "delegations: no verb given\n\n")
		printHelp(stderr)
		return usagef("no verb given")
	}
	name, rest := rest[0], rest[1:]
	if name == "help" {
		if len(rest) > 0 {
			if v, ok := lookupVerb(rest[0]); ok {
				e.verb = &v
				return ignoreHelp(v.run(ctx, e, []string{"-h"}))
			}
		}
		printHelp(stdout)
		return nil
	}
	v, ok := lookupVerb(name)
	if !ok {
		fmt.Fprintf(stderr, "delegations: unknown verb %q; run `delegations help` for the list\n", name)
		return usagef("unknown verb %q", name)
	}
	e.verb = &v
	err := checkUTF8(rest)
	if err == nil {
		err = ignoreHelp(v.run(ctx, e, rest))
	}
	if e.be != nil {
		if cerr := e.be.Close(); cerr != nil && err == nil {
			err = cerr
		}
	}
	if err == nil {
		return nil
	}
	var r reported
	if errors.As(err, &r) {
		return err
	}
	var ue *usageError
	if errors.As(err, &ue) {
		fmt.Fprintf(stderr, "delegations %s: %v\n", v.name, err)
		fmt.Fprintf(stderr, "usage: delegations %s %s\n", v.name, v.synopsis)
		return err
	}
	err = withHint(err)
	if e.json {
		writeJSON(stdout, map[string]any{"error": map[string]string{"code": api.Code(err), "message": err.Error()}})
	}
	fmt.Fprintf(stderr, "delegations %s: %v\n", v.name, err)
	return err
}

// withHint adds what to do to an error about a locked, damaged or lost log.
func withHint(err error) error {
	var de *eventlog.DamageError
	var el *projection.EmptyLogError
	switch {
	case errors.Is(err, eventlog.ErrReplica):
		return fmt.Errorf("%w. This data directory replicates a log shared through etcd, and only its daemon keeps it in step: "+
			"start it (`delegations serve --etcd ENDPOINTS --etcd-prefix PREFIX`, as it was started before) and run the command again", err)
	case errors.Is(err, eventlog.ErrLocked):
		return fmt.Errorf("%w: is `delegations serve` running for this data directory? "+
			"Talk to it, stop it, or wait for the other command to finish", err)
	case errors.As(err, &el):
		return fmt.Errorf("%w; nothing was written. Run `delegations recover` to set the empty file aside and start a new log, "+
			"then `delegations import %s` to adopt the artifacts", err, filepath.Dir(el.Path))
	case errors.As(err, &de):
		return fmt.Errorf("%w; nothing was written to it. Stop the daemon if one runs, then run `delegations recover`: "+
			"it copies every intact record into a new log and keeps the damaged file beside it", err)
	case errors.Is(err, eventlog.ErrCorrupt):
		return fmt.Errorf("%w; the log is damaged. `delegations verify` shows the extent; with the daemon stopped, "+
			"`delegations recover` copies every intact record into a new log and keeps the damaged file beside it", err)
	}
	return err
}

// checkUTF8 refuses arguments that are not UTF-8: JSON, which carries
// every request, would silently replace the bad bytes, and the store would
// keep a text other than the one given.
func checkUTF8(args []string) error {
	for i, a := range args {
		if !utf8.ValidString(a) {
			return fmt.Errorf("%w: argument %d (%q) is not valid UTF-8", fsm.ErrInvalid, i+1, a)
		}
	}
	return nil
}

func lookupVerb(name string) (verb, bool) {
	i := slices.IndexFunc(verbs(), func(v verb) bool { return v.name == name })
	if i < 0 {
		return verb{}, false
	}
	return verbs()[i], true
}

func printHelp(w io.Writer) {
	fmt.Fprint(w, `delegations: the durable store behind background-agent delegations.

Usage:
  delegations [--data DIR] [--json] VERB [flags] [args]

Verbs:
`)
	for _, v := range verbs() {
		fmt.Fprintf(w, "  %-9s %s\n", v.name, v.summary)
	}
	fmt.Fprint(w, `
Global flags:
  --data DIR     data directory (default: $DELEGATIONS_DATA, else
                 $XDG_DATA_HOME/opencode/delegations, else
                 ~/.local/share/opencode/delegations)
  --socket PATH  the daemon's socket (default: $DELEGATIONS_SOCKET, else
                 .delegations.sock in the data directory)
  --json         print exactly one JSON object on stdout (JSON lines for streams)

When a daemon ('delegations serve') listens on the socket, every verb goes
through it; otherwise the command opens the log itself, and fails after a
short wait if another process holds it.

Exit codes: 0 ok, 1 failure (including a refused command), 2 usage.
Run 'delegations help VERB' for a verb's flags and an example.
`)
}

// newFlags returns a verb's flag set. -h prints the verb's help; --json may
// also follow the verb.
func newFlags(e *env) *flag.FlagSet {
	fs := flag.NewFlagSet(e.verb.name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.BoolVar(&e.json, "json", e.json, "print JSON on stdout")
	fs.Usage = func() {}
	return fs
}

// parse parses a verb's flags and checks the number of positional
// arguments; help goes to stdout and ends the verb.
func parse(e *env, fs *flag.FlagSet, args []string, positional int) ([]string, error) {
	v := e.verb
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprintf(e.stdout, "%s\n\nUsage:\n  delegations %s %s\n\nFlags:\n", v.summary, v.name, v.synopsis)
			fs.SetOutput(e.stdout)
			fs.PrintDefaults()
			if v.example != "" {
				fmt.Fprintf(e.stdout, "\nExample:\n  %s\n", v.example)
			}
			return nil, errHelp
		}
		return nil, usagef("%v", err)
	}
	rest := fs.Args()
	if len(rest) != positional {
		for _, a := range rest {
			if strings.HasPrefix(a, "-") {
				return nil, usagef("flag %s comes after an argument; put flags before the id", a)
			}
		}
		return nil, usagef("want %d argument(s), got %d", positional, len(rest))
	}
	return rest, nil
}

// errHelp ends a verb whose help was asked for; the exit code is 0.
var errHelp = errors.New("help shown")

func ignoreHelp(err error) error {
	if errors.Is(err, errHelp) {
		return nil
	}
	return err
}

// connect returns the backend on first use: the daemon on the socket if
// one answers there, else the log in the data directory, opened here.
func (e *env) connect(ctx context.Context) (backend, error) {
	if e.be != nil {
		return e.be, nil
	}
	be, err := e.open(ctx)
	if err != nil {
		return nil, err
	}
	e.be = be
	return be, nil
}

// open connects a new backend: the daemon, else the log opened here. The
// caller closes it (a long-running verb, mcp, opens one per call).
func (e *env) open(ctx context.Context) (backend, error) {
	return e.openMode(ctx, readOnlyVerbs[e.verb.name])
}

// openMode is open, read-only (when the log allows it) if readOnly.
func (e *env) openMode(ctx context.Context, readOnly bool) (backend, error) {
	dir, err := dataDir(e.data)
	if err != nil {
		return nil, err
	}
	copts, err := clientOptions()
	if err != nil {
		return nil, err
	}
	c, err := api.DialWith(ctx, socketPath(e.socket, dir), copts)
	if err == nil {
		return c, nil
	}
	if !errors.Is(err, api.ErrNoDaemon) {
		return nil, err
	}
	timeout, err := defaultTimeout()
	if err != nil {
		return nil, err
	}
	opts := projection.Options{
		DefaultTimeout: timeout,
		LockTimeout:    2 * time.Second,
		Logger:         slog.New(slog.NewTextHandler(e.stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	}
	// Verbs that only read open the log read-only: they work in a
	// read-only data directory and beside each other. Only when the store
	// needs a writer's recovery (or has no log yet) do they open it for
	// writing, as every other verb does.
	var s *projection.Store
	if readOnly {
		opts.ReadOnly = true
		s, err = projection.Open(dir, opts)
		if errors.Is(err, projection.ErrNeedsRecovery) || errors.Is(err, fs.ErrNotExist) {
			opts.ReadOnly = false
			s, err = nil, nil
		}
		if err != nil {
			return nil, err
		}
	}
	if s == nil {
		if s, err = projection.Open(dir, opts); err != nil {
			return nil, err
		}
	}
	svc := api.NewService(s)
	svc.OnProgress = e.progress()
	return local{api.Local{Service: svc}}, nil
}

// readOnlyVerbs change nothing in the store (waits need the daemon).
var readOnlyVerbs = map[string]bool{
	"show": true, "list": true, "active": true, "compact": true, "events": true, "notifications": true,
}

// local is the in-process backend; closing it closes the log.
type local struct{ api.Local }

func (l local) Close() error { return l.Service.Store().Close() }

// socketPath resolves the daemon's socket: the flag, $DELEGATIONS_SOCKET,
// then the default inside the data directory.
func socketPath(flagValue, dataDir string) string {
	if flagValue != "" {
		return flagValue
	}
	if s := os.Getenv("DELEGATIONS_SOCKET"); s != "" {
		return s
	}
	return api.DefaultSocket(dataDir)
}

// clientOptions are the deadlines of calls to the daemon:
// $DELEGATIONS_DAEMON_TIMEOUT (a Go duration) bounds connecting and each
// answer (a blocking wait gets its own wait plus this), else the API's
// defaults.
func clientOptions() (api.ClientOptions, error) {
	v := os.Getenv("DELEGATIONS_DAEMON_TIMEOUT")
	if v == "" {
		return api.ClientOptions{}, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		return api.ClientOptions{}, fmt.Errorf("$DELEGATIONS_DAEMON_TIMEOUT=%q: %w: want a positive duration such as 10s", v, fsm.ErrInvalid)
	}
	return api.ClientOptions{ConnectTimeout: min(d, api.DefaultConnectTimeout), ResponseTimeout: d}, nil
}

// defaultTimeout is the deadline of delegations registered without one:
// $DELEGATIONS_DEFAULT_TIMEOUT (a Go duration), else 15 minutes. The
// daemon reads it when it starts (or takes --default-timeout), and through
// a daemon its setting is the one that applies.
func defaultTimeout() (time.Duration, error) {
	v := os.Getenv("DELEGATIONS_DEFAULT_TIMEOUT")
	if v == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		return 0, fmt.Errorf("$DELEGATIONS_DEFAULT_TIMEOUT=%q: %w: want a duration such as 15m", v, fsm.ErrInvalid)
	}
	if err := fsm.ValidateTimeout(d); err != nil {
		return 0, fmt.Errorf("$DELEGATIONS_DEFAULT_TIMEOUT: %w", err)
	}
	return d, nil
}

// dataDir resolves the data directory: the flag, $DELEGATIONS_DATA,
// $XDG_DATA_HOME/opencode/delegations, then the plugin's default.
func dataDir(flagValue string) (string, error) {
	if flagValue != "" {
		return flagValue, nil
	}
	if d := os.Getenv("DELEGATIONS_DATA"); d != "" {
		return d, nil
	}
	if x := os.Getenv("XDG_DATA_HOME"); x != "" {
		return filepath.Join(x, "opencode", "delegations"), nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("no data directory: set --data or $DELEGATIONS_DATA (%v)", err)
	}
	return filepath.Join(home, ".local", "share", "opencode", "delegations"), nil
}

// idArg trims and validates a delegation id from the command line.
func idArg(s string) (string, error) {
	id := strings.TrimSpace(s)
	if err := fsm.ValidateID(id); err != nil {
		return "", err
	}
	return id, nil
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}

// text reads a long text input: the flag's value, or stdin when the value
// is "-" or when the flag is absent and stdin is a pipe or a file. One
// final newline read from stdin is dropped.
func (e *env) text(fs *flag.FlagSet, name, value string, max int) (string, error) {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	if set && value != "-" {
		return value, nil
	}
	if !set && !stdinHasData(e.stdin) {
		return "", nil
	}
	b, err := io.ReadAll(io.LimitReader(e.stdin, int64(max)+1))
	if err != nil {
		return "", fmt.Errorf("read --%s from stdin: %w", name, err)
	}
	if len(b) > max {
		return "", fmt.Errorf("%w: --%s on stdin is larger than the %d-byte limit", fsm.ErrInvalid, name, max)
	}
	if !utf8.Valid(b) {
		return "", fmt.Errorf("%w: --%s on stdin is not valid UTF-8", fsm.ErrInvalid, name)
	}
	// `echo text |` ends with a newline the text does not have.
	return strings.TrimSuffix(string(b), "\n"), nil
}

// stdinHasData reports whether stdin is a pipe or regular file, which is
// read when a text flag is absent. A terminal or /dev/null is not.
func stdinHasData(r io.Reader) bool {
	f, ok := r.(*os.File)
	if !ok {
		return r != nil
	}
	fi, err := f.Stat()
	if err != nil {
		return false
	}
	return fi.Mode()&(os.ModeNamedPipe) != 0 || fi.Mode().IsRegular()
}
