package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/delegations/delegations/cmd/delegations/api"
	"github.com/delegations/delegations/cmd/delegations/ui"
	"github.com/delegations/delegations/fsm"
	"github.com/delegations/delegations/projection"
)

var serveVerb = verb{
	name:     "serve",
	synopsis: "[--detach] [--socket PATH] [--http 127.0.0.1:PORT] [--default-timeout 15m] [--log-level info] [--ready-fd N] [--etcd URLS [--etcd-prefix P] [--etcd-lease-ttl 15s] [--etcd-cacert F --etcd-cert F --etcd-key F]]",
	summary:  "run the daemon: the API on a unix socket, deadlines, artifact retries",
	example:  "delegations serve --detach  # then every other verb goes through it",
	run:      runServe,
}

// LogName is the detached daemon's log file inside the data directory.
const LogName = ".delegations.log"

// detachWait bounds how long serve --detach waits for the daemon it
// started to answer.
const detachWait = 30 * time.Second

// serveTestFlags adds the flags of a test build (-tags delegationstest)
// to serve's and returns what applies them; the program has none.
var serveTestFlags = func(*flag.FlagSet) func(*api.Config) { return func(*api.Config) {} }

func runServe(ctx context.Context, e *env, args []string) error {
	fs := newFlags(e)
	socket := fs.String("socket", "", "listen here (default: --socket before the verb, $DELEGATIONS_SOCKET, else .delegations.sock in the data directory)")
	timeout := fs.Duration("default-timeout", 0, "deadline of delegations registered without one (default: $DELEGATIONS_DEFAULT_TIMEOUT, else 15m)")
	level := fs.String("log-level", "info", "debug, info, warn or error")
	detach := fs.Bool("detach", false, "run in the background (logs in "+LogName+" in the data directory) unless a daemon already serves the data directory; print its status once it answers")
	readyFD := fs.Int("ready-fd", 0, "once listening, write the status as one JSON line to this file descriptor and close it (for supervisors)")
	httpAddr := fs.String("http", "", "also serve the status page on this loopback address (127.0.0.1:PORT, [::1]:PORT or localhost:PORT; port 0 picks one); `delegations ui` prints its address with its token")
	shared := addEtcdFlags(fs)
	testFlags := serveTestFlags(fs)
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
	if dir, err = filepath.Abs(dir); err != nil {
		return err
	}
	if *socket == "" {
		*socket = socketPath(e.socket, dir)
	}
	if *httpAddr != "" {
		if _, err := ui.CheckAddr(*httpAddr); err != nil {
			return usagef("--http %v (it has no TLS and trusts its token alone)", err)
		}
	}
	if *detach {
		var child []string
		fs.Visit(func(f *flag.Flag) {
			if f.Name != "detach" && f.Name != "json" && f.Name != "ready-fd" {
				child = append(child, "--"+f.Name+"="+f.Value.String())
			}
		})
		return runDetached(ctx, e, dir, *socket, child)
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
	if *readyFD > 0 {
		ready := os.NewFile(uintptr(*readyFD), "ready-fd")
		defer ready.Close()
		cfg.Ready = func(st api.Status) {
			writeJSON(ready, st)
			ready.Close()
		}
	}
	cli, err := shared.client()
	if err != nil {
		return err
	}
	if cli != nil {
		defer cli.Close()
		cfg.Upstream = shared.upstream(cli)
		peers, err := shared.presence(cli, dir, cfg.Logger)
		if err != nil {
			return err
		}
		defer peers.Close()
		cfg.Peers = peers
	}
	testFlags(&cfg)
	if *httpAddr != "" {
		ln, err := ui.Listen(*httpAddr)
		if err != nil {
			return fmt.Errorf("status page: %w", err)
		}
		defer ln.Close()
		// The token is made here so that the status can carry the URL.
		o := ui.Options{Token: ui.NewToken(), Logger: cfg.Logger}
		cfg.UI = ui.PageURL(ln, o.Token)
		cfg.Actors = append(cfg.Actors, ui.Actor(ln, o))
	}
	// Without --http the page starts when `delegations ui` asks for it (a
	// bridge starts its daemon without one), on the address ui asks for
	// (by default a free loopback port).
	cfg.Page = func(ctx context.Context, svc *api.Service, addr string) (string, <-chan struct{}, error) {
		if addr == "" {
			addr = DefaultUIAddr
		}
		if _, err := ui.CheckAddr(addr); err != nil {
			return "", nil, fmt.Errorf("%w: addr %v", fsm.ErrInvalid, err)
		}
		ln, err := ui.Listen(addr)
		if err != nil {
			return "", nil, err
		}
		o := ui.Options{Token: ui.NewToken(), Logger: cfg.Logger}
		done := make(chan struct{})
		go func() {
			defer close(done)
			if err := ui.New(svc, ln, o).Run(ctx, ln); err != nil {
				cfg.Logger.Warn("status page stopped", "err", err)
			}
		}()
		return ui.PageURL(ln, o.Token), done, nil
	}
	projection.SetGCPolicy()
	return api.Serve(ctx, cfg)
}

// runDetached makes sure a daemon serves dir on socket: the one already
// there, or a new one started here in its own session, whose readiness
// comes back on a pipe (--ready-fd) rather than by polling. When two
// callers race, the daemon that loses the lock exits and the winner's
// status is printed.
func runDetached(ctx context.Context, e *env, dir, socket string, flags []string) error {
	st, what, err := startDetached(ctx, dir, socket, flags)
	if err != nil {
		return err
	}
	return printStatus(e, st, what)
}

// startDetached is runDetached without the printing: the daemon's status
// and whether it was "started" or "already running".
func startDetached(ctx context.Context, dir, socket string, flags []string) (api.Status, string, error) {
	if st, err := daemonStatus(ctx, socket); err == nil {
		return st, "already running", nil
	}
	self, err := os.Executable()
	if err != nil {
		return api.Status{}, "", fmt.Errorf("find this program to start the daemon: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return api.Status{}, "", fmt.Errorf("data directory: %w", err)
	}
	logPath := filepath.Join(dir, LogName)
	rotateLog(logPath)
	logFile, err := os.OpenFile(logPath, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return api.Status{}, "", fmt.Errorf("daemon log: %w", err)
	}
	defer logFile.Close()
	r, w, err := os.Pipe()
	if err != nil {
		return api.Status{}, "", err
	}
	defer r.Close()
	args := append([]string{"--data", dir, "serve", "--socket", socket, "--ready-fd", "3"}, flags...)
	cmd := exec.Command(self, args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.ExtraFiles = []*os.File{w}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true} // outlives this process and its terminal
	err = cmd.Start()
	w.Close()
	if err != nil {
		return api.Status{}, "", fmt.Errorf("start the daemon: %w", err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }() // reap it if it fails

	line := make(chan []byte, 1)
	go func() {
		b, _ := bufio.NewReader(r).ReadBytes('\n')
		line <- b
	}()
	wctx, cancel := context.WithTimeout(ctx, detachWait)
	defer cancel()
	select {
	case b := <-line:
		var st api.Status
		if json.Unmarshal(b, &st) == nil && st.PID != 0 {
			return st, "started", nil
		}
	case <-wctx.Done():
		return api.Status{}, "", fmt.Errorf("the daemon (pid %d) did not answer within %s; see its log %s", cmd.Process.Pid, detachWait, logPath)
	}
	// It closed the pipe without answering: it is exiting. Another caller's
	// daemon may have won the race for the log, and may still be opening a
	// large one: ask it until it answers, or until this daemon turns out to
	// have failed alone.
	select {
	case <-exited:
	case <-wctx.Done():
	}
	for wctx.Err() == nil {
		if st, err := daemonStatus(wctx, socket); err == nil {
			return st, "already running", nil
		}
		if !strings.Contains(logTail(logPath, 3), "locked") {
			break // it failed for a reason of its own
		}
		select {
		case <-wctx.Done():
		case <-time.After(100 * time.Millisecond): // the winner is opening the log
		}
	}
	return api.Status{}, "", fmt.Errorf("the daemon did not start; its log %s ends with:\n%s", logPath, logTail(logPath, 10))
}

// daemonStatus asks the daemon on socket who it is.
func daemonStatus(ctx context.Context, socket string) (api.Status, error) {
	c, err := api.Dial(ctx, socket)
	if err != nil {
		return api.Status{}, err
	}
	defer c.Close()
	return c.Status(ctx)
}

func printStatus(e *env, st api.Status, what string) error {
	if e.json {
		return writeJSON(e.stdout, st)
	}
	page := ""
	if st.UI != "" {
		page = "; status page " + st.UI
	}
	_, err := fmt.Fprintf(e.stdout, "daemon %s: pid %d serves %s on %s%s\n", what, st.PID, st.DataDir, st.Socket, page)
	return err
}

// maxLogSize is the size past which a detached daemon's log is moved to
// LogName.1 when the next daemon starts.
const maxLogSize = 8 << 20

func rotateLog(path string) {
	if fi, err := os.Stat(path); err == nil && fi.Size() > maxLogSize {
		os.Rename(path, path+".1")
	}
}

// logTail returns the last n lines of a file, for an error message.
func logTail(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return "(unreadable: " + err.Error() + ")"
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.Size() > 64<<10 {
		f.Seek(-64<<10, io.SeekEnd)
	}
	b, _ := io.ReadAll(f)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
