package api

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/delegations/delegations/fsm"
	"github.com/delegations/delegations/projection"
	"github.com/delegations/delegations/projection/clocktest"
)

var t0 = time.Date(2026, 11, 21, 10, 0, 0, 0, time.UTC)

// hangGuard turns a wait that never ends (a bug) into a failure; every
// wait it bounds ends on an event, not on the time passing.
const hangGuard = time.Minute

// daemon is an in-process daemon on a real socket in a temporary data
// directory, with a manual clock.
type daemon struct {
	dir    string
	clock  *clocktest.Clock
	client *Client
	stop   func() error // stops the daemon and returns what Serve returned
}

func startDaemon(t *testing.T) *daemon {
	t.Helper()
	return startDaemonWith(t, func(*Config) {})
}

// startDaemonWith starts a daemon whose Config set changes first.
func startDaemonWith(t *testing.T, set func(*Config)) *daemon {
	t.Helper()
	d := &daemon{dir: t.TempDir(), clock: clocktest.New(t0)}
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan Status, 1)
	done := make(chan error, 1)
	cfg := Config{DataDir: d.dir, Clock: d.clock, Ready: func(st Status) { ready <- st }}
	set(&cfg)
	go func() {
		done <- Serve(ctx, cfg)
	}()
	select {
	case st := <-ready:
		if st.Socket != filepath.Join(d.dir, SocketName) {
			t.Fatalf("socket %s", st.Socket)
		}
	case err := <-done:
		cancel()
		t.Fatalf("serve: %v", err)
	}
	c, err := Dial(ctx, DefaultSocket(d.dir))
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	d.client = c
	stopped := false
	d.stop = func() error {
		if stopped {
			return nil
		}
		stopped = true
		c.Close()
		cancel()
		return <-done
	}
	t.Cleanup(func() {
		if err := d.stop(); err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return d
}

func (d *daemon) call(t *testing.T, verb string, req, resp any) {
	t.Helper()
	if err := d.client.Call(context.Background(), verb, req, resp); err != nil {
		t.Fatalf("%s: %v", verb, err)
	}
}

func (d *daemon) register(t *testing.T, parent string, timeoutMs int64) fsm.Delegation {
	t.Helper()
	var rec fsm.Delegation
	d.call(t, "register", RegisterRequest{
		RootSessionID: "ses_root", ParentSessionID: parent, Agent: "explore", ProjectID: "proj",
		Prompt: "look around", TimeoutMs: timeoutMs,
	}, &rec)
	return rec
}

// awaitEvent follows the log from seq from until an event of kind for id
// arrives, and returns it.
func (d *daemon) awaitEvent(t *testing.T, from uint64, id, kind string) Event {
	t.Helper()
	var found Event
	stop := errors.New("found")
	ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
	defer cancel()
	err := d.client.Events(ctx, EventsRequest{From: from, Delegation: id, Follow: true}, func(e Event) error {
		if e.Kind == kind {
			found = e
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) {
		t.Fatalf("follow events of %s: %v", id, err)
	}
	return found
}

// The sweeper times a delegation out when the clock passes its deadline,
// keeping the last progress text, and leaves the others alone.
func TestDeadlineSweeper(t *testing.T) {
	d := startDaemon(t)
	short := d.register(t, "ses_a", 60_000)
	long := d.register(t, "ses_b", 3_600_000)
	var rec fsm.Delegation
	d.call(t, "progress", ProgressRequest{ID: short.ID, Message: "half way"}, &rec)

	d.clock.Advance(61 * time.Second)
	d.awaitEvent(t, 1, short.ID, "timed_out")
	d.awaitEvent(t, 1, short.ID, "persisted")
	d.call(t, "show", IDRequest{ID: short.ID}, &rec)
	if rec.State != fsm.Timeout || rec.ResultText() != "half way\n\n[TIMEOUT REACHED]" || rec.Error != "Delegation timed out after 60s" {
		t.Fatalf("timed out: %s %q %q", rec.State, rec.ResultText(), rec.Error)
	}
	if rec.PersistedAt.IsZero() {
		t.Fatal("timed out but not persisted")
	}
	d.call(t, "show", IDRequest{ID: long.ID}, &rec)
	if rec.State != fsm.Registered {
		t.Fatalf("the other delegation: %s", rec.State)
	}
	var active Delegations
	d.call(t, "active", ActiveRequest{}, &active)
	if len(active.Delegations) != 1 || active.Delegations[0].ID != long.ID {
		t.Fatalf("active: %+v", active.Delegations)
	}
}

// Deadlines that passed while no daemon ran are enforced at start-up.
func TestOverdueAtStartup(t *testing.T) {
	dir := t.TempDir()
	clock := clocktest.New(t0)
	s, err := projection.Open(dir, projection.Options{Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	rec, err := s.Register(context.Background(), projection.Registration{
		ProjectID: "proj", RootSessionID: "ses_root", ParentSessionID: "ses_root", Agent: "a", Timeout: time.Minute,
	})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()

	clock.Advance(2 * time.Minute) // the daemon was down meanwhile
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	ready := make(chan struct{})
	go func() { done <- Serve(ctx, Config{DataDir: dir, Clock: clock, Ready: func(Status) { close(ready) }}) }()
	<-ready
	c, err := Dial(ctx, DefaultSocket(dir))
	if err != nil {
		t.Fatal(err)
	}
	d := &daemon{dir: dir, clock: clock, client: c}
	d.awaitEvent(t, 1, rec.ID, "timed_out")
	c.Close()
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// An artifact that cannot be written leaves the delegation pending, with
// no notification due; the writer retries on its backoff and the
// notification becomes due once the write succeeds.
func TestArtifactRetry(t *testing.T) {
	d := startDaemon(t)
	rec := d.register(t, "ses_root", 0)
	// A file where the project directory must go makes the write fail.
	blocker := filepath.Join(d.dir, "proj")
	if err := os.WriteFile(blocker, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	d.call(t, "complete", CompleteRequest{ID: rec.ID, Result: "done"}, &rec)
	if rec.State != fsm.Complete || !rec.PersistedAt.IsZero() {
		t.Fatalf("complete: %s persisted %v", rec.State, rec.PersistedAt)
	}
	var ns Notifications
	d.call(t, "notifications", NotificationsRequest{}, &ns)
	if len(ns.Notifications) != 0 {
		t.Fatalf("a notification is due before the artifact: %+v", ns.Notifications)
	}
	// The writer's attempt after the command's event fails; its retry
	// waits on the clock. Wait for that timer while the write still
	// fails (the writer may be slow to try; removing the blocker first
	// would let it succeed at once, and set no timer), and before moving
	// the clock (which would leave the retry a second after the new time).
	ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
	defer cancel()
	if err := d.clock.AwaitTimer(ctx, t0.Add(retryFirst)); err != nil {
		t.Fatalf("the artifact writer set no retry timer: %v", err)
	}
	if err := os.Remove(blocker); err != nil {
		t.Fatal(err)
	}
	d.clock.Advance(retryMax)
	d.awaitEvent(t, 1, rec.ID, "persisted")
	d.call(t, "notifications", NotificationsRequest{}, &ns)
	if len(ns.Notifications) != 1 || ns.Notifications[0].ID != "terminal:"+rec.ID {
		t.Fatalf("notifications: %+v", ns.Notifications)
	}
}

// sseEvent is one server-sent event.
type sseEvent struct{ id, event, data string }

func readSSE(t *testing.T, r *bufio.Reader) sseEvent {
	t.Helper()
	var e sseEvent
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("read stream: %v", err)
		}
		line = strings.TrimSuffix(line, "\n")
		switch {
		case line == "":
			if e.event != "" {
				return e
			}
		case strings.HasPrefix(line, "id: "):
			e.id = line[4:]
		case strings.HasPrefix(line, "event: "):
			e.event = line[7:]
		case strings.HasPrefix(line, "data: "):
			e.data = line[6:]
		}
	}
}

// openStream opens GET /v1/stream with a raw HTTP client on the socket.
func (d *daemon) openStream(t *testing.T, query, lastEventID string) (*bufio.Reader, func()) {
	t.Helper()
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", DefaultSocket(d.dir))
	}}}
	req, _ := http.NewRequest(http.MethodGet, "http://d/v1/stream?"+query, nil)
	if lastEventID != "" {
		req.Header.Set("Last-Event-ID", lastEventID)
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("stream: %s %s", resp.Status, b)
	}
	return bufio.NewReader(resp.Body), func() { resp.Body.Close(); hc.CloseIdleConnections() }
}

func TestStream(t *testing.T) {
	d := startDaemon(t)
	r, closeStream := d.openStream(t, "from=1&parentSessionID=ses_p", "")
	rec := d.register(t, "ses_p", 0)
	d.call(t, "complete", CompleteRequest{ID: rec.ID, Result: "done"}, &rec)

	var kinds []string
	var seqs []string
	var note projection.Notification
	for note.ID == "" {
		e := readSSE(t, r)
		switch e.event {
		case "event":
			var ev Event
			if err := json.Unmarshal([]byte(e.data), &ev); err != nil {
				t.Fatal(err)
			}
			if e.id != fmt.Sprint(ev.Seq) {
				t.Fatalf("event id %s for seq %d", e.id, ev.Seq)
			}
			kinds = append(kinds, ev.Kind)
			seqs = append(seqs, e.id)
		case "notification":
			if err := json.Unmarshal([]byte(e.data), &note); err != nil {
				t.Fatal(err)
			}
		default:
			t.Fatalf("unexpected %+v", e)
		}
	}
	if got := strings.Join(kinds, ","); got != "registered,completed,persisted" {
		t.Fatalf("events before the notification: %s", got)
	}
	if note.ID != "terminal:"+rec.ID || !strings.Contains(note.Text, "<task-id>"+rec.ID+"</task-id>") {
		t.Fatalf("notification %+v", note)
	}

	// A failed delivery keeps it due: it is sent again, with its count.
	var ack projection.AckResult
	d.call(t, "ack", AckRequest{ID: note.ID, Failed: "parent busy"}, &ack)
	for {
		e := readSSE(t, r)
		if e.event == "notification" {
			if err := json.Unmarshal([]byte(e.data), &note); err != nil {
				t.Fatal(err)
			}
			break
		}
	}
	if note.Failures != 1 || note.LastError != "parent busy" {
		t.Fatalf("redelivered notification: %+v", note)
	}
	d.call(t, "ack", AckRequest{ID: note.ID}, &ack)
	// After the ack only the notified event follows; the all-complete of
	// the cycle is due after its quiet period on the (manual) clock.
	if e := readSSE(t, r); e.event != "event" || !strings.Contains(e.data, `"kind":"notified"`) {
		t.Fatalf("after ack: %+v", e)
	}
	d.clock.Advance(projection.AllCompleteQuiet)
	e := readSSE(t, r)
	if e.event != "notification" || !strings.Contains(e.data, `"id":"all-complete:ses_p:1"`) {
		t.Fatalf("after the quiet period: %+v", e)
	}
	closeStream()

	// A reconnecting EventSource resumes after its Last-Event-ID, and
	// gets the notifications still due.
	r, closeStream = d.openStream(t, "", seqs[1])
	defer closeStream()
	if e := readSSE(t, r); e.event != "event" || e.id != fmt.Sprint(mustUint(t, seqs[1])+1) {
		t.Fatalf("resumed at %+v, want the event after %s", e, seqs[1])
	}
}

func mustUint(t *testing.T, s string) uint64 {
	var n uint64
	if _, err := fmt.Sscan(s, &n); err != nil {
		t.Fatal(err)
	}
	return n
}

// Stopping the daemon ends open streams and waits instead of waiting for
// them, and returns nil.
func TestStopEndsStreams(t *testing.T) {
	d := startDaemon(t)
	r, closeStream := d.openStream(t, "", "")
	defer closeStream()
	if err := d.stop(); err != nil {
		t.Fatalf("serve: %v", err)
	}
	if _, err := r.ReadString('\n'); err == nil {
		t.Fatal("the stream is still open after the daemon stopped")
	}
	if _, err := os.Lstat(DefaultSocket(d.dir)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("socket left behind: %v", err)
	}
	if _, err := Dial(context.Background(), DefaultSocket(d.dir)); !errors.Is(err, ErrNoDaemon) {
		t.Fatalf("dial after stop: %v", err)
	}
}

// Requests are decoded strictly, and a refused one changes nothing.
func TestDecodeErrors(t *testing.T) {
	s, err := projection.Open(t.TempDir(), projection.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	svc := NewService(s)
	for _, c := range []struct {
		verb, body, code, msg string
	}{
		{"register", "", "invalid", "empty request body; send a JSON object with the fields rootSessionID, parentSessionID, agent"},
		{"register", "{", "invalid", "malformed JSON"},
		{"register", `{"rootSessionID": 5}`, "invalid", `field "rootSessionID": want a JSON string, got number`},
		{"register", `{"rootSesionID": "x"}`, "invalid", `unknown field "rootSesionID"; the fields are rootSessionID,`},
		{"show", `{"id": "a-b-c"} {}`, "invalid", "data after the JSON object"},
		{"show", `{"id": "a-b-c"}}`, "invalid", "data after the JSON object"},
		{"show", `{"id": "a-b-c"}]`, "invalid", "data after the JSON object"},
		{"show", "{\"id\": \"a-b-\xff\"}", "invalid", "not valid UTF-8"},
		{"show", `{"id": "../../etc"}`, "invalid", `invalid delegation id "../../etc"`},
		{"show", `{"id": "quiet-blue-fox"}`, "not_found", `delegation "quiet-blue-fox" not found`},
		{"start", `{"id": "quiet-blue-fox", "sessionID": "x"}`, "not_found", `not found`},
		{"read", `{"rootSessionID": "../r", "id": "quiet-blue-fox"}`, "invalid", "root session id"},
		{"read", `{"rootSessionID": "r", "id": "quiet-blue-fox", "waitMs": -1}`, "invalid", "waitMs -1 is outside"},
		{"list", `{"rootSessionID": "r", "order": "size"}`, "invalid", `order is id or time, not "size"`},
		{"register", `{"rootSessionID": "r", "parentSessionID": "p", "agent": "a"}`, "invalid", "give projectId, or projectDir"},
		{"register", `{"rootSessionID": "r", "parentSessionID": "p", "agent": "a", "projectDir": "rel/dir"}`, "invalid", "is not absolute"},
		{"register", `{"rootSessionID": "r", "parentSessionID": "p", "agent": "a", "projectId": "p", "timeoutMs": -5}`, "invalid", "timeoutMs -5 is negative"},
		{"register", `{"rootSessionID": "r", "parentSessionID": "p", "agent": "a\u0000b", "projectId": "p"}`, "invalid", "agent"},
		{"ack", `{"id": "terminal"}`, "invalid", "want terminal:<delegation id>"},
		{"register", `{"rootSessionID": "r", "parentSessionID": "p", "agent": "a", "projectId": "p", "timeoutMs": 1152921504606846976}`, "invalid", "want between 1s and 7 days"},
		{"read", `{"rootSessionID": "r", "id": "quiet-blue-fox", "waitMs": 1152921504606846976}`, "invalid", "is outside 0..86400000"},
		{"register", `{"rootSessionID": "r", "parentSessionID": "p", "agent": "a", "projectDir": "/nonexistent/dir"}`, "invalid", "projectDir"},
		{"import", `{"dir": "/nonexistent/dir"}`, "invalid", "is not a directory"},
		{"start", `{"id": "` + strings.Repeat("x", small) + `"}`, "too_large", "limited to 65536 bytes"},
		{"nosuch", `{}`, "no_endpoint", "the verbs are ack, active, backup, cancel"},
		// encoding/json would match these case-insensitively, keep the last
		// of two, or store U+FFFD: each would change what was sent.
		{"show", `{"ID": "quiet-blue-fox"}`, "invalid", `unknown field "ID"; field names are case-sensitive: did you mean "id"?`},
		{"register", `{"rootsessionid": "r"}`, "invalid", `did you mean "rootSessionID"?`},
		{"show", `{"id": "quiet-blue-fox", "id": "other-red-cat"}`, "invalid", `field "id" appears twice`},
		{"progress", `{"id": "quiet-blue-fox", "message": "a\ud800b"}`, "invalid", `\ud800 at byte 38 is a lone high surrogate`},
		{"progress", `{"id": "quiet-blue-fox", "message": "\udc00"}`, "invalid", `\udc00 at byte 37 is a lone low surrogate`},
		{"progress", `{"id": "quiet-blue-fox", "message": "\ud800\u0041"}`, "invalid", "lone high surrogate"},
		{"progress", `{"id": "quiet-blue-fox", "message": "end\ud800"}`, "invalid", "lone high surrogate"},
	} {
		t.Run(c.verb+"/"+c.code, func(t *testing.T) {
			_, err := svc.call(context.Background(), c.verb, strings.NewReader(c.body))
			if err == nil || Code(err) != c.code || !strings.Contains(err.Error(), c.msg) {
				t.Fatalf("error %v (code %s); want code %s and %q", err, Code(err), c.code, c.msg)
			}
		})
	}
	if n := s.Log().Last(); n != 0 {
		t.Fatalf("refused requests appended %d records", n)
	}
}

// What encoding/json accepts and the checks must not refuse: a surrogate
// pair, an escaped backslash before "ud800" (no escape at all), and
// nested objects whose keys are not fields. Stored text equals what was
// sent.
func TestDecodeKeepsText(t *testing.T) {
	s, err := projection.Open(t.TempDir(), projection.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	svc := NewService(s)
	out, err := svc.call(context.Background(), "register", strings.NewReader(
		`{"rootSessionID":"r","parentSessionID":"p","agent":"a","projectId":"p","prompt":"\ud83d\ude00 \\ud800 \u00e9"}`))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := out.(fsm.Delegation).Prompt, "\U0001F600 \\ud800 \u00e9"; got != want {
		t.Fatalf("prompt %q, want %q", got, want)
	}
	if _, err := svc.call(context.Background(), "show", strings.NewReader(`{"id": {"ID": 1, "id": 2}}`)); Code(err) != "invalid" || !strings.Contains(err.Error(), `field "id": want a JSON string`) {
		t.Fatalf("nested object: %v", err)
	}
}

// A Last-Event-ID of the largest sequence number is refused: last+1 would
// wrap to 0 and replay the log from record 1.
func TestStreamLastEventIDOverflow(t *testing.T) {
	d := startDaemon(t)
	d.register(t, "ses_root", 0)
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", DefaultSocket(d.dir))
	}}}
	defer hc.CloseIdleConnections()
	req, _ := http.NewRequest(http.MethodGet, "http://d/v1/stream", nil)
	req.Header.Set("Last-Event-ID", "18446744073709551615")
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(b), `"code":"invalid"`) || !strings.Contains(string(b), "no event can follow it") {
		t.Fatalf("stream after the largest id: %s %s", resp.Status, b)
	}
}

// Errors keep their code and message across the socket, and unwrap to the
// sentinel of their code.
func TestErrorAcrossSocket(t *testing.T) {
	d := startDaemon(t)
	rec := d.register(t, "ses_root", 0)
	var out fsm.Delegation
	d.call(t, "cancel", CancelRequest{ID: rec.ID}, &out)
	err := d.client.Call(context.Background(), "complete", CompleteRequest{ID: rec.ID, Result: "late"}, &out)
	var ae *Error
	if !errors.As(err, &ae) || ae.Code != "terminal" || !errors.Is(err, fsm.ErrTerminal) {
		t.Fatalf("late complete: %#v", err)
	}
	if !strings.Contains(err.Error(), "already cancelled") {
		t.Fatalf("message %q", err.Error())
	}
}

// A caller whose own context ends gets the code of its end, the same in
// process and across the socket, never internal (a bug's): a blocking read
// of an active delegation, with a context already cancelled or past its
// deadline, and across the socket one cancelled while the daemon waits.
func TestCallerContextCodes(t *testing.T) {
	d := startDaemon(t)
	rec := d.register(t, "ses_root", 0)
	s, err := projection.Open(t.TempDir(), projection.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	local := Local{Service: NewService(s)}
	var lrec fsm.Delegation
	if err := local.Call(context.Background(), "register", RegisterRequest{RootSessionID: "ses_root", ParentSessionID: "ses_root",
		Agent: "explore", ProjectID: "proj", Prompt: "look around"}, &lrec); err != nil {
		t.Fatal(err)
	}
	read := func(call func(context.Context, string, any, any) error, ctx context.Context, id string) error {
		var rr projection.ReadResult
		return call(ctx, "read", ReadRequest{RootSessionID: "ses_root", ID: id, WaitMs: hangGuard.Milliseconds()}, &rr)
	}
	check := func(name string, err error, code string, is error) {
		t.Helper()
		if got := Code(err); got != code || !errors.Is(err, is) {
			t.Errorf("%s: code %q (%v), want %q", name, got, err, code)
		}
	}
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	past, cancelPast := context.WithDeadline(context.Background(), time.Unix(1, 0))
	defer cancelPast()
	check("socket, cancelled", read(d.client.Call, cancelled, rec.ID), "canceled", context.Canceled)
	check("local, cancelled", read(local.Call, cancelled, lrec.ID), "canceled", context.Canceled)
	check("socket, past its deadline", read(d.client.Call, past, rec.ID), "deadline_exceeded", context.DeadlineExceeded)
	check("local, past its deadline", read(local.Call, past, lrec.ID), "deadline_exceeded", context.DeadlineExceeded)
	// A project id the caller stopped deriving (git's root commit) is not
	// the directory's fault.
	repo := t.TempDir()
	if err := os.Mkdir(filepath.Join(repo, ".git"), 0o755); err != nil {
		t.Fatal(err)
	}
	err = local.Call(cancelled, "register", RegisterRequest{RootSessionID: "ses_root", ParentSessionID: "ses_root",
		Agent: "explore", ProjectDir: repo, Prompt: "look around"}, &lrec)
	check("local register, cancelled", err, "canceled", context.Canceled)

	// Cancelled while the daemon waits on its clock for the delegation.
	ctx, cancelWait := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- read(d.client.Call, ctx, rec.ID) }()
	guard, cancelGuard := context.WithTimeout(context.Background(), hangGuard)
	defer cancelGuard()
	if err := d.clock.AwaitTimer(guard, t0.Add(hangGuard)); err != nil {
		t.Fatal(err)
	}
	cancelWait()
	check("socket, cancelled while waiting", <-done, "canceled", context.Canceled)

	// The codes cross the socket as the daemon's answers, and unwrap to
	// the context's errors on the client's side.
	for code, is := range map[string]error{"deadline_exceeded": context.DeadlineExceeded, "canceled": context.Canceled} {
		if ae := (&Error{Code: code, Message: "x"}); !errors.Is(ae, is) || statusOf(code) < 400 {
			t.Errorf("%#v unwraps to %v, status %d", ae, ae.Unwrap(), statusOf(code))
		}
	}
}

// The client's own limits are the daemon's fault, not the caller's: a
// daemon that accepts and never answers is unavailable (ErrNotAnswering).
// A listing of events the caller ends midway is its context's error, not
// a short list without one.
func TestClientLimits(t *testing.T) {
	socket := filepath.Join(t.TempDir(), "s")
	ln, err := net.Listen("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	// One event line, then nothing until the client hangs up; status
	// requests are never answered.
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v1/events" {
			w.Write([]byte(`{"seq":1,"kind":"registered","delegation":"a"}` + "\n"))
			w.(http.Flusher).Flush()
		}
		<-r.Context().Done()
	})}
	go srv.Serve(ln)
	defer srv.Close()
	c, err := DialWith(context.Background(), socket, ClientOptions{ConnectTimeout: time.Second, ResponseTimeout: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Status(context.Background()); Code(err) != "unavailable" || !errors.Is(err, ErrNotAnswering) {
		t.Errorf("status of a daemon that does not answer: code %q (%v), want unavailable", Code(err), err)
	}
	// The connect's own limit, at the dial and at a later connection (a
	// negative limit has passed before the connect starts); the caller's
	// own deadline stays the caller's.
	if _, err := DialWith(context.Background(), socket, ClientOptions{ConnectTimeout: -1, ResponseTimeout: hangGuard}); Code(err) != "unavailable" || !errors.Is(err, ErrNotAnswering) {
		t.Errorf("dial past its connect limit: code %q (%v), want unavailable", Code(err), err)
	}
	past, cancelPast := context.WithDeadline(context.Background(), time.Unix(1, 0))
	defer cancelPast()
	if _, err := DialWith(past, socket, ClientOptions{ConnectTimeout: -1, ResponseTimeout: hangGuard}); Code(err) != "deadline_exceeded" {
		t.Errorf("dial past the caller's deadline: code %q (%v), want deadline_exceeded", Code(err), err)
	}
	hasty, err := DialWith(context.Background(), socket, ClientOptions{ConnectTimeout: time.Second, ResponseTimeout: hangGuard})
	if err != nil {
		t.Fatal(err)
	}
	defer hasty.Close()
	hasty.opts.ConnectTimeout = -1
	var na *NotAnsweringError
	if _, err := hasty.Status(context.Background()); Code(err) != "unavailable" || !errors.As(err, &na) {
		t.Errorf("a call past its connect limit: code %q (%v), want unavailable, naming the daemon", Code(err), err)
	}
	// A client that waits for the first line as long as it takes.
	patient, err := DialWith(context.Background(), socket, ClientOptions{ConnectTimeout: time.Second, ResponseTimeout: hangGuard})
	if err != nil {
		t.Fatal(err)
	}
	defer patient.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var got []Event
	err = patient.Events(ctx, EventsRequest{}, func(e Event) error {
		got = append(got, e)
		cancel()
		return nil
	})
	if len(got) != 1 || Code(err) != "canceled" || !errors.Is(err, context.Canceled) {
		t.Errorf("events cut short by the caller: %d events, code %q (%v), want 1 and canceled", len(got), Code(err), err)
	}
}

// Waits are measured on the daemon's clock: moving it past a read's or a
// notifications call's wait limit ends the wait at once, and standing
// still never ends it.
func TestWaitsFollowTheClock(t *testing.T) {
	d := startDaemon(t)
	rec := d.register(t, "ses_root", 3_600_000)
	// A wait on the wall clock (the bug this catches) fails, not hangs.
	ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
	defer cancel()
	read := make(chan error, 1)
	go func() {
		var res projection.ReadResult
		err := d.client.Call(ctx, "read", ReadRequest{RootSessionID: "ses_root", ID: rec.ID, WaitMs: 600_000}, &res)
		if err == nil && (res.Artifact || !strings.Contains(res.Text, "Status: registered")) {
			err = fmt.Errorf("read of an active delegation: %+v", res)
		}
		read <- err
	}()
	if err := d.clock.AwaitTimer(ctx, t0.Add(600*time.Second)); err != nil {
		t.Fatal(err)
	}
	d.clock.Advance(601 * time.Second)
	if err := <-read; err != nil {
		t.Fatal(err)
	}

	notes := make(chan error, 1)
	go func() {
		var ns Notifications
		err := d.client.Call(ctx, "notifications", NotificationsRequest{WaitMs: 1000}, &ns)
		if err == nil && len(ns.Notifications) != 0 {
			err = fmt.Errorf("notifications: %+v", ns)
		}
		notes <- err
	}()
	if err := d.clock.AwaitTimer(ctx, t0.Add(602*time.Second)); err != nil {
		t.Fatal(err)
	}
	d.clock.Advance(time.Second)
	if err := <-notes; err != nil {
		t.Fatal(err)
	}
}

// A socket path too long for the platform cannot have a daemon behind it:
// the CLI then works on the log itself instead of failing.
func TestDialLongPath(t *testing.T) {
	long := "/tmp/" + strings.Repeat("d", 200) + "/" + SocketName
	if _, err := Dial(context.Background(), long); !errors.Is(err, ErrNoDaemon) {
		t.Fatalf("dial %d bytes: %v", len(long), err)
	}
}

// A request that panics (a bug) gets 500 internal with a message saying
// the daemon is still running, through the client as the CLI shows it,
// and the daemon goes on serving.
func TestPanicIsAnswered(t *testing.T) {
	endpoints["panic"] = endpoint{limit: small, serve: func(context.Context, *Service, []byte) (any, error) {
		panic("boom")
	}}
	t.Cleanup(func() { delete(endpoints, "panic") }) // after the daemon stops
	d := startDaemon(t)
	var out struct{}
	err := d.client.Call(context.Background(), "panic", struct{}{}, &out)
	var ae *Error
	if !errors.As(err, &ae) || ae.Code != "internal" || !strings.Contains(ae.Message, "hit a bug serving POST /v1/panic (panic: boom) and is still running") {
		t.Fatalf("panicking request: %v", err)
	}
	rec := d.register(t, "ses_root", 0)
	d.call(t, "show", IDRequest{ID: rec.ID}, &rec)
}

// TestPageLifecycle: POST /v1/page hands its address to Config.Page;
// the status forgets a page that stopped, and a new one can start; the
// daemon closes its store only after the page stopped; a stopping daemon
// starts none.
func TestPageLifecycle(t *testing.T) {
	var (
		mu      sync.Mutex
		addrs   []string
		kill    = make(chan struct{})
		readErr = make(chan error, 4)
	)
	var id string
	d := startDaemonWith(t, func(cfg *Config) {
		cfg.Page = func(ctx context.Context, svc *Service, addr string) (string, <-chan struct{}, error) {
			mu.Lock()
			addrs = append(addrs, addr)
			n := len(addrs)
			mu.Unlock()
			done := make(chan struct{})
			dies := kill // the first page dies when told
			if n > 1 {
				dies = nil
			}
			go func() {
				defer close(done)
				select {
				case <-dies:
					return
				case <-ctx.Done():
				}
				time.Sleep(50 * time.Millisecond) // a request still being served
				_, err := svc.Show(context.Background(), IDRequest{ID: id})
				readErr <- err
			}()
			return fmt.Sprintf("http://page/%d", n), done, nil
		}
	})
	id = d.register(t, "ses_p", 0).ID
	var st Status
	d.call(t, "page", PageRequest{Addr: "127.0.0.1:7777"}, &st)
	if st.UI != "http://page/1" || addrs[0] != "127.0.0.1:7777" {
		t.Fatalf("page: ui %q, Page got %q", st.UI, addrs)
	}
	d.call(t, "page", PageRequest{}, &st)
	if st.UI != "http://page/1" || len(addrs) != 1 {
		t.Fatalf("a second page: ui %q, Page called %d times", st.UI, len(addrs))
	}
	close(kill) // the page dies
	for deadline := time.Now().Add(hangGuard); ; {
		if st, err := d.client.Status(context.Background()); err != nil || st.UI == "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the status still names a page that stopped")
		}
		time.Sleep(5 * time.Millisecond)
	}
	d.call(t, "page", PageRequest{}, &st)
	if st.UI != "http://page/2" {
		t.Fatalf("after the page died: ui %q", st.UI)
	}
	if err := d.stop(); err != nil {
		t.Fatal(err)
	}
	if err := <-readErr; err != nil {
		t.Errorf("the page read the store while the daemon stopped: %v (closed under it)", err)
	}

	// A stopping daemon starts no page.
	stopped, cancel := context.WithCancel(context.Background())
	cancel()
	called := false
	h := &handler{stopping: stopped, page: func(context.Context, *Service, string) (string, <-chan struct{}, error) {
		called = true
		return "", nil, nil
	}}
	if err := h.startPage(""); Code(err) != "unavailable" || called {
		t.Errorf("page while stopping: %v (code %s), Page called: %v", err, Code(err), called)
	}
}
