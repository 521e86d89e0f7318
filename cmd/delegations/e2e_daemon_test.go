package main

// End-to-end tests of the daemon's behaviour: blocking reads, deadlines on
// the test build's clock, the shipped binary without test hooks, stale
// sockets, permissions. The harness is in e2e_test.go.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"net/http/httptrace"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/delegations/delegations/cmd/delegations/api"
	"github.com/delegations/delegations/cmd/delegations/internal/hosttest"
	"github.com/delegations/delegations/fsm"
	"github.com/delegations/delegations/projection"
)

// TestBlockingRead: reads waiting on an active delegation return its
// artifact when another client completes it, and a waiting notifications
// call returns the terminal notification; a short wait returns the
// pending text; SIGTERM ends a waiting read with "unavailable" and exit 0.
func TestBlockingRead(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, t.TempDir())
	var r fsm.Delegation
	d.call("register", registration("ses_root", "ses_parent", "wait for me"), &r)
	d.call("start", api.StartRequest{ID: r.ID}, &r)

	// A short wait on an active delegation: the pending text, no read recorded.
	var pending projection.ReadResult
	d.call("read", api.ReadRequest{RootSessionID: "ses_root", ID: r.ID, WaitMs: 1}, &pending)
	if pending.Artifact || !strings.Contains(pending.Text, "Status: running") {
		t.Fatalf("read with a short wait of a running delegation: %+v", pending)
	}

	type answer struct {
		what string
		v    any
		err  error
	}
	answers := make(chan answer, 4)
	sent := make(chan struct{}, 4)
	// Each waiter sends its request on a connection of its own and says
	// when the request is written.
	waiter := func(what, verb string, req any, resp any) {
		c, err := api.Dial(context.Background(), d.socket)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		go func() {
			ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{
				WroteRequest: func(httptrace.WroteRequestInfo) { sent <- struct{}{} },
			})
			err := c.Call(ctx, verb, req, resp)
			answers <- answer{what, resp, err}
		}()
	}
	for i := range 3 {
		waiter(fmt.Sprintf("read %d", i), "read", api.ReadRequest{RootSessionID: "ses_root", ID: r.ID, WaitMs: 600_000}, &projection.ReadResult{})
	}
	waiter("notifications", "notifications", api.NotificationsRequest{ParentSessionID: "ses_parent", WaitMs: 600_000}, &api.Notifications{})
	for range 4 {
		<-sent
	}
	select {
	case a := <-answers:
		t.Fatalf("%s returned before the delegation completed: %+v %v", a.what, a.v, a.err)
	default:
	}

	other, err := api.Dial(context.Background(), d.socket)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	var done fsm.Delegation
	if err := other.Call(context.Background(), "complete", api.CompleteRequest{ID: r.ID, Result: "the awaited result"}, &done); err != nil {
		t.Fatal(err)
	}
	for range 4 {
		a := <-answers
		if a.err != nil {
			t.Errorf("%s: %v", a.what, a.err)
			continue
		}
		switch v := a.v.(type) {
		case *projection.ReadResult:
			if !v.Artifact || !strings.HasSuffix(v.Text, "\n\n---\n\nthe awaited result") || v.Delegation.State != fsm.Complete {
				t.Errorf("%s: %+v", a.what, v)
			}
		case *api.Notifications:
			if len(v.Notifications) != 1 || v.Notifications[0].ID != "terminal:"+r.ID {
				t.Errorf("%s: %+v", a.what, v)
			}
		}
	}

	// A read waiting when the daemon stops ends with "unavailable".
	var r2 fsm.Delegation
	d.call("register", registration("ses_root", "ses_parent", "never finishes"), &r2)
	waiter("read at stop", "read", api.ReadRequest{RootSessionID: "ses_root", ID: r2.ID, WaitMs: 600_000}, &projection.ReadResult{})
	<-sent
	if code := d.stop(syscall.SIGTERM); code != 0 {
		t.Fatalf("SIGTERM with a read waiting: exit %d", code)
	}
	// The read ended with the daemon. A request the daemon had not yet
	// taken from its listen queue when it stopped is reset (nothing
	// tells the test when the handler runs); one it handles gets 503.
	a := <-answers
	var ae *api.Error
	switch {
	case errors.As(a.err, &ae):
		if ae.Code != "unavailable" || !strings.Contains(ae.Message, "daemon is stopping") {
			t.Errorf("a read waiting at stop: %v (code %s); want code unavailable", a.err, ae.Code)
		}
	case a.err == nil:
		t.Errorf("a read waiting at stop returned %+v", a.v)
	default:
		t.Logf("the read was not handled before the stop: %v", a.err)
	}
}

// TestDeadlineFires: under --manual-clock a deadline fires exactly when
// the clock passes it, the timed-out delegation keeps its last progress as
// partial output, and a deadline that passes while the daemon is stopped
// fires after the restart.
func TestDeadlineFires(t *testing.T) {
	t.Parallel()
	data := t.TempDir()
	d := startDaemon(t, data, "--manual-clock")
	events := d.follow(1, "")
	stream := d.sse("/v1/stream?parentSessionID=ses_parent")

	var r fsm.Delegation
	req := registration("ses_root", "ses_parent", "slow work")
	req.TimeoutMs = 60_000
	d.call("register", req, &r)
	d.call("start", api.StartRequest{ID: r.ID, SessionID: "ses_child"}, &r)
	d.call("progress", api.ProgressRequest{ID: r.ID, Message: "partial output so far"}, &r)
	if got := r.TimeoutAt.Sub(r.CreatedAt); got != time.Minute {
		t.Fatalf("deadline %s after registration, want 1m", got)
	}

	// One second short of the deadline: nothing can time it out yet.
	d.advance(59_000)
	d.call("show", api.IDRequest{ID: r.ID}, &r)
	if r.State != fsm.Running {
		t.Fatalf("59s into a 60s deadline: %s", r.State)
	}
	d.advance(2_000)
	ev := awaitEvent(t, events, "timed_out", func(ev api.Event) bool { return ev.Kind == "timed_out" && ev.ID == r.ID })
	awaitEvent(t, events, "persisted", func(ev api.Event) bool { return ev.Kind == "persisted" && ev.ID == r.ID })
	d.call("show", api.IDRequest{ID: r.ID}, &r)
	if r.State != fsm.Timeout || r.Progress != "partial output so far" || r.PersistedAt.IsZero() ||
		r.ResultText() != "partial output so far\n\n[TIMEOUT REACHED]" {
		t.Fatalf("after the deadline: %+v", r)
	}
	if r.CompletedAt.Before(r.TimeoutAt) {
		t.Errorf("timed out at %s, before its deadline %s", r.CompletedAt, r.TimeoutAt)
	}
	if ev.Time != fsm.FormatTime(r.CompletedAt) {
		t.Errorf("timed_out event at %s, record completed at %s", ev.Time, fsm.FormatTime(r.CompletedAt))
	}
	var rr projection.ReadResult
	d.call("read", api.ReadRequest{RootSessionID: "ses_root", ID: r.ID}, &rr)
	if !rr.Artifact || !strings.HasSuffix(rr.Text, "\n\n---\n\npartial output so far\n\n[TIMEOUT REACHED]") {
		t.Fatalf("read of the timed-out delegation:\n%s", rr.Text)
	}
	var ns api.Notifications
	d.call("notifications", api.NotificationsRequest{ParentSessionID: "ses_parent"}, &ns)
	if len(ns.Notifications) != 1 || ns.Notifications[0].ID != "terminal:"+r.ID {
		t.Fatalf("notifications after the timeout: %+v", ns)
	}
	// The server-sent events stream pushed the timed_out event, then the
	// notification.
	showSSE := func(m sseMessage) string { return m.event + " " + m.id + " " + m.data }
	await(t, stream, "an SSE timed_out event", func(m sseMessage) bool {
		return m.event == "event" && strings.Contains(m.data, `"kind":"timed_out"`) && strings.Contains(m.data, r.ID)
	}, showSSE)
	msg := await(t, stream, "an SSE notification", func(m sseMessage) bool { return m.event == "notification" }, showSSE)
	var n projection.Notification
	if err := json.Unmarshal([]byte(msg.data), &n); err != nil || n.ID != "terminal:"+r.ID || !strings.Contains(n.Text, r.ID) {
		t.Fatalf("SSE notification %q (%v)", msg.data, err)
	}
	if status, _, body := d.do(http.MethodPost, "/v1/clock", []byte(`{"advanceMs":-1}`)); status != http.StatusBadRequest ||
		!strings.Contains(string(body), "only moves forward") {
		t.Errorf("a negative clock advance: %d %s", status, body)
	}

	// A deadline that passes while no daemon runs: registered here, the
	// daemon stops, the next one's clock passes it.
	var r2 fsm.Delegation
	req.Prompt = "outlives the daemon"
	d.call("register", req, &r2)
	d.call("progress", api.ProgressRequest{ID: r2.ID, Message: "before the restart"}, &r2)
	if code := d.stop(syscall.SIGTERM); code != 0 {
		t.Fatalf("SIGTERM: exit %d", code)
	}
	d2 := startDaemon(t, data, "--manual-clock")
	events2 := d2.follow(1, r2.ID)
	d2.call("show", api.IDRequest{ID: r2.ID}, &r2)
	if r2.State != fsm.Running {
		t.Fatalf("after the restart, before the deadline: %s", r2.State)
	}
	// The new clock starts at the wall clock's time, behind the first
	// daemon's, which was moved forward: move it past the deadline.
	now := d2.advance(0)
	if !now.Before(r2.TimeoutAt) {
		t.Fatalf("the restarted clock %s is already past the deadline %s", now, r2.TimeoutAt)
	}
	d2.advance(r2.TimeoutAt.Sub(now).Milliseconds() + 1_000)
	awaitEvent(t, events2, "timed_out after the restart", func(ev api.Event) bool { return ev.Kind == "timed_out" })
	d2.call("show", api.IDRequest{ID: r2.ID}, &r2)
	if r2.State != fsm.Timeout || r2.ResultText() != "before the restart\n\n[TIMEOUT REACHED]" {
		t.Fatalf("after the restart and the deadline: %+v", r2)
	}
}

// TestOverdueAtStartup: a delegation whose deadline passed before the
// daemon started is timed out at start-up, by a daemon whose clock never
// moves. The delegation is registered an hour in the past through the
// store itself, the only way to have a deadline behind the wall clock
// without waiting for it.
func TestOverdueAtStartup(t *testing.T) {
	t.Parallel()
	data := t.TempDir()
	past := time.Now().Add(-time.Hour)
	s, err := projection.Open(data, projection.Options{Now: func() time.Time { return past }, LockTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	r, err := s.Register(context.Background(), projection.Registration{
		ProjectID: "0123456789abcdef", RootSessionID: "ses_root", ParentSessionID: "ses_parent",
		Agent: "researcher", Prompt: "left behind", Timeout: time.Minute,
	})
	if err == nil {
		_, err = s.Progress(context.Background(), r.ID, "the last words")
	}
	if cerr := s.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}

	d := startDaemon(t, data, "--manual-clock")
	awaitEvent(t, d.follow(1, r.ID), "timed_out at start-up", func(ev api.Event) bool { return ev.Kind == "timed_out" })
	d.call("show", api.IDRequest{ID: r.ID}, &r)
	if r.State != fsm.Timeout || r.ResultText() != "the last words\n\n[TIMEOUT REACHED]" {
		t.Fatalf("overdue at start-up: %+v", r)
	}
	// The sweeper says what it did (after the events, so wait for it).
	d.awaitLog(`msg="timed out delegations past their deadline" count=1`)
}

// TestShippedWithoutTestHooks: the program as it ships has no test hooks:
// its serve lists no --manual-clock, and neither that flag nor /v1/clock
// is in the binary (TestBadRequests sees the endpoint answer no_endpoint);
// the test build has both.
func TestShippedWithoutTestHooks(t *testing.T) {
	t.Parallel()
	for _, b := range []struct {
		bin   string
		hooks bool
	}{{binary(t), false}, {hosttest.DelegationsTestBuild(t), true}} {
		r, err := execBin(b.bin, "", "serve", "--help")
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.Contains(r.stdout+r.stderr, "-manual-clock"); got != b.hooks {
			t.Errorf("%s serve --help lists --manual-clock: %v, want %v\n%s%s", b.bin, got, b.hooks, r.stdout, r.stderr)
		}
		prog, err := os.ReadFile(b.bin)
		if err != nil {
			t.Fatal(err)
		}
		for _, hook := range []string{"manual-clock", "/v1/clock"} {
			if got := bytes.Contains(prog, []byte(hook)); got != b.hooks {
				t.Errorf("%s holds %q: %v, want %v", b.bin, hook, got, b.hooks)
			}
		}
	}
}

// TestStaleSocket: a daemon killed with SIGKILL leaves its socket; the CLI
// then works on the log itself, and the next daemon replaces the socket.
// A second daemon on a served data directory or socket exits 1 naming the
// running one.
func TestStaleSocket(t *testing.T) {
	t.Parallel()
	data := t.TempDir()
	d := startDaemon(t, data)
	var r fsm.Delegation
	d.call("register", registration("ses_root", "ses_parent", "survive a kill"), &r)
	if code := d.stop(syscall.SIGKILL); code != -int(syscall.SIGKILL) {
		t.Fatalf("SIGKILL: exit %d", code)
	}
	fi, err := os.Lstat(d.socket)
	if err != nil || fi.Mode().Type() != fs.ModeSocket {
		t.Fatalf("after SIGKILL the socket should stay behind: %v %v", fi, err)
	}

	// Nobody answers on the socket: the CLI opens the log itself.
	if res := runBin(t, "", "--data", data, "progress", "--message", "embedded", r.ID); res.code != 0 || res.stdout != r.ID+" running\n" || res.stderr != "" {
		t.Fatalf("CLI on a stale socket: %+v", res)
	}

	d2 := startDaemon(t, data)
	if !strings.Contains(d2.log.String(), "replaced a stale socket") {
		t.Errorf("the new daemon did not say it replaced the socket:\n%s", d2.log)
	}
	d2.call("show", api.IDRequest{ID: r.ID}, &r)
	if r.State != fsm.Running || r.Progress != "embedded" {
		t.Fatalf("after the restart: %+v", r)
	}
	if res := runBin(t, "", "--data", data, "show", r.ID); res.code != 0 || !strings.Contains(res.stdout, "Progress:\n  embedded\n") {
		t.Fatalf("CLI through the new daemon: %+v", res)
	}

	pid := fmt.Sprintf("pid %d", d2.cmd.Process.Pid)
	// The same data directory: the log is locked, the socket answers.
	res := runBin(t, "", "--data", data, "serve")
	if res.code != 1 || !strings.Contains(res.stderr, "a daemon ("+pid+") already serves") {
		t.Errorf("a second daemon on the same data directory: %+v; want exit 1 naming %s", res, pid)
	}
	// Another data directory, the same socket.
	res = runBin(t, "", "--data", t.TempDir(), "serve", "--socket", d2.socket)
	if res.code != 1 || !strings.Contains(res.stderr, "a daemon ("+pid+") already serves "+data+" on "+d2.socket) {
		t.Errorf("a second daemon on the same socket: %+v; want exit 1 naming %s", res, pid)
	}
	// Neither disturbed the first.
	d2.call("show", api.IDRequest{ID: r.ID}, &r)

	// A file that is not a socket is not replaced.
	other := t.TempDir()
	if err := os.WriteFile(api.DefaultSocket(other), []byte("precious"), 0o600); err != nil {
		t.Fatal(err)
	}
	res = runBin(t, "", "--data", other, "serve")
	if res.code != 1 || !strings.Contains(res.stderr, "exists and is not a socket") {
		t.Errorf("serve over a regular file: %+v", res)
	}
	if b, err := os.ReadFile(api.DefaultSocket(other)); err != nil || string(b) != "precious" {
		t.Errorf("serve touched a regular file at the socket path: %q %v", b, err)
	}
}

// dirState lists every file under dir with its size and mode.
func dirState(tb testing.TB, dir string) string {
	tb.Helper()
	var b strings.Builder
	err := filepath.WalkDir(dir, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := e.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		size := fi.Size()
		if fi.IsDir() {
			size = 0
		}
		fmt.Fprintf(&b, "%s %s %d\n", rel, fi.Mode(), size)
		return nil
	})
	if err != nil {
		tb.Fatal(err)
	}
	return b.String()
}

// TestDaemonPermissions: the daemon creates its data directory 0700 and
// its socket 0600, and listens on no TCP or UDP socket.
func TestDaemonPermissions(t *testing.T) {
	t.Parallel()
	data := filepath.Join(t.TempDir(), "new", "data")
	d := startDaemon(t, data)
	for _, c := range []struct {
		path string
		mode fs.FileMode
	}{
		{data, fs.ModeDir | 0o700},
		{d.socket, fs.ModeSocket | 0o600},
		{filepath.Join(data, projection.LogFile), 0o600},
	} {
		fi, err := os.Lstat(c.path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode() != c.mode {
			t.Errorf("%s: mode %s, want %s", c.path, fi.Mode(), c.mode)
		}
	}
	d.call("register", registration("ses_root", "ses_parent", "p"), &fsm.Delegation{})
	st, err := d.client.Status(context.Background())
	if err != nil || st.PID != d.cmd.Process.Pid || st.Socket != d.socket || st.DataDir != data || st.LastSeq != 1 {
		t.Errorf("status %+v, %v; want pid %d, socket %s", st, err, d.cmd.Process.Pid, d.socket)
	}

	if runtime.GOOS != "linux" {
		t.Skip("the socket check reads /proc")
	}
	// The daemon's sockets are the inodes its descriptors link to.
	fdDir := fmt.Sprintf("/proc/%d/fd", d.cmd.Process.Pid)
	fds, err := os.ReadDir(fdDir)
	if err != nil {
		t.Fatal(err)
	}
	inodes := map[string]bool{}
	for _, fd := range fds {
		target, err := os.Readlink(filepath.Join(fdDir, fd.Name()))
		if err != nil {
			continue // closed meanwhile
		}
		if ino, ok := strings.CutPrefix(target, "socket:["); ok {
			inodes[strings.TrimSuffix(ino, "]")] = true
		}
	}
	// Positive control: the listening unix socket is among them.
	found := false
	for _, line := range procLines(t, "/proc/net/unix") {
		f := strings.Fields(line)
		if len(f) >= 8 && inodes[f[6]] && f[7] == d.socket {
			found = true
		}
	}
	if !found {
		t.Fatalf("no descriptor of the daemon is the unix socket %s (sockets %v)", d.socket, inodes)
	}
	for _, table := range []string{"/proc/net/tcp", "/proc/net/tcp6", "/proc/net/udp", "/proc/net/udp6"} {
		for _, line := range procLines(t, table) {
			if f := strings.Fields(line); len(f) >= 10 && inodes[f[9]] {
				t.Errorf("the daemon has an inet socket: %s: %s", table, line)
			}
		}
	}
}

// procLines returns the lines of a /proc table after its header; a table
// the kernel does not have (no IPv6) is empty.
func procLines(tb testing.TB, path string) []string {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		tb.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return lines[1:]
}
