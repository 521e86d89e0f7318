package main

// End-to-end tests of the daemon: the real binary as a subprocess, real
// unix sockets, real bbolt files. Nothing here sleeps to synchronise:
// the tests wait for the daemon's "serving" log line, for its exit, for
// HTTP answers and for event streams. Nothing asserts on time.

import (
	"github.com/delegations/delegations/cmd/delegations/internal/hosttest"

	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"net"
	"net/http"
	"net/http/httptrace"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/delegations/delegations/cmd/delegations/api"
	"github.com/delegations/delegations/fsm"
	"github.com/delegations/delegations/projection"
)

func TestMain(m *testing.M) {
	os.Setenv("DELEGATIONS_HOOK_DAEMON", "0") // in-process hooks would start this test binary
	code := m.Run()
	hosttest.Cleanup()
	if damagedDir != "" {
		os.RemoveAll(damagedDir)
	}
	os.Exit(code)
}

// binary returns the path of the delegations binary, built once, on first
// use (a run of only the unit tests does not pay for it), with -race when
// the tests are.
func binary(tb testing.TB) string { return hosttest.Delegations(tb) }

// childEnv is the environment of the subprocesses: ours, without the
// variables that would point them at another data directory or socket.
// A race-enabled binary would otherwise sleep a second at every clean
// exit (GORACE atexit_sleep_ms defaults to 1000).
func childEnv(extra ...string) []string {
	env := slices.DeleteFunc(os.Environ(), func(kv string) bool {
		return strings.HasPrefix(kv, "DELEGATIONS_") || strings.HasPrefix(kv, "XDG_DATA_HOME=") || strings.HasPrefix(kv, "GORACE=")
	})
	// Hooks start no daemon unless a test asks (DELEGATIONS_HOOK_DAEMON=1
	// in extra): it would outlive the test.
	return append(env, append([]string{"GORACE=atexit_sleep_ms=0", "DELEGATIONS_HOOK_DAEMON=0"}, extra...)...)
}

// cliRun is the outcome of one run of the binary.
type cliRun struct {
	stdout, stderr string
	code           int
}

// runBin runs the binary to its end. An empty stdin is /dev/null, which
// the CLI does not read texts from.
func runBin(tb testing.TB, stdin string, args ...string) cliRun {
	tb.Helper()
	r, err := execBin(binary(tb), stdin, args...)
	if err != nil {
		tb.Fatal(err)
	}
	return r
}

// execBin is runBin for goroutines other than the test's.
func execBin(bin, stdin string, args ...string) (cliRun, error) {
	return execBinEnv(bin, nil, stdin, args...)
}

// execBinEnv is execBin with variables added to the environment.
func execBinEnv(bin string, env []string, stdin string, args ...string) (cliRun, error) {
	cmd := exec.Command(bin, args...)
	cmd.Env = childEnv(env...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		code = ee.ExitCode()
	case err != nil:
		return cliRun{}, fmt.Errorf("run delegations %s: %v", strings.Join(args, " "), err)
	}
	return cliRun{out.String(), errOut.String(), code}, nil
}

// lockedBuffer collects a daemon's stderr while tests read it.
type lockedBuffer struct {
	mu      sync.Mutex
	b       bytes.Buffer
	changed chan struct{} // closed and replaced at every write
}

func newLockedBuffer() *lockedBuffer { return &lockedBuffer{changed: make(chan struct{})} }

func (l *lockedBuffer) WriteString(s string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.b.WriteString(s)
	close(l.changed)
	l.changed = make(chan struct{})
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// state returns the text so far and a channel closed at the next write.
func (l *lockedBuffer) state() (string, <-chan struct{}) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String(), l.changed
}

// daemon is a `delegations serve` subprocess.
type daemon struct {
	tb     testing.TB
	data   string
	socket string
	cmd    *exec.Cmd
	log    *lockedBuffer
	ready  chan struct{} // closed at the "serving" line
	done   chan struct{} // closed when the process has exited
	err    error         // cmd.Wait's result, once done is closed
	client *api.Client
	hc     *http.Client // plain HTTP on the socket, for what Client does not send
}

// startDaemon runs `delegations --data data serve args...` and returns
// once it logs that it serves. It is killed at the end of the test if
// still running. With --manual-clock it runs the test build, the only one
// that has it.
func startDaemon(tb testing.TB, data string, args ...string) *daemon {
	tb.Helper()
	d := &daemon{
		tb: tb, data: data, socket: api.DefaultSocket(data), log: newLockedBuffer(),
		ready: make(chan struct{}), done: make(chan struct{}),
	}
	bin := binary(tb)
	if slices.Contains(args, "--manual-clock") {
		bin = hosttest.DelegationsTestBuild(tb)
	}
	d.cmd = exec.Command(bin, append([]string{"--data", data, "serve"}, args...)...)
	d.cmd.Env = childEnv()
	stderr, err := d.cmd.StderrPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := d.cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(nil, 1<<20)
		served := false
		for sc.Scan() {
			line := sc.Text()
			d.log.WriteString(line + "\n")
			if !served && strings.Contains(line, "msg=serving ") {
				served = true
				close(d.ready)
			}
		}
		io.Copy(io.Discard, stderr)
		d.err = d.cmd.Wait()
		close(d.done)
	}()
	tb.Cleanup(func() {
		select {
		case <-d.done:
		default:
			d.cmd.Process.Kill()
			<-d.done
		}
		if strings.Contains(d.log.String(), "WARNING: DATA RACE") {
			tb.Errorf("the daemon reported a data race:\n%s", d.log)
		} else if tb.Failed() {
			tb.Logf("daemon log (pid %d):\n%s", d.cmd.Process.Pid, d.log)
		}
	})
	select {
	case <-d.ready:
	case <-d.done:
		tb.Fatalf("daemon exited before serving: %v\n%s", d.err, d.log)
	case <-time.After(hangGuard):
		tb.Fatalf("daemon not serving after %s (hang guard):\n%s", hangGuard, d.log)
	}
	if d.client, err = api.Dial(context.Background(), d.socket); err != nil {
		tb.Fatalf("dial the daemon: %v", err)
	}
	tb.Cleanup(func() { d.client.Close() })
	d.hc = socketHTTP(d.socket)
	tb.Cleanup(d.hc.CloseIdleConnections)
	return d
}

// socketHTTP is an HTTP client that dials socket for every host.
func socketHTTP(socket string) *http.Client {
	return &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		},
		DisableCompression: true,
	}}
}

// awaitLog waits until the daemon's log has a line containing text.
func (d *daemon) awaitLog(text string) {
	d.tb.Helper()
	guard := time.NewTimer(hangGuard)
	defer guard.Stop()
	for {
		lg, changed := d.log.state()
		if strings.Contains(lg, text) {
			return
		}
		select {
		case <-changed:
		case <-d.done:
			if !strings.Contains(d.log.String(), text) {
				d.tb.Fatalf("the daemon exited without logging %q:\n%s", text, d.log)
			}
			return
		case <-guard.C:
			d.tb.Fatalf("the daemon did not log %q in %s (hang guard):\n%s", text, hangGuard, d.log)
		}
	}
}

// stop sends sig and returns the exit code once the daemon has exited.
func (d *daemon) stop(sig os.Signal) int {
	d.tb.Helper()
	d.client.Close()
	d.hc.CloseIdleConnections()
	if err := d.cmd.Process.Signal(sig); err != nil {
		d.tb.Fatalf("signal the daemon: %v", err)
	}
	<-d.done
	var ee *exec.ExitError
	switch {
	case d.err == nil:
		return 0
	case errors.As(d.err, &ee):
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return -int(ws.Signal())
		}
		return ee.ExitCode()
	}
	d.tb.Fatalf("wait for the daemon: %v", d.err)
	return -1
}

// call runs verb and fails the test on an error.
func (d *daemon) call(verb string, req, resp any) {
	d.tb.Helper()
	if err := d.client.Call(context.Background(), verb, req, resp); err != nil {
		d.tb.Fatalf("%s %+v: %v", verb, req, err)
	}
}

// raw calls verb and returns its answer as the daemon sent it.
func (d *daemon) raw(verb string, req any) string {
	d.tb.Helper()
	var m json.RawMessage
	d.call(verb, req, &m)
	return string(m)
}

// do sends one plain HTTP request on the socket.
func (d *daemon) do(method, path string, body []byte) (int, http.Header, []byte) {
	d.tb.Helper()
	var r io.Reader
	if body != nil {
		r = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, "http://delegations"+path, r)
	if err != nil {
		d.tb.Fatal(err)
	}
	resp, err := d.hc.Do(req)
	if err != nil {
		d.tb.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		d.tb.Fatalf("%s %s: read the answer: %v", method, path, err)
	}
	return resp.StatusCode, resp.Header, b
}

// lastSeq asks GET /v1/status for the log's last sequence number.
func (d *daemon) lastSeq() uint64 {
	d.tb.Helper()
	st, err := d.client.Status(context.Background())
	if err != nil {
		d.tb.Fatalf("status: %v", err)
	}
	return st.LastSeq
}

// advance moves a --manual-clock daemon's clock and returns its time.
func (d *daemon) advance(ms int64) time.Time {
	d.tb.Helper()
	status, _, body := d.do(http.MethodPost, "/v1/clock", fmt.Appendf(nil, `{"advanceMs":%d}`, ms))
	var now struct{ Now time.Time }
	if err := json.Unmarshal(body, &now); status != http.StatusOK || err != nil {
		d.tb.Fatalf("POST /v1/clock: %d %s", status, body)
	}
	return now.Now
}

// follow streams the daemon's events from seq from on until the test
// ends; the channel closes when the stream does.
func (d *daemon) follow(from uint64, delegation string) <-chan api.Event {
	ctx, cancel := context.WithCancel(context.Background())
	d.tb.Cleanup(cancel)
	// A client of its own: stop closes the shared one's connections.
	c, err := api.Dial(ctx, d.socket)
	if err != nil {
		d.tb.Fatalf("dial: %v", err)
	}
	ch := make(chan api.Event, 1024)
	go func() {
		defer close(ch)
		defer c.Close()
		c.Events(ctx, api.EventsRequest{From: from, Delegation: delegation, Follow: true}, func(ev api.Event) error {
			select {
			case ch <- ev:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		})
	}()
	return ch
}

// hangGuard bounds waits that only a bug makes endless, so that such a
// bug fails its test with what was seen instead of stalling the run. It
// is no synchronisation: every wait it guards ends on an event.
const hangGuard = 2 * time.Minute

// sseMessage is one server-sent event.
type sseMessage struct{ event, id, data string }

// sse reads the server-sent events of path until the test ends. It
// returns once the stream is open.
func (d *daemon) sse(path string) <-chan sseMessage {
	d.tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	d.tb.Cleanup(cancel)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://delegations"+path, nil)
	if err != nil {
		d.tb.Fatal(err)
	}
	hc := socketHTTP(d.socket)
	resp, err := hc.Do(req)
	if err != nil {
		d.tb.Fatalf("GET %s: %v", path, err)
	}
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		d.tb.Fatalf("GET %s: %s %s", path, resp.Status, resp.Header.Get("Content-Type"))
	}
	ch := make(chan sseMessage, 1024)
	go func() {
		defer close(ch)
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(nil, 64<<20)
		var m sseMessage
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "":
				select {
				case ch <- m:
				case <-ctx.Done():
					return
				}
				m = sseMessage{}
			case strings.HasPrefix(line, "event: "):
				m.event = strings.TrimPrefix(line, "event: ")
			case strings.HasPrefix(line, "id: "):
				m.id = strings.TrimPrefix(line, "id: ")
			case strings.HasPrefix(line, "data: "):
				m.data += strings.TrimPrefix(line, "data: ")
			}
		}
	}()
	return ch
}

// awaitEvent reads events until one matches.
func awaitEvent(tb testing.TB, ch <-chan api.Event, what string, match func(api.Event) bool) api.Event {
	tb.Helper()
	return await(tb, ch, what, match, func(ev api.Event) string { return fmt.Sprintf("%d %s %s", ev.Seq, ev.Kind, ev.ID) })
}

// await reads ch until a value matches; show describes the others when
// none does.
func await[T any](tb testing.TB, ch <-chan T, what string, match func(T) bool, show func(T) string) T {
	tb.Helper()
	var seen []string
	guard := time.NewTimer(hangGuard)
	defer guard.Stop()
	for {
		select {
		case v, ok := <-ch:
			if !ok {
				tb.Fatalf("the stream ended without %s; it had:\n%s", what, strings.Join(seen, "\n"))
			}
			if match(v) {
				return v
			}
			seen = append(seen, show(v))
		case <-guard.C:
			tb.Fatalf("no %s after %s (hang guard); the stream had:\n%s", what, hangGuard, strings.Join(seen, "\n"))
		}
	}
}

// registration is a valid registration for tests.
func registration(root, parent, prompt string) api.RegisterRequest {
	return api.RegisterRequest{
		RootSessionID: root, ParentSessionID: parent, Agent: "researcher",
		ProjectID: "0123456789abcdef", Prompt: prompt,
	}
}

// TestDaemonRestartKeepsEverything drives one daemon from eight API
// clients and two CLI processes at once, stops it with SIGTERM and starts
// it again: every record, list, unread flag, due notification (terminal
// and all-complete) and compaction block is byte for byte what it was.
func TestDaemonRestartKeepsEverything(t *testing.T) {
	t.Parallel()
	data := t.TempDir()
	d := startDaemon(t, data)

	const workers, perWorker = 8, 6
	ids := make([][perWorker]string, workers)
	cliIDs := make([][]string, 2)
	errs := make(chan error, workers+len(cliIDs))
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			errs <- apiWorker(d.client, w, &ids[w])
		})
	}
	for w := range cliIDs {
		wg.Go(func() {
			var err error
			cliIDs[w], err = cliWorker(binary(t), data, w)
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	if t.Failed() {
		t.FailNow()
	}

	// The CLI workers acknowledged every notification of their parent:
	// the all-complete becomes due after its quiet period. Wait for it,
	// so that what is due does not change while the daemon restarts.
	var wantDue []string
	for w := range cliIDs {
		parent := fmt.Sprintf("ses_cli%d", w)
		var ns api.Notifications
		d.call("notifications", api.NotificationsRequest{ParentSessionID: parent, WaitMs: 600_000}, &ns)
		if len(ns.Notifications) != 1 || ns.Notifications[0].Kind != projection.KindAllComplete {
			t.Fatalf("notifications of %s: %+v; want one all-complete", parent, ns.Notifications)
		}
		wantDue = append(wantDue, ns.Notifications[0].ID)
	}

	// What should be due besides: each API worker's unacknowledged
	// completion (j=1) and cancellation (j=5).
	for w := range workers {
		wantDue = append(wantDue, "terminal:"+ids[w][1], "terminal:"+ids[w][5])
	}
	var ns api.Notifications
	d.call("notifications", api.NotificationsRequest{}, &ns)
	var due []string
	for _, n := range ns.Notifications {
		due = append(due, n.ID)
	}
	slices.Sort(due)
	slices.Sort(wantDue)
	if !slices.Equal(due, wantDue) {
		t.Errorf("due notifications:\n%s\nwant\n%s", strings.Join(due, "\n"), strings.Join(wantDue, "\n"))
	}
	// Unread: acknowledged and not read (j=2 complete, j=4 failed, both CLI ones).
	for _, root := range []string{"ses_root0", "ses_root1", "ses_cliroot"} {
		var ls api.List
		d.call("list", api.ListRequest{RootSessionID: root, Unread: true}, &ls)
		want := map[string]bool{}
		for w := range workers {
			if fmt.Sprintf("ses_root%d", w%2) == root {
				want[ids[w][2]], want[ids[w][4]] = true, true
			}
		}
		if root == "ses_cliroot" {
			for _, c := range cliIDs {
				for _, id := range c {
					want[id] = true
				}
			}
		}
		got := map[string]bool{}
		for _, x := range ls.Delegations {
			got[x.ID] = true
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("unread in %s: %v, want %v", root, got, want)
		}
	}

	var all []string
	for w := range workers {
		all = append(all, ids[w][:]...)
	}
	for _, c := range cliIDs {
		all = append(all, c...)
	}
	before := snapshot(d, all)
	seq := d.lastSeq()

	if code := d.stop(syscall.SIGTERM); code != 0 {
		t.Fatalf("SIGTERM: exit %d, want 0\n%s", code, d.log)
	}
	if _, err := os.Lstat(d.socket); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the socket is still there after a clean stop: %v", err)
	}
	if !strings.Contains(d.log.String(), "msg=stopping") {
		t.Errorf("no stopping line in the log:\n%s", d.log)
	}

	d2 := startDaemon(t, data)
	if got := d2.lastSeq(); got != seq {
		t.Errorf("lastSeq after restart %d, want %d", got, seq)
	}
	after := snapshot(d2, all)
	for _, k := range slices.Sorted(maps.Keys(before)) {
		if before[k] != after[k] {
			t.Errorf("%s changed across the restart:\nbefore %s\nafter  %s", k, before[k], after[k])
		}
	}
	if len(after) != len(before) {
		t.Errorf("snapshot sizes differ: %d before, %d after", len(before), len(after))
	}
}

// apiWorker runs six delegations of its own parent session through the
// API and leaves each in a different state: j=0 running, j=1 complete
// with its notification due, j=2 complete and acknowledged (unread), j=3
// complete, acknowledged and read, j=4 failed and acknowledged (unread),
// j=5 cancelled with its notification due.
func apiWorker(c *api.Client, w int, ids *[6]string) error {
	ctx := context.Background()
	root, parent := fmt.Sprintf("ses_root%d", w%2), fmt.Sprintf("ses_parent%d", w)
	call := func(verb string, req, resp any) error {
		if err := c.Call(ctx, verb, req, resp); err != nil {
			return fmt.Errorf("worker %d: %s %+v: %w", w, verb, req, err)
		}
		return nil
	}
	for j := range ids {
		req := registration(root, parent, fmt.Sprintf("task %d.%d", w, j))
		req.IdempotencyKey = fmt.Sprintf("key-%d-%d", w, j)
		var r, again fsm.Delegation
		if err := call("register", req, &r); err != nil {
			return err
		}
		if err := call("register", req, &again); err != nil {
			return err
		}
		if again.ID != r.ID {
			return fmt.Errorf("worker %d: a retried registration made %s, the first %s", w, again.ID, r.ID)
		}
		ids[j] = r.ID
		var s fsm.Delegation
		if err := call("start", api.StartRequest{ID: r.ID, SessionID: fmt.Sprintf("ses_child%d_%d", w, j)}, &s); err != nil {
			return err
		}
		if err := call("progress", api.ProgressRequest{ID: r.ID, Message: fmt.Sprintf("step %d of worker %d", j, w)}, &s); err != nil {
			return err
		}
	}
	var d fsm.Delegation
	var ack projection.AckResult
	for j, id := range ids {
		var err error
		switch j {
		case 1, 2, 3:
			err = call("complete", api.CompleteRequest{ID: id, Result: fmt.Sprintf("Result %d.%d\nwith a second line", w, j)}, &d)
		case 4:
			err = call("fail", api.FailRequest{ID: id, Error: "the child crashed"}, &d)
		case 5:
			err = call("cancel", api.CancelRequest{ID: id, Reason: "user interrupt"}, &d)
		}
		if err != nil {
			return err
		}
		if j == 2 || j == 3 || j == 4 {
			if err := call("ack", api.AckRequest{ID: "terminal:" + id}, &ack); err != nil {
				return err
			}
		}
		if j == 3 {
			var rr projection.ReadResult
			if err := call("read", api.ReadRequest{RootSessionID: root, ID: id}, &rr); err != nil {
				return err
			}
			if !rr.Artifact || !strings.HasSuffix(rr.Text, fmt.Sprintf("Result %d.%d\nwith a second line", w, j)) {
				return fmt.Errorf("worker %d: read %s: %+v", w, id, rr)
			}
		}
	}
	return nil
}

// cliWorker runs two delegations of its own parent through the binary,
// which goes through the daemon (the daemon holds the log: an embedded
// run would fail on the lock), completes both and acknowledges both.
func cliWorker(bin, data string, w int) ([]string, error) {
	parent := fmt.Sprintf("ses_cli%d", w)
	var ids []string
	run := func(stdin string, args ...string) (string, error) {
		r, err := execBin(bin, stdin, append([]string{"--data", data}, args...)...)
		if err != nil {
			return "", err
		}
		if r.code != 0 || r.stderr != "" {
			return "", fmt.Errorf("cli worker %d: delegations %s: exit %d\nstderr: %s", w, strings.Join(args, " "), r.code, r.stderr)
		}
		return r.stdout, nil
	}
	for j := range 2 {
		out, err := run("", "--json", "register", "--root-session", "ses_cliroot", "--parent-session", parent,
			"--agent", "scout", "--project", "0123456789abcdef", "--idempotency-key", fmt.Sprintf("cli-%d-%d", w, j),
			"--prompt", fmt.Sprintf("cli task %d.%d", w, j))
		if err != nil {
			return nil, err
		}
		var d fsm.Delegation
		if err := json.Unmarshal([]byte(out), &d); err != nil {
			return nil, fmt.Errorf("cli worker %d: register printed %q: %v", w, out, err)
		}
		ids = append(ids, d.ID)
		if _, err := run("", "start", d.ID); err != nil {
			return nil, err
		}
		if _, err := run("progress text\n", "progress", d.ID); err != nil {
			return nil, err
		}
		if _, err := run(fmt.Sprintf("cli result %d.%d\n", w, j), "complete", d.ID); err != nil {
			return nil, err
		}
	}
	for _, id := range ids {
		if out, err := run("", "ack", "terminal:"+id); err != nil {
			return nil, err
		} else if out != "terminal:"+id+" acknowledged\n" {
			return nil, fmt.Errorf("cli worker %d: ack printed %q", w, out)
		}
	}
	return ids, nil
}

// snapshot is everything a client can see, as the daemon sends it.
func snapshot(d *daemon, ids []string) map[string]string {
	m := map[string]string{}
	for _, id := range ids {
		m["show "+id] = d.raw("show", api.IDRequest{ID: id})
	}
	for _, root := range []string{"ses_root0", "ses_root1", "ses_cliroot"} {
		m["list "+root] = d.raw("list", api.ListRequest{RootSessionID: root})
		m["list --order time "+root] = d.raw("list", api.ListRequest{RootSessionID: root, Order: "time"})
		m["list --unread "+root] = d.raw("list", api.ListRequest{RootSessionID: root, Unread: true})
		m["compact "+root] = d.raw("compact", api.CompactRequest{RootSessionID: root})
	}
	m["notifications"] = d.raw("notifications", api.NotificationsRequest{})
	m["active"] = d.raw("active", api.ActiveRequest{})
	return m
}

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

// Body limits of the verbs, as service.go sets them: verbs without long
// texts take 64 KiB; the others 6 bytes per byte of their longest texts
// (the worst JSON escape) plus 64 KiB.
const smallLimit = 64 << 10

func textLimitOf(max int) int { return 6*max + smallLimit }

var verbLimits = map[string]int{
	"register":      textLimitOf(fsm.MaxPromptLen),
	"start":         smallLimit,
	"progress":      textLimitOf(fsm.MaxMessageLen),
	"complete":      textLimitOf(fsm.MaxResultLen + fsm.MaxDescriptionLen + fsm.MaxTitleLen),
	"fail":          textLimitOf(fsm.MaxErrorLen),
	"cancel":        textLimitOf(fsm.MaxReasonLen),
	"show":          smallLimit,
	"read":          smallLimit,
	"list":          smallLimit,
	"active":        smallLimit,
	"notifications": smallLimit,
	"ack":           textLimitOf(fsm.MaxErrorLen),
	"compact":       smallLimit,
	"replay":        smallLimit,
	"verify":        smallLimit,
	"timeline":      smallLimit,
	"import":        smallLimit,
	"backup":        smallLimit,
}

// bodyOfSize is a JSON object of exactly n bytes with one unknown field.
func bodyOfSize(n int) []byte {
	b := make([]byte, 0, n)
	b = append(b, `{"padding":"`...)
	for len(b) < n-2 {
		b = append(b, 'a')
	}
	return append(b, `"}`...)
}

// TestBadRequests sends the real daemon requests it must refuse: each
// gets its 4xx status, stable code and a message saying what is wrong,
// and none changes the log or the data directory.
func TestBadRequests(t *testing.T) {
	t.Parallel()
	data := t.TempDir()
	d := startDaemon(t, data)
	var active, done fsm.Delegation
	d.call("register", registration("ses_root", "ses_parent", "stays active"), &active)
	d.call("start", api.StartRequest{ID: active.ID}, &active)
	d.call("register", registration("ses_root", "ses_parent", "finished"), &done)
	d.call("complete", api.CompleteRequest{ID: done.ID, Result: "ok"}, &done)
	known := active.ID

	type tc struct {
		name         string
		method, path string
		body         string
		status       int
		code         string
		msg          string // the message contains this
	}
	post := func(name, verb, body string, status int, code, msg string) tc {
		return tc{name, http.MethodPost, "/v1/" + verb, body, status, code, msg}
	}
	const (
		bad       = http.StatusBadRequest
		notFound  = http.StatusNotFound
		idGrammar = "want adjective-color-animal"
		sesGramm  = "it is used as a directory name"
	)
	reg := func(edit func(*api.RegisterRequest)) string {
		r := registration("ses_root", "ses_parent", "p")
		edit(&r)
		b, _ := json.Marshal(r)
		return string(b)
	}
	cases := []tc{
		// Malformed and empty bodies.
		post("malformed JSON", "show", `{"id":`, bad, "invalid", "malformed JSON"),
		post("malformed JSON at a byte", "register", `{"agent": x}`, bad, "invalid", "malformed JSON at byte"),
		post("empty body", "show", "", bad, "invalid", "empty request body; send a JSON object with the fields id"),
		post("blank body", "list", " \n", bad, "invalid", "empty request body"),
		post("two objects", "show", `{"id":"`+known+`"}{}`, bad, "invalid", "data after the JSON object"),
		post("wrong type", "read", `{"rootSessionID":"ses_root","id":"`+known+`","waitMs":"10"}`, bad, "invalid", `field "waitMs": want a JSON int64, got string`),
		post("array", "show", `["`+known+`"]`, bad, "invalid", "want a JSON"),
		post("unknown field", "show", `{"id":"`+known+`","bogus":1}`, bad, "invalid", `unknown field "bogus"; the fields are id`),
		post("misspelt field", "progress", `{"id":"`+known+`","mesage":"x"}`, bad, "invalid", `unknown field "mesage"; the fields are id, message`),
		// Missing fields.
		post("register without project", "register", `{"rootSessionID":"r","parentSessionID":"p","agent":"a"}`, bad, "invalid", "give projectId, or projectDir"),
		post("register without root", "register", reg(func(r *api.RegisterRequest) { r.RootSessionID = "" }), bad, "invalid", "root session id: required"),
		post("register without agent", "register", reg(func(r *api.RegisterRequest) { r.Agent = "" }), bad, "invalid", "agent: required"),
		post("register with both projects", "register", reg(func(r *api.RegisterRequest) { r.ProjectDir = "/tmp" }), bad, "invalid", "not both"),
		post("register with a relative project dir", "register", reg(func(r *api.RegisterRequest) { r.ProjectID, r.ProjectDir = "", "rel/dir" }), bad, "invalid", "is not absolute"),
		post("show without id", "show", `{}`, bad, "invalid", "delegation id: required"),
		post("start without id", "start", `{}`, bad, "invalid", "delegation id: required"),
		post("read without root", "read", `{"id":"`+known+`"}`, bad, "invalid", "root session id: required"),
		post("list without root", "list", `{}`, bad, "invalid", "root session id: required"),
		post("compact without root", "compact", `{}`, bad, "invalid", "root session id: required"),
		post("ack without id", "ack", `{}`, bad, "invalid", "notification id"),
		// Unknown ids: 404, nothing recorded.
		post("show unknown", "show", `{"id":"unknown-grey-owl"}`, notFound, "not_found", `delegation "unknown-grey-owl" not found in `+data),
		post("start unknown", "start", `{"id":"unknown-grey-owl"}`, notFound, "not_found", `"unknown-grey-owl" not found`),
		post("progress unknown", "progress", `{"id":"unknown-grey-owl","message":"x"}`, notFound, "not_found", `"unknown-grey-owl" not found`),
		post("complete unknown", "complete", `{"id":"unknown-grey-owl","result":"x"}`, notFound, "not_found", `"unknown-grey-owl" not found`),
		post("fail unknown", "fail", `{"id":"unknown-grey-owl","error":"x"}`, notFound, "not_found", `"unknown-grey-owl" not found`),
		post("cancel unknown", "cancel", `{"id":"unknown-grey-owl"}`, notFound, "not_found", `"unknown-grey-owl" not found`),
		post("read unknown", "read", `{"rootSessionID":"ses_root","id":"unknown-grey-owl"}`, notFound, "not_found", `Delegation "unknown-grey-owl" not found.`),
		post("read from another root", "read", `{"rootSessionID":"ses_other","id":"`+done.ID+`"}`, notFound, "not_found", `Delegation "`+done.ID+`" not found.`),
		post("ack unknown", "ack", `{"id":"terminal:unknown-grey-owl"}`, notFound, "not_found", "unknown-grey-owl"),
		post("ack unknown kind", "ack", `{"id":"bogus:x"}`, bad, "invalid", "notification id"),
		// Ids and session ids that would leave the data directory.
		post("show ../", "show", `{"id":"../../etc/passwd"}`, bad, "invalid", idGrammar),
		post("start ../", "start", `{"id":"../x-y-z"}`, bad, "invalid", idGrammar),
		post("complete ../", "complete", `{"id":"a-b-c/../../d","result":"x"}`, bad, "invalid", idGrammar),
		post("read id ../", "read", `{"rootSessionID":"ses_root","id":"../`+known+`"}`, bad, "invalid", idGrammar),
		post("read root ../", "read", `{"rootSessionID":"../ses_root","id":"`+known+`"}`, bad, "invalid", sesGramm),
		post("register root ../", "register", reg(func(r *api.RegisterRequest) { r.RootSessionID = "../../x" }), bad, "invalid", sesGramm),
		post("register root ..", "register", reg(func(r *api.RegisterRequest) { r.RootSessionID = ".." }), bad, "invalid", sesGramm),
		post("register parent ../", "register", reg(func(r *api.RegisterRequest) { r.ParentSessionID = "../p" }), bad, "invalid", sesGramm),
		post("register session ../", "register", reg(func(r *api.RegisterRequest) { r.SessionID = "a/../../b" }), bad, "invalid", sesGramm),
		post("register project ../", "register", reg(func(r *api.RegisterRequest) { r.ProjectID = "../../etc" }), bad, "invalid", sesGramm),
		post("start session ../", "start", `{"id":"`+known+`","sessionID":"../child"}`, bad, "invalid", sesGramm),
		post("list root ../", "list", `{"rootSessionID":"../x"}`, bad, "invalid", sesGramm),
		post("active root ../", "active", `{"rootSessionID":"../"}`, bad, "invalid", sesGramm),
		post("active parent ../", "active", `{"parentSessionID":"x/../y"}`, bad, "invalid", sesGramm),
		post("notifications parent ../", "notifications", `{"parentSessionID":"../p"}`, bad, "invalid", sesGramm),
		post("compact root ../", "compact", `{"rootSessionID":"../r"}`, bad, "invalid", sesGramm),
		post("ack ../", "ack", `{"id":"terminal:../../x"}`, bad, "invalid", idGrammar),
		post("timeline ../", "timeline", `{"id":"../x"}`, bad, "invalid", idGrammar),
		post("timeline unknown", "timeline", `{"id":"unknown-grey-owl"}`, notFound, "not_found", "unknown-grey-owl"),
		post("import a relative dir", "import", `{"dir":"../legacy"}`, bad, "invalid", "is not absolute"),
		post("import without dir", "import", `{}`, bad, "invalid", "dir"),
		post("replay until garbage", "replay", `{"until":"yesterday"}`, bad, "invalid", "want a sequence number, or an RFC 3339 time"),
		// NUL bytes and invalid UTF-8.
		post("NUL in progress", "progress", `{"id":"`+known+`","message":"a\u0000b"}`, bad, "invalid", "NUL byte at offset 1"),
		post("NUL in result", "complete", `{"id":"`+known+`","result":"ok\u0000"}`, bad, "invalid", "NUL byte"),
		post("NUL in prompt", "register", reg(func(r *api.RegisterRequest) { r.Prompt = "x\x00y" }), bad, "invalid", "NUL byte"),
		post("NUL in id", "show", `{"id":"a-b-c\u0000"}`, bad, "invalid", idGrammar),
		post("NUL in agent", "register", reg(func(r *api.RegisterRequest) { r.Agent = "a\x00" }), bad, "invalid", "non-printable"),
		post("invalid UTF-8", "progress", "{\"id\":\""+known+"\",\"message\":\"\xff\xfe\"}", bad, "invalid", "not valid UTF-8"),
		post("invalid UTF-8 in id", "show", "{\"id\":\"\xc3\"}", bad, "invalid", "not valid UTF-8"),
		// Negative and out-of-range numbers.
		post("negative waitMs read", "read", `{"rootSessionID":"ses_root","id":"`+known+`","waitMs":-1}`, bad, "invalid", "waitMs -1 is outside 0..86400000"),
		post("huge waitMs read", "read", `{"rootSessionID":"ses_root","id":"`+known+`","waitMs":86400001}`, bad, "invalid", "waitMs 86400001 is outside"),
		post("negative waitMs notifications", "notifications", `{"waitMs":-5}`, bad, "invalid", "waitMs -5 is outside"),
		post("negative timeoutMs", "register", reg(func(r *api.RegisterRequest) { r.TimeoutMs = -1 }), bad, "invalid", "timeoutMs -1 is negative"),
		post("timeoutMs under a second", "register", reg(func(r *api.RegisterRequest) { r.TimeoutMs = 500 }), bad, "invalid", "want between 1s and 7 days"),
		post("timeoutMs over a week", "register", reg(func(r *api.RegisterRequest) { r.TimeoutMs = 8 * 24 * 3600 * 1000 }), bad, "invalid", "want between 1s and 7 days"),
		post("negative maxUnread", "compact", `{"rootSessionID":"ses_root","maxUnread":-1}`, bad, "invalid", "must not be negative"),
		post("bad list status", "list", `{"rootSessionID":"ses_root","status":"bogus"}`, bad, "invalid", "status"),
		post("bad list order", "list", `{"rootSessionID":"ses_root","order":"size"}`, bad, "invalid", `order is id or time, not "size"`),
		// Wrong methods and unknown endpoints.
		{"GET a verb", http.MethodGet, "/v1/show", "", http.StatusMethodNotAllowed, "method_not_allowed", "GET /v1/show; use POST"},
		{"PUT a verb", http.MethodPut, "/v1/register", "{}", http.StatusMethodNotAllowed, "method_not_allowed", "use POST"},
		{"POST events", http.MethodPost, "/v1/events", "{}", http.StatusMethodNotAllowed, "method_not_allowed", "POST /v1/events; use GET"},
		{"POST stream", http.MethodPost, "/v1/stream", "", http.StatusMethodNotAllowed, "method_not_allowed", "use GET"},
		{"DELETE status", http.MethodDelete, "/v1/status", "", http.StatusMethodNotAllowed, "method_not_allowed", "use GET"},
		post("unknown verb", "frobnicate", "{}", notFound, "no_endpoint", "/v1/frobnicate; the verbs are ack, active, backup, cancel"),
		post("serve is not a verb", "serve", "{}", notFound, "no_endpoint", "the verbs are"),
		post("clock, a test build's", "clock", `{"advanceMs":1}`, notFound, "no_endpoint", "/v1/clock; the verbs are"),
		{"root path", http.MethodGet, "/", "", notFound, "no_endpoint", "the API is under /v1/"},
		{"v2", http.MethodPost, "/v2/show", "{}", notFound, "no_endpoint", "the API is under /v1/"},
		{"nested path", http.MethodPost, "/v1/show/extra", "{}", notFound, "no_endpoint", "/v1/show/extra"},
		// The streams' parameters.
		{"events from", http.MethodGet, "/v1/events?from=x", "", bad, "invalid", "from: "},
		{"events from negative", http.MethodGet, "/v1/events?from=-1", "", bad, "invalid", "from: "},
		{"events delegation ../", http.MethodGet, "/v1/events?delegation=../x", "", bad, "invalid", idGrammar},
		{"events unknown delegation", http.MethodGet, "/v1/events?delegation=unknown-grey-owl", "", notFound, "not_found", `delegation "unknown-grey-owl" has no events`},
		{"stream parent ../", http.MethodGet, "/v1/stream?parentSessionID=../p", "", bad, "invalid", sesGramm},
		{"stream from", http.MethodGet, "/v1/stream?from=x", "", bad, "invalid", "from: "},
		{"stream Last-Event-ID", http.MethodGet, "/v1/stream", "", bad, "invalid", "Last-Event-ID"},
	}
	// Oversized bodies: one byte over each verb's limit is refused before
	// decoding; a body of exactly the limit is decoded (and refused for
	// its unknown field).
	if got := slices.Sorted(maps.Keys(verbLimits)); !slices.Equal(got, api.Verbs()) {
		t.Errorf("the limits table covers %v; the daemon serves %v", got, api.Verbs())
	}
	for _, verb := range slices.Sorted(maps.Keys(verbLimits)) {
		limit := verbLimits[verb]
		if testing.Short() && limit > 8<<20 {
			continue
		}
		cases = append(cases,
			post(verb+" over the limit", verb, string(bodyOfSize(limit+1)), http.StatusRequestEntityTooLarge, "too_large",
				fmt.Sprintf("the body of %s is limited to %d bytes", verb, limit)),
			post(verb+" at the limit", verb, string(bodyOfSize(limit)), bad, "invalid", `unknown field "padding"`))
	}

	seq, files := d.lastSeq(), dirState(t, data)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var body []byte
			if c.method != http.MethodGet {
				body = []byte(c.body)
			}
			req, err := http.NewRequest(c.method, "http://delegations"+c.path, bytes.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			if c.name == "stream Last-Event-ID" {
				req.Header.Set("Last-Event-ID", "nope")
			}
			resp, err := d.hc.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			raw, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				t.Fatal(err)
			}
			var eb struct{ Error *api.Error }
			if err := json.Unmarshal(raw, &eb); err != nil || eb.Error == nil {
				t.Fatalf("%d: the answer is not a JSON error: %q (%v)", resp.StatusCode, raw, err)
			}
			if resp.StatusCode != c.status || eb.Error.Code != c.code || !strings.Contains(eb.Error.Message, c.msg) {
				t.Errorf("%d %s %q\nwant %d %s and a message with %q", resp.StatusCode, eb.Error.Code, eb.Error.Message, c.status, c.code, c.msg)
			}
			if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type %q", ct)
			}
			if c.status == http.StatusMethodNotAllowed && resp.Header.Get("Allow") == "" {
				t.Errorf("405 without an Allow header")
			}
			if got := d.lastSeq(); got != seq {
				t.Fatalf("the log changed: lastSeq %d, was %d", got, seq)
			}
			if got := dirState(t, data); got != files {
				t.Fatalf("the data directory changed:\n%s\nwas\n%s", got, files)
			}
		})
	}
	// None of it disturbed the delegations.
	var r fsm.Delegation
	d.call("show", api.IDRequest{ID: known}, &r)
	if r.State != fsm.Running || r.Version != active.Version {
		t.Errorf("the active delegation changed: %+v", r)
	}
}

// cliStep is one command of TestCLISameWithAndWithoutDaemon's script.
// Arguments may name the ids registered before as {1}, {2}.
type cliStep struct {
	stdin string
	args  []string
	code  int
}

// What differs between two runs of the same script besides the ids.
var (
	isoTime     = regexp.MustCompile(`\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z`)
	artifactNum = regexp.MustCompile(`"artifact(Size|Hash)":("[0-9a-f]+"|\d+)`)
	hashText    = regexp.MustCompile(`\d+ bytes, xxhash [0-9a-f]{16}`)
	msField     = regexp.MustCompile(`"(\w+Ms)":\d+`)
	duration    = regexp.MustCompile(`\b(\d+(\.\d+)?(h|m|s|ms|µs|ns))+\b`)
	spaces      = regexp.MustCompile(` {2,}`)
)

// TestCLISameWithAndWithoutDaemon runs one script of CLI commands twice,
// once on a data directory without a daemon (the CLI opens the log) and
// once through a daemon serving another: stdout, stderr and exit codes
// are the same once ids, times and the directory are normalised.
func TestCLISameWithAndWithoutDaemon(t *testing.T) {
	t.Parallel()
	reg := func(extra ...string) []string {
		return append([]string{"register", "--root-session", "ses_root", "--parent-session", "ses_parent",
			"--agent", "researcher", "--project", "0123456789abcdef"}, extra...)
	}
	script := []cliStep{
		{args: reg("--idempotency-key", "k1", "--prompt", "Find the flaky test")},
		{args: append([]string{"--json"}, reg("--idempotency-key", "k1", "--prompt", "Find the flaky test")...)},
		{stdin: "Second task\nfrom stdin\n", args: append([]string{"--json"}, reg("--idempotency-key", "k2", "--timeout", "1h", "--model", "m1")...)},
		{args: []string{"start", "--session", "ses_child1", "{1}"}},
		{args: []string{"--json", "start", "{2}"}},
		{args: []string{"progress", "--message", "half way", "{1}"}},
		{stdin: "reading the logs\n", args: []string{"progress", "{2}"}},
		{stdin: "The cache races.\nDetails follow.", args: []string{"complete", "--title", "The cache races", "{1}"}},
		{args: []string{"--json", "show", "{1}"}},
		{args: []string{"show", "{1}"}},
		{args: []string{"show", "{2}"}},
		{args: []string{"--json", "read", "--root-session", "ses_root", "{2}"}},
		{args: []string{"read", "--root-session", "ses_root", "{2}"}},
		// The default order is by id, and the ids differ between the runs.
		{args: []string{"list", "--root-session", "ses_root", "--order", "time"}},
		{args: []string{"--json", "list", "--root-session", "ses_root", "--order", "time"}},
		{args: []string{"notifications"}},
		{args: []string{"--json", "notifications", "--parent-session", "ses_parent"}},
		{args: []string{"ack", "terminal:{1}"}},
		{args: []string{"--json", "ack", "terminal:{1}"}},
		{args: []string{"--json", "list", "--root-session", "ses_root", "--unread"}},
		{args: []string{"list", "--root-session", "ses_root", "--unread"}},
		{args: []string{"compact", "--root-session", "ses_root"}},
		{args: []string{"--json", "compact", "--root-session", "ses_root", "--brief"}},
		{args: []string{"active"}},
		{args: []string{"--json", "active", "--root-session", "ses_root"}},
		{args: []string{"read", "--root-session", "ses_root", "{1}"}},
		{args: []string{"--json", "read", "--root-session", "ses_root", "{1}"}},
		{args: []string{"fail", "--error", "boom", "{2}"}},
		{args: []string{"--json", "notifications"}},
		{args: []string{"ack", "--failed", "host busy", "terminal:{2}"}},
		{args: []string{"--json", "notifications"}},
		{args: []string{"compact", "--root-session", "ses_root"}},
		// Refusals.
		{args: []string{"show", "unknown-grey-owl"}, code: 1},
		{args: []string{"--json", "show", "unknown-grey-owl"}, code: 1},
		{args: []string{"complete", "--result", "x", "unknown-grey-owl"}, code: 1},
		{args: []string{"progress", "--message", "too late", "{1}"}, code: 1},
		{args: []string{"--json", "cancel", "{1}"}, code: 1},
		{args: []string{"show", "../../etc/passwd"}, code: 1},
		{args: []string{"--json", "read", "--root-session", "../x", "{1}"}, code: 1},
		{args: []string{"read", "--root-session", "ses_other", "{1}"}, code: 1},
		{args: []string{"--json", "read", "--root-session", "ses_other", "{1}"}, code: 1},
		{args: []string{"ack", "terminal:unknown-grey-owl"}, code: 1},
		{args: []string{"--json", "register", "--root-session", "r", "--parent-session", "p", "--agent", "a", "--project", "p", "--timeout", "9000h"}, code: 1},
		{args: []string{"list", "--root-session", "ses_root", "--status", "bogus"}, code: 2},
		{args: []string{"events", "--delegation", "unknown-grey-owl"}, code: 1},
		// The log, refusals included.
		{args: []string{"events"}},
		{args: []string{"--json", "events", "--delegation", "{1}"}},
		{args: []string{"events", "--from", "5", "--delegation", "{2}"}},
		{args: []string{"--json", "show", "{1}"}},
		// The inspection verbs.
		{args: []string{"timeline", "{1}"}},
		{args: []string{"--json", "timeline", "{2}"}},
		{args: []string{"verify"}},
		{args: []string{"--json", "verify"}},
		{args: []string{"replay"}},
		{args: []string{"--json", "replay"}},
		{args: []string{"timeline", "unknown-grey-owl"}, code: 1},
	}

	embedded, served := t.TempDir(), t.TempDir()
	d := startDaemon(t, served)
	a := runScript(t, embedded, script)
	b := runScript(t, served, script)
	for i, st := range script {
		if a[i] != b[i] {
			t.Errorf("step %d (%s) differs\nwithout a daemon: %+v\nthrough a daemon: %+v", i, strings.Join(st.args, " "), a[i], b[i])
		}
		if a[i].code != st.code {
			t.Errorf("step %d (%s): exit %d, want %d\n%+v", i, strings.Join(st.args, " "), a[i].code, st.code, a[i])
		}
	}
	// The daemon served them: the embedded runs would have found the log
	// locked. And it saw no errors of its own.
	if lg := d.log.String(); strings.Contains(lg, "level=ERROR") || strings.Contains(lg, "level=WARN") {
		t.Errorf("the daemon logged trouble:\n%s", lg)
	}
	if res := runBin(t, "", "--data", embedded, "events", "--follow"); res.code != 1 || !strings.Contains(res.stderr, "needs a running daemon") {
		t.Errorf("events --follow without a daemon: %+v", res)
	}
}

// runScript runs the script on data and returns each step's outcome,
// normalised: the ids it registered become ID1, ID2; times, durations,
// artifact sizes and hashes (the artifact holds the id), the data
// directory and runs of spaces (padding after ids of other lengths) become
// placeholders.
func runScript(t *testing.T, data string, script []cliStep) []cliRun {
	var ids []string
	out := make([]cliRun, len(script))
	for i, st := range script {
		args := []string{"--data", data}
		for _, a := range st.args {
			for n, id := range ids {
				a = strings.ReplaceAll(a, fmt.Sprintf("{%d}", n+1), id)
			}
			args = append(args, a)
		}
		res := runBin(t, st.stdin, args...)
		if i < 3 && res.code == 0 { // the registrations
			id := strings.TrimSpace(res.stdout)
			if strings.HasPrefix(id, "{") {
				var d fsm.Delegation
				if err := json.Unmarshal([]byte(id), &d); err != nil {
					t.Fatalf("step %d: %v", i, err)
				}
				id = d.ID
			}
			if !slices.Contains(ids, id) {
				ids = append(ids, id)
			}
		}
		norm := func(s string) string {
			s = strings.ReplaceAll(s, data, "DATA")
			for n, id := range ids {
				s = strings.ReplaceAll(s, id, fmt.Sprintf("ID%d", n+1))
			}
			s = isoTime.ReplaceAllString(s, "TIME")
			s = artifactNum.ReplaceAllString(s, `"artifact$1":N`)
			s = hashText.ReplaceAllString(s, "N bytes, xxhash H")
			s = msField.ReplaceAllString(s, `"$1":N`)
			s = duration.ReplaceAllString(s, "DURATION")
			return spaces.ReplaceAllString(s, " ")
		}
		out[i] = cliRun{norm(res.stdout), norm(res.stderr), res.code}
	}
	if len(ids) != 2 {
		t.Fatalf("the script registered %v, want two ids", ids)
	}
	return out
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
