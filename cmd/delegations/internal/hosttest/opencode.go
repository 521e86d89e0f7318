package hosttest

import (
	"github.com/delegations/delegations/cmd/delegations/opencode"

	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Bounds of the OpenCode launcher. They bound waits that otherwise hang a
// test run; none of them is a synchronisation delay.
const (
	// DefaultStartTimeout bounds start-up: listening and the first event.
	DefaultStartTimeout = 60 * time.Second
	// DefaultRequestTimeout bounds one HTTP request to OpenCode
	// (POST /session/:id/message waits for a whole turn).
	DefaultRequestTimeout = 2 * time.Minute
	// DefaultStopTimeout bounds a graceful stop before SIGKILL.
	DefaultStopTimeout = 20 * time.Second
)

// FakeProviderID is the provider StartOpenCode configures for the fake
// model: OpenCode's model is FakeProviderID+"/"+FakeModelID.
const FakeProviderID = "fake"

// OpenCodeOptions configures StartOpenCode. Zero fields get defaults.
type OpenCodeOptions struct {
	Project string  // the project directory (and the server's cwd); NewProject by default
	Env     *Env    // scratch home; Scratch by default
	Model   *OpenAI // the fake model; NewOpenAI(tb, nil) by default
	// Config is merged over the generated opencode.json, top-level key by
	// key (e.g. "agent", "plugin", "permission").
	Config map[string]any
	// Plugins are files copied into <project>/.opencode/plugins/.
	Plugins []string
	// LogLevel is OpenCode's --log-level: DEBUG, INFO (default), WARN, ERROR.
	LogLevel string
	// NoSeed leaves the config directories without the node_modules and
	// package-lock.json that SeedPluginDeps writes, so OpenCode tries (and,
	// offline, fails) to npm-install @opencode-ai/plugin into them.
	NoSeed bool
	// StartTimeout bounds start-up; DefaultStartTimeout when zero.
	StartTimeout time.Duration
	// ExtraEnv is added to the server's environment ("KEY=value"; it wins
	// over the defaults), e.g. to point a plugin at a delegations socket.
	ExtraEnv []string
}

// OpenCode is a running `opencode serve` on 127.0.0.1, its logs captured
// and printed when the test fails, killed at the end of the test.
type OpenCode struct {
	URL     string // http://127.0.0.1:PORT
	Port    int
	Project string
	Env     *Env
	Model   *OpenAI
	Bin     string

	tb           testing.TB
	logLevel     string
	startTimeout time.Duration
	extraEnv     []string
	client       *http.Client

	mu      sync.Mutex
	cmd     *exec.Cmd
	exited  chan struct{} // closed when the current process has exited
	out     bytes.Buffer  // stdout and stderr of every process, in order
	stopEvs context.CancelFunc

	evMu      sync.Mutex
	events    []Event
	evChanged chan struct{}
	marks     map[string]int // session -> len(events) when last prompted
}

// Event is one event of OpenCode's GET /event stream.
type Event struct {
	Seq        int             `json:"-"` // 1-based position in the OpenCode's log
	Type       string          `json:"type"`
	Properties json.RawMessage `json:"properties"`
}

// SessionID returns the session an event is about, looking at
// properties.sessionID, .info.sessionID, .part.sessionID and .info.id (for
// session.* events), or "".
func (e Event) SessionID() string {
	var p struct {
		SessionID string `json:"sessionID"`
		Info      struct {
			ID        string `json:"id"`
			SessionID string `json:"sessionID"`
		} `json:"info"`
		Part struct {
			SessionID string `json:"sessionID"`
		} `json:"part"`
	}
	json.Unmarshal(e.Properties, &p)
	switch {
	case p.SessionID != "":
		return p.SessionID
	case p.Info.SessionID != "":
		return p.Info.SessionID
	case p.Part.SessionID != "":
		return p.Part.SessionID
	case strings.HasPrefix(e.Type, "session.") && strings.HasPrefix(p.Info.ID, "ses"):
		return p.Info.ID
	}
	return ""
}

// IsIdle reports whether the event says the session's turn has ended:
// session.idle, or session.status with status.type "idle".
func (e Event) IsIdle(session string) bool {
	if e.SessionID() != session {
		return false
	}
	switch e.Type {
	case "session.idle":
		return true
	case "session.status":
		var p struct {
			Status struct {
				Type string `json:"type"`
			} `json:"status"`
		}
		json.Unmarshal(e.Properties, &p)
		return p.Status.Type == "idle"
	}
	return false
}

// SeedPluginDeps makes OpenCode skip its start-up npm install in dir, a
// configuration directory, as `delegations install opencode` does (see
// opencode.SeedDeps).
func SeedPluginDeps(dir string) error {
	_, err := opencode.SeedDeps(dir)
	return err
}

// StartOpenCode writes <project>/opencode.json (the fake model as model
// and small_model, then opts.Config), copies opts.Plugins, and starts
// `opencode serve` on a free port of 127.0.0.1. It returns once the server
// listens and its event stream is connected.
func StartOpenCode(tb testing.TB, opts OpenCodeOptions) *OpenCode {
	tb.Helper()
	bin := Host(tb, "opencode")
	if opts.Project == "" {
		opts.Project = NewProject(tb)
	}
	if opts.Env == nil {
		opts.Env = Scratch(tb)
	}
	if opts.Model == nil {
		opts.Model = NewOpenAI(tb, nil)
	}
	if opts.LogLevel == "" {
		opts.LogLevel = "INFO"
	}
	if opts.StartTimeout == 0 {
		opts.StartTimeout = DefaultStartTimeout
	}
	cfg := map[string]any{
		"$schema": "https://opencode.ai/config.json",
		"provider": map[string]any{
			FakeProviderID: map[string]any{
				"npm":     "@ai-sdk/openai-compatible",
				"name":    "Fake",
				"options": map[string]any{"baseURL": opts.Model.URL + "/v1", "apiKey": "hosttest"},
				"models":  map[string]any{FakeModelID: map[string]any{"name": "Fake model", "tool_call": true}},
			},
		},
		"model":       FakeProviderID + "/" + FakeModelID,
		"small_model": FakeProviderID + "/" + FakeModelID,
		"autoupdate":  false,
		"share":       "disabled",
	}
	maps.Copy(cfg, opts.Config)
	b, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		tb.Fatalf("hosttest: opencode.json: %v", err)
	}
	if err := os.WriteFile(filepath.Join(opts.Project, "opencode.json"), b, 0o644); err != nil {
		tb.Fatalf("hosttest: %v", err)
	}
	dotOpenCode := filepath.Join(opts.Project, ".opencode")
	if len(opts.Plugins) > 0 {
		dir := filepath.Join(dotOpenCode, "plugins")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			tb.Fatalf("hosttest: %v", err)
		}
		for _, p := range opts.Plugins {
			b, err := os.ReadFile(p)
			if err != nil {
				tb.Fatalf("hosttest: plugin: %v", err)
			}
			if err := os.WriteFile(filepath.Join(dir, filepath.Base(p)), b, 0o644); err != nil {
				tb.Fatalf("hosttest: %v", err)
			}
		}
	}
	if !opts.NoSeed {
		for _, dir := range []string{dotOpenCode, filepath.Join(opts.Env.ConfigHome, "opencode")} {
			if err := SeedPluginDeps(dir); err != nil {
				tb.Fatalf("hosttest: seed %s: %v", dir, err)
			}
		}
	}
	oc := &OpenCode{
		Project: opts.Project, Env: opts.Env, Model: opts.Model, Bin: bin,
		tb: tb, logLevel: opts.LogLevel, startTimeout: opts.StartTimeout, extraEnv: opts.ExtraEnv,
		client:    &http.Client{},
		evChanged: make(chan struct{}),
		marks:     map[string]int{},
	}
	tb.Cleanup(func() {
		oc.Kill()
		if tb.Failed() {
			oc.dumpLogs()
		}
	})
	oc.start(0)
	return oc
}

// Environ is the environment OpenCode runs with: the scratch directories,
// the switches that keep it off the network, then ExtraEnv.
func (oc *OpenCode) Environ() []string {
	return append(oc.Env.Environ(
		"OPENCODE_DISABLE_MODELS_FETCH=1",
		"OPENCODE_DISABLE_AUTOUPDATE=1",
		"OPENCODE_DISABLE_DEFAULT_PLUGINS=1",
		"OPENCODE_DISABLE_LSP_DOWNLOAD=1",
		"OPENCODE_DISABLE_SHARE=1",
		"OPENCODE_DISABLE_CLAUDE_CODE=1",
		"OPENCODE_DISABLE_EXTERNAL_SKILLS=1",
		"OPENCODE_DISABLE_EMBEDDED_WEB_UI=1",
		"OPENCODE_EXPERIMENTAL_DISABLE_FILEWATCHER=1",
	), oc.extraEnv...)
}

var listeningRE = regexp.MustCompile(`listening on (http://127\.0\.0\.1:(\d+))`)

// start runs a new server process on port (0: a free one).
func (oc *OpenCode) start(port int) {
	tb := oc.tb
	tb.Helper()
	if port == 0 {
		port = freePort(tb)
	}
	cmd := exec.Command(oc.Bin, "serve", "--hostname", "127.0.0.1", "--port", strconv.Itoa(port),
		"--print-logs", "--log-level", oc.logLevel)
	cmd.Dir = oc.Project
	cmd.Env = oc.Environ()
	cmd.SysProcAttr = ownGroup()
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		tb.Fatalf("hosttest: start opencode: %v", err)
	}
	exited := make(chan struct{})
	go func() {
		cmd.Wait()
		pw.Close()
		close(exited)
	}()
	listening := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 16<<20)
		for sc.Scan() {
			line := sc.Text()
			oc.mu.Lock()
			oc.out.WriteString(line + "\n")
			oc.mu.Unlock()
			if m := listeningRE.FindStringSubmatch(line); m != nil {
				select {
				case listening <- m[1]:
				default:
				}
			}
		}
		io.Copy(io.Discard, pr)
	}()
	oc.mu.Lock()
	oc.cmd, oc.exited = cmd, exited
	oc.mu.Unlock()
	timer := time.NewTimer(oc.startTimeout)
	defer timer.Stop()
	select {
	case url := <-listening:
		oc.URL, oc.Port = url, port
	case <-exited:
		tb.Fatalf("hosttest: opencode exited before listening: %v", cmd.ProcessState)
	case <-timer.C:
		tb.Fatalf("hosttest: opencode not listening after %v", oc.startTimeout)
	}
	oc.subscribe(timer.C)
}

// subscribe opens the event stream that feeds the OpenCode's event log and
// returns once its first event (server.connected) has arrived.
func (oc *OpenCode) subscribe(deadline <-chan time.Time) {
	tb := oc.tb
	ctx, cancel := context.WithCancel(context.Background())
	oc.mu.Lock()
	oc.stopEvs = cancel
	exited := oc.exited
	oc.mu.Unlock()
	connected := make(chan error, 1)
	go func() {
		first := true
		err := oc.stream(ctx, func(e Event) {
			oc.evMu.Lock()
			e.Seq = len(oc.events) + 1
			oc.events = append(oc.events, e)
			close(oc.evChanged)
			oc.evChanged = make(chan struct{})
			oc.evMu.Unlock()
			if first {
				first = false
				connected <- nil
			}
		})
		if first {
			connected <- fmt.Errorf("event stream ended before its first event: %v", err)
		}
	}()
	select {
	case err := <-connected:
		if err != nil {
			tb.Fatalf("hosttest: opencode: %v", err)
		}
	case <-exited:
		tb.Fatalf("hosttest: opencode exited during start-up")
	case <-deadline:
		tb.Fatalf("hosttest: opencode: no event after %v", oc.startTimeout)
	}
}

// stream reads GET /event until ctx ends or the stream does.
func (oc *OpenCode) stream(ctx context.Context, fn func(Event)) error {
	req, err := http.NewRequestWithContext(ctx, "GET", oc.URL+"/event", nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "text/event-stream")
	resp, err := oc.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET /event: %s", resp.Status)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 64<<20)
	var data strings.Builder
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "data:"):
			data.WriteString(strings.TrimPrefix(strings.TrimPrefix(line, "data:"), " "))
		case line == "" && data.Len() > 0:
			var e Event
			if err := json.Unmarshal([]byte(data.String()), &e); err == nil {
				fn(e)
			}
			data.Reset()
		}
	}
	return sc.Err()
}

func freePort(tb testing.TB) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("hosttest: free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Kill sends SIGKILL to the server (and its process group) and waits for
// it to exit. Killing a dead server does nothing.
func (oc *OpenCode) Kill() {
	oc.mu.Lock()
	cmd, exited, stop := oc.cmd, oc.exited, oc.stopEvs
	oc.mu.Unlock()
	if cmd == nil {
		return
	}
	if stop != nil {
		stop()
	}
	syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	<-exited
}

// Stop asks the server to exit (SIGTERM) and waits, up to
// DefaultStopTimeout, before killing it.
func (oc *OpenCode) Stop() {
	oc.tb.Helper()
	oc.mu.Lock()
	cmd, exited, stop := oc.cmd, oc.exited, oc.stopEvs
	oc.mu.Unlock()
	if cmd == nil {
		return
	}
	if stop != nil {
		stop()
	}
	cmd.Process.Signal(syscall.SIGTERM)
	t := time.NewTimer(DefaultStopTimeout)
	defer t.Stop()
	select {
	case <-exited:
	case <-t.C:
		oc.tb.Errorf("hosttest: opencode did not exit %v after SIGTERM; killing it", DefaultStopTimeout)
		oc.Kill()
	}
	// Whatever it started (LSP servers, shells) goes with it.
	syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
}

// Restart stops the server if it runs and starts it again with the same
// directories on the same port. The event log goes on.
func (oc *OpenCode) Restart() {
	oc.tb.Helper()
	oc.Stop()
	oc.start(oc.Port)
}

// Exited is closed when the current server process has exited.
func (oc *OpenCode) Exited() <-chan struct{} {
	oc.mu.Lock()
	defer oc.mu.Unlock()
	return oc.exited
}

// Output returns what the server processes printed so far (with
// --print-logs: their logs).
func (oc *OpenCode) Output() string {
	oc.mu.Lock()
	defer oc.mu.Unlock()
	return oc.out.String()
}

func (oc *OpenCode) dumpLogs() {
	oc.tb.Logf("opencode output (logs):\n%s", oc.Output())
	files, _ := filepath.Glob(filepath.Join(oc.Env.DataHome, "opencode", "log", "*.log"))
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err == nil {
			oc.tb.Logf("%s:\n%s", f, b)
		}
	}
}

// Do sends a JSON request (body nil: none) and decodes a 2xx JSON answer
// into out (nil: ignored). It returns the status; a transport error fails
// the test, so call it from the test's goroutine. A non-2xx answer's body
// is logged.
func (oc *OpenCode) Do(method, path string, body, out any) int {
	oc.tb.Helper()
	status, err := oc.do(method, path, body, out)
	if err != nil {
		oc.tb.Fatalf("hosttest: opencode %s %s: %v", method, path, err)
	}
	return status
}

func (oc *OpenCode) do(method, path string, body, out any) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), DefaultRequestTimeout)
	defer cancel()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, oc.URL+path, rd)
	if err != nil {
		return 0, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := oc.client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return resp.StatusCode, err
	}
	if resp.StatusCode/100 != 2 {
		oc.tb.Logf("hosttest: opencode %s %s: %s: %s", method, path, resp.Status, b)
		return resp.StatusCode, nil
	}
	if out != nil && len(bytes.TrimSpace(b)) > 0 {
		if err := json.Unmarshal(b, out); err != nil {
			return resp.StatusCode, fmt.Errorf("decode %s: %v", b, err)
		}
	}
	return resp.StatusCode, nil
}

// must fails the test unless status is 2xx.
func (oc *OpenCode) must(status int, what string) {
	oc.tb.Helper()
	if status/100 != 2 {
		oc.tb.Fatalf("hosttest: opencode %s: status %d", what, status)
	}
}

// Session is a session as OpenCode's API returns it.
type Session struct {
	ID        string          `json:"id"`
	ParentID  string          `json:"parentID"`
	ProjectID string          `json:"projectID"`
	Title     string          `json:"title"`
	Raw       json.RawMessage `json:"-"`
}

func (s *Session) UnmarshalJSON(b []byte) error {
	type plain Session
	if err := json.Unmarshal(b, (*plain)(s)); err != nil {
		return err
	}
	s.Raw = append(json.RawMessage(nil), b...)
	return nil
}

// CreateSession creates a session and returns its id. With a title
// OpenCode sends no title request for it; with "" it does, beside the
// first turn.
func (oc *OpenCode) CreateSession(title string) string {
	oc.tb.Helper()
	body := map[string]any{}
	if title != "" {
		body["title"] = title
	}
	var s Session
	oc.must(oc.Do("POST", "/session", body, &s), "create session")
	if s.ID == "" {
		oc.tb.Fatalf("hosttest: opencode create session: no id")
	}
	return s.ID
}

// Children returns the sessions whose parent is session.
func (oc *OpenCode) Children(session string) []Session {
	oc.tb.Helper()
	var out []Session
	oc.must(oc.Do("GET", "/session/"+session+"/children", nil, &out), "children")
	return out
}

// PromptOptions are the optional fields of a prompt.
type PromptOptions struct {
	Agent     string
	NoReply   bool            // append the message without starting a turn
	Synthetic bool            // mark the text part synthetic
	Tools     map[string]bool // enable or disable tools for this turn
}

func (oc *OpenCode) promptBody(text string, opts PromptOptions) map[string]any {
	part := map[string]any{"type": "text", "text": text}
	if opts.Synthetic {
		part["synthetic"] = true
	}
	body := map[string]any{"parts": []any{part}}
	if opts.Agent != "" {
		body["agent"] = opts.Agent
	}
	if opts.NoReply {
		body["noReply"] = true
	}
	if opts.Tools != nil {
		body["tools"] = opts.Tools
	}
	return body
}

// mark notes where the event log stands as a session is prompted, for AwaitIdle.
func (oc *OpenCode) mark(session string) {
	oc.evMu.Lock()
	oc.marks[session] = len(oc.events)
	oc.evMu.Unlock()
}

// PromptAsync sends a prompt without waiting for the turn
// (POST /session/:id/prompt_async).
func (oc *OpenCode) PromptAsync(session, text string, opts PromptOptions) {
	oc.tb.Helper()
	oc.mark(session)
	oc.must(oc.Do("POST", "/session/"+session+"/prompt_async", oc.promptBody(text, opts), nil), "prompt_async")
}

// Prompt sends a prompt and waits for the turn to end
// (POST /session/:id/message); it returns the assistant's message.
func (oc *OpenCode) Prompt(session, text string) Message {
	oc.tb.Helper()
	return oc.PromptWith(session, text, PromptOptions{})
}

// PromptWith is Prompt with options.
func (oc *OpenCode) PromptWith(session, text string, opts PromptOptions) Message {
	oc.tb.Helper()
	oc.mark(session)
	var m Message
	oc.must(oc.Do("POST", "/session/"+session+"/message", oc.promptBody(text, opts), &m), "prompt")
	return m
}

// Summarize compacts the session with the fake model
// (POST /session/:id/summarize; it returns when the summary is done).
func (oc *OpenCode) Summarize(session string) {
	oc.tb.Helper()
	oc.mark(session)
	oc.must(oc.Do("POST", "/session/"+session+"/summarize", map[string]any{"providerID": FakeProviderID, "modelID": FakeModelID}, nil), "summarize")
}

// Message is one message of a session: its info and its parts.
type Message struct {
	Info  MessageInfo `json:"info"`
	Parts []Part      `json:"parts"`
}

// MessageInfo is the info of a message (the fields tests look at; Raw has all).
type MessageInfo struct {
	ID        string `json:"id"`
	SessionID string `json:"sessionID"`
	Role      string `json:"role"`
	Agent     string `json:"agent"`
	Mode      string `json:"mode"`
	ParentID  string `json:"parentID"`
	Finish    string `json:"finish"`
	Summary   any    `json:"summary"`
	Time      struct {
		Created   int64 `json:"created"`
		Completed int64 `json:"completed"`
	} `json:"time"`
	Error json.RawMessage `json:"error"`
	Raw   json.RawMessage `json:"-"`
}

func (m *MessageInfo) UnmarshalJSON(b []byte) error {
	type plain MessageInfo
	if err := json.Unmarshal(b, (*plain)(m)); err != nil {
		return err
	}
	m.Raw = append(json.RawMessage(nil), b...)
	return nil
}

// Part is one part of a message.
type Part struct {
	ID        string `json:"id"`
	SessionID string `json:"sessionID"`
	MessageID string `json:"messageID"`
	Type      string `json:"type"` // text, tool, step-start, step-finish, ...
	Text      string `json:"text"`
	Synthetic bool   `json:"synthetic"`
	Tool      string `json:"tool"`
	CallID    string `json:"callID"`
	State     struct {
		Status string          `json:"status"`
		Input  json.RawMessage `json:"input"`
		Output string          `json:"output"`
		Error  string          `json:"error"`
	} `json:"state"`
	Raw json.RawMessage `json:"-"`
}

func (p *Part) UnmarshalJSON(b []byte) error {
	type plain Part
	if err := json.Unmarshal(b, (*plain)(p)); err != nil {
		return err
	}
	p.Raw = append(json.RawMessage(nil), b...)
	return nil
}

// Text returns the message's text parts, joined by newlines.
func (m Message) Text() string {
	var texts []string
	for _, p := range m.Parts {
		if p.Type == "text" {
			texts = append(texts, p.Text)
		}
	}
	return strings.Join(texts, "\n")
}

// Messages returns the session's messages, oldest first.
func (oc *OpenCode) Messages(session string) []Message {
	oc.tb.Helper()
	var out []Message
	oc.must(oc.Do("GET", "/session/"+session+"/message", nil, &out), "messages")
	return out
}

// ToolIDs returns the ids of the tools a session would get
// (GET /experimental/tool/ids): the reliable sign a plugin's tools loaded.
func (oc *OpenCode) ToolIDs() []string {
	oc.tb.Helper()
	var out []string
	oc.must(oc.Do("GET", "/experimental/tool/ids", nil, &out), "tool ids")
	return out
}

// Events subscribes anew to GET /event; the channel closes when ctx ends or
// the stream does.
func (oc *OpenCode) Events(ctx context.Context) <-chan Event {
	ch := make(chan Event, 64)
	go func() {
		defer close(ch)
		oc.stream(ctx, func(e Event) {
			select {
			case ch <- e:
			case <-ctx.Done():
			}
		})
	}()
	return ch
}

// Log returns the events received since start-up (across restarts).
func (oc *OpenCode) Log() []Event {
	oc.evMu.Lock()
	defer oc.evMu.Unlock()
	return append([]Event(nil), oc.events...)
}

// ErrExited is returned by waits that end because the server exited.
var ErrExited = errors.New("opencode exited")

// AwaitEvent waits for the first event after position since (an index into
// Log; 0 for all) that matches pred. It fails with ctx's error or
// ErrExited.
func (oc *OpenCode) AwaitEvent(ctx context.Context, since int, pred func(Event) bool) (Event, error) {
	for {
		oc.evMu.Lock()
		for _, e := range oc.events[min(since, len(oc.events)):] {
			if pred(e) {
				oc.evMu.Unlock()
				return e, nil
			}
		}
		since = len(oc.events)
		changed := oc.evChanged
		oc.evMu.Unlock()
		select {
		case <-changed:
		case <-oc.Exited():
			return Event{}, ErrExited
		case <-ctx.Done():
			return Event{}, ctx.Err()
		}
	}
}

// AwaitIdle waits until the session's turn ends: the first session.idle (or
// session.status idle) of that session after this harness last prompted it,
// or after start-up for a session it never prompted (a child session a
// plugin made).
func (oc *OpenCode) AwaitIdle(ctx context.Context, session string) error {
	oc.evMu.Lock()
	since := oc.marks[session]
	oc.evMu.Unlock()
	_, err := oc.AwaitEvent(ctx, since, func(e Event) bool { return e.IsIdle(session) })
	if err != nil {
		return fmt.Errorf("await idle %s: %w", session, err)
	}
	return nil
}
