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
	"os"
	"os/exec"
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
