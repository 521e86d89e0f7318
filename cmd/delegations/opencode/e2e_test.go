package opencode_test

// End to end with the real OpenCode (the pinned opencode-ai from npm),
// offline, against a scripted fake model: the plugin installed by
// `delegations install opencode --project`, driven over OpenCode's HTTP API.

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/delegations/delegations/cmd/delegations/api"
	"github.com/delegations/delegations/cmd/delegations/internal/hosttest"
	"github.com/delegations/delegations/cmd/delegations/opencode"
)

func TestMain(m *testing.M) {
	code := hosttest.RunOffline(m)
	hosttest.Cleanup()
	os.Exit(code)
}

// hangGuard bounds every wait of these tests: a broken host fails the test
// instead of hanging the run. It is not a delay.
const hangGuard = 3 * time.Minute

// Texts the fake model and the tests agree on.
const (
	askDelegate = "delegate: " // a user prompt "delegate: NAME" makes the parent delegate CHILD NAME
	childPrompt = "CHILD "     // the prompt of every delegation these tests start
	titleAsk    = "Give a title and a description"
	resumeText  = "OpenCode stopped while you were working on this task."
	allComplete = "<type>all-complete</type>"
)

// model is the scripted fake model: parents delegate and read, children
// answer (or hold their answer until the test releases it), the small
// model titles results.
type model struct {
	*hosttest.OpenAI
	mu    sync.Mutex
	holds map[string]chan struct{} // child name → released by the test
}

func newModel(t testing.TB) *model {
	m := &model{holds: map[string]chan struct{}{}}
	m.OpenAI = hosttest.NewOpenAI(t, m.reply)
	return m
}

// hold makes child name's answer wait for release.
func (m *model) hold(name string) (release func()) {
	ch := make(chan struct{})
	m.mu.Lock()
	m.holds[name] = ch
	m.mu.Unlock()
	return sync.OnceFunc(func() { close(ch) })
}

func (m *model) reply(r *hosttest.ChatRequest) hosttest.Reply {
	last := r.LastUser()
	switch {
	case r.IsCompaction():
		return hosttest.Say("SUMMARY of the conversation")
	case strings.HasPrefix(last, titleAsk):
		return hosttest.Say(`Here you go: {"title": "Cache race", "description": "The flaky test races on the cache."}`)
	case strings.HasPrefix(last, childPrompt):
		name := strings.TrimPrefix(last, childPrompt)
		m.mu.Lock()
		h := m.holds[name]
		m.mu.Unlock()
		return hosttest.Reply{Partial: "Looking at " + name + ".", Hold: h, Text: " Answer of " + name + "."}
	case strings.HasPrefix(last, resumeText):
		return hosttest.Say("Resumed and finished.")
	case strings.HasPrefix(last, askDelegate):
		name := strings.TrimPrefix(last, askDelegate)
		call := "call_delegate_" + name
		if _, ok := r.ToolResult(call); ok {
			return hosttest.Say("Started " + name + "; working on other things.")
		}
		return hosttest.Call(call, "delegate", map[string]string{"prompt": childPrompt + name, "agent": "researcher"})
	case strings.HasPrefix(last, "read: "):
		id := strings.TrimPrefix(last, "read: ")
		if _, ok := r.ToolResult("call_read"); ok {
			return hosttest.Say("Read it.")
		}
		if _, ok := r.ToolResult("call_list"); ok {
			return hosttest.Call("call_read", "delegation_read", map[string]string{"id": id})
		}
		return hosttest.Call("call_list", "delegation_list", map[string]string{})
	case strings.HasPrefix(last, "echo: "):
		call := "call_echo_" + strings.TrimPrefix(last, "echo: ")
		if _, ok := r.ToolResult(call); ok {
			return hosttest.Say("Echoed.")
		}
		return hosttest.Call(call, "echo", map[string]string{"text": last})
	case strings.HasPrefix(last, "cancel: "):
		if _, ok := r.ToolResult("call_cancel"); ok {
			return hosttest.Say("Cancelled.")
		}
		return hosttest.Call("call_cancel", "delegation_cancel", map[string]string{"id": strings.TrimPrefix(last, "cancel: ")})
	case strings.HasPrefix(last, "busy: "):
		m.mu.Lock()
		h := m.holds[last]
		m.mu.Unlock()
		return hosttest.Reply{Partial: "Thinking.", Hold: h, Text: " Done thinking."}
	case strings.HasPrefix(last, "write: "):
		if _, ok := r.ToolResult("call_write"); ok {
			return hosttest.Say("Refused.")
		}
		return hosttest.Call("call_write", "delegate", map[string]string{"prompt": "edit the code", "agent": "coder"})
	}
	return hosttest.Say("ok")
}

// world is one OpenCode with the plugin installed, its scratch home, and
// the store the plugin's daemon serves.
type world struct {
	t       testing.TB
	ctx     context.Context
	bin     string
	env     *hosttest.Env
	model   *model
	oc      *hosttest.OpenCode
	data    string
	project string
}

// worldOptions shape a world: before runs with OpenCode not yet started;
// plugins are more plugin files for the project; env is added to
// OpenCode's environment.
type worldOptions struct {
	before  func(*world)
	plugins []string
	env     []string
}

// newWorld installs the plugin into a new project and starts OpenCode on it.
func newWorld(t testing.TB, o worldOptions) *world {
	ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
	t.Cleanup(cancel)
	w := &world{t: t, ctx: ctx, bin: hosttest.Delegations(t), env: hosttest.Scratch(t), model: newModel(t), project: hosttest.NewProject(t)}
	w.data = filepath.Join(w.env.DataHome, "opencode", "delegations")
	out := w.cli(0, "install", "opencode", "--project", w.project)
	for _, want := range []string{"installed the OpenCode plugin: " + filepath.Join(w.project, ".opencode", "plugins", "delegations.ts"), "it runs " + w.bin, "wrote empty dependencies into " + filepath.Join(w.project, ".opencode")} {
		if !strings.Contains(out, want) {
			t.Fatalf("install opencode printed:\n%s\nwant a line with %q", out, want)
		}
	}
	t.Cleanup(w.stopDaemon)
	if o.before != nil {
		o.before(w)
	}
	w.oc = hosttest.StartOpenCode(t, hosttest.OpenCodeOptions{
		Project: w.project, Env: w.env, Model: w.model.OpenAI,
		NoSeed:   true, // install seeded the configuration directories
		Plugins:  o.plugins,
		ExtraEnv: o.env,
		Config: map[string]any{"agent": map[string]any{
			"researcher": map[string]any{"mode": "subagent", "description": "Reads and reports.", "permission": map[string]any{"edit": "deny", "write": "deny", "bash": "deny"}},
			"coder":      map[string]any{"mode": "subagent", "description": "Writes code."},
		}},
	})
	t.Cleanup(w.stopDaemon)
	return w
}

// cli runs the delegations binary in the world's environment and returns
// its stdout, failing unless it exits with code.
func (w *world) cli(code int, args ...string) string {
	w.t.Helper()
	cmd := exec.Command(w.bin, args...)
	cmd.Env = w.env.Environ()
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	got := 0
	if ee, ok := err.(*exec.ExitError); ok {
		got = ee.ExitCode()
	} else if err != nil {
		w.t.Fatalf("delegations %s: %v", strings.Join(args, " "), err)
	}
	if got != code {
		w.t.Fatalf("delegations %s: exit %d, want %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), got, code, stdout.String(), stderr.String())
	}
	return stdout.String()
}

// daemon returns the status of the daemon serving the world's data directory.
func (w *world) daemon() (api.Status, error) {
	c, err := api.Dial(w.ctx, api.DefaultSocket(w.data))
	if err != nil {
		return api.Status{}, err
	}
	defer c.Close()
	return c.Status(w.ctx)
}

func (w *world) stopDaemon() {
	if st, err := w.daemon(); err == nil {
		syscall.Kill(st.PID, syscall.SIGTERM)
	}
}

type record struct {
	ID, Status, SessionID, RootSessionID, ParentSessionID, LastMessage, Result, ArtifactPath string
}

func (w *world) show(id string) record {
	w.t.Helper()
	var r record
	if err := json.Unmarshal([]byte(w.cli(0, "--json", "show", id)), &r); err != nil {
		w.t.Fatal(err)
	}
	return r
}

// registeredKey returns the idempotency key of delegation id's
// registration, as the log holds it, and the parent message it names.
func (w *world) registeredKey(id string) (key, parentMessage string) {
	w.t.Helper()
	for line := range strings.Lines(w.cli(0, "--json", "events", "--delegation", id)) {
		var e api.Event
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			w.t.Fatalf("events of %s: %v in %q", id, err, line)
		}
		if e.Kind == "registered" {
			return e.Key, e.ParentMessageID
		}
	}
	w.t.Fatalf("the log holds no registration of %s", id)
	return "", ""
}

// delegate has the parent delegate child name and returns the delegation's
// id, once the child's model request has arrived.
func (w *world) delegate(parent, name string) string {
	w.t.Helper()
	w.oc.PromptAsync(parent, askDelegate+name, hosttest.PromptOptions{})
	call := "call_delegate_" + name
	next := w.model.Await(w.ctx, func(r *hosttest.ChatRequest) bool {
		_, ok := r.ToolResult(call)
		return ok && r.LastUser() == askDelegate+name
	})
	if next == nil {
		w.t.Fatalf("no model request with the result of delegate(%s)", name)
	}
	out, _ := next.ToolResult(call)
	m := regexp.MustCompile(`^Delegation started: ([a-z]+-[a-z]+-[a-z]+)\nAgent: researcher\n`).FindStringSubmatch(out)
	if m == nil {
		w.t.Fatalf("delegate answered:\n%s", out)
	}
	if w.model.Await(w.ctx, func(r *hosttest.ChatRequest) bool { return r.LastUser() == childPrompt+name }) == nil {
		w.t.Fatalf("the child of %s never asked the model", name)
	}
	if err := w.oc.AwaitIdle(w.ctx, parent); err != nil {
		w.t.Fatal(err)
	}
	return m[1]
}

// awaitWake waits for the all-complete notification's turn in the parent:
// the model request it starts.
func (w *world) awaitWake(parent string) *hosttest.ChatRequest {
	w.t.Helper()
	r := w.model.Await(w.ctx, func(r *hosttest.ChatRequest) bool { return strings.Contains(r.LastUser(), allComplete) })
	if r == nil {
		w.t.Fatal("the all-complete notification never woke the parent")
	}
	if err := w.oc.AwaitIdle(w.ctx, parent); err != nil {
		w.t.Fatal(err)
	}
	return r
}

// notifications counts the parent's messages holding a terminal
// notification of id, and all-complete notifications.
func (w *world) notifications(parent, id string) (terminal, all int) {
	for _, m := range w.oc.Messages(parent) {
		text := m.Text()
		if m.Info.Role != "user" {
			continue
		}
		if strings.Contains(text, "<task-id>"+id+"</task-id>") {
			terminal++
		}
		if strings.Contains(text, allComplete) {
			all++
		}
	}
	return terminal, all
}

func (w *world) artifact(parent, id string) string {
	w.t.Helper()
	b, err := os.ReadFile(filepath.Join(w.data, hosttest.ProjectID, parent, id+".md"))
	if err != nil {
		w.t.Fatalf("artifact: %v", err)
	}
	return string(b)
}

func TestOpenCodePlugin(t *testing.T) {
	if !hosttest.Offline() {
		t.Logf("not offline-proven: %s", hosttest.OfflineReason())
	}
	w := newWorld(t, worldOptions{})
	ids := strings.Join(w.oc.ToolIDs(), " ")
	for _, tool := range []string{"delegate", "delegation_read", "delegation_list", "delegation_cancel"} {
		if !strings.Contains(" "+ids+" ", " "+tool+" ") {
			t.Fatalf("OpenCode's tools lack %s (the plugin did not load): %s", tool, ids)
		}
	}
	parent := w.oc.CreateSession("parent")

	// A write-capable agent is refused, as text.
	w.oc.PromptAsync(parent, "write: x", hosttest.PromptOptions{})
	refused := w.model.Await(w.ctx, func(r *hosttest.ChatRequest) bool { _, ok := r.ToolResult("call_write"); return ok })
	if refused == nil {
		t.Fatal("no request after delegate(coder)")
	}
	if out, _ := refused.ToolResult("call_write"); !strings.HasPrefix(out, "❌ Delegation failed:\n\nAgent \"coder\" is write-capable") {
		t.Fatalf("delegate(coder) answered:\n%s", out)
	}
	if !strings.Contains(refused.System(), "<delegation-rules>") {
		t.Errorf("the parent's system prompt lacks the rules:\n%s", refused.System())
	}
	if err := w.oc.AwaitIdle(w.ctx, parent); err != nil {
		t.Fatal(err)
	}

	// One delegation, held while the test looks at it running.
	release := w.model.hold("one")
	one := w.delegate(parent, "one")
	rec := w.show(one)
	if rec.Status != "running" || rec.SessionID == "" || rec.RootSessionID != parent || rec.ParentSessionID != parent {
		t.Fatalf("while the child works, the record is %+v", rec)
	}
	if kids := w.oc.Children(parent); len(kids) != 1 || kids[0].ID != rec.SessionID || kids[0].Title != "Delegation: "+one {
		t.Fatalf("the parent's children: %+v; want the child %s titled Delegation: %s", kids, rec.SessionID, one)
	}
	w.oc.Summarize(parent)
	sum := w.model.Await(w.ctx, (*hosttest.ChatRequest).IsCompaction)
	if sum == nil {
		t.Fatal("no compaction request")
	}
	if all := sum.System() + strings.Join(sum.Users(), "\n"); !strings.Contains(all, "## Running Delegations") || !strings.Contains(all, "### `"+one+"` (researcher)") {
		t.Errorf("the compaction request does not carry the running delegation:\n%s", all)
	}

	// It ends: artifact, one notification, the all-complete wakes the parent.
	release()
	wake := w.awaitWake(parent)
	art := w.artifact(parent, one)
	rec = w.show(one)
	wantArt := fmt.Sprintf("# Cache race\n\nThe flaky test races on the cache.\n\n**ID:** %s\n**Agent:** researcher\n**Status:** complete\n**Session:** %s\n", one, rec.SessionID)
	if !strings.HasPrefix(art, wantArt) || !strings.HasSuffix(art, "\n---\n\nLooking at one. Answer of one.") {
		t.Errorf("artifact:\n%s\nwant it to start with:\n%s", art, wantArt)
	}
	if !strings.Contains(strings.Join(wake.Users(), "\n"), "<task-id>"+one+"</task-id>") {
		t.Errorf("the woken parent's request lacks the terminal notification: %q", wake.Users())
	}
	if !strings.Contains(wake.System(), one) {
		t.Errorf("the woken parent's system prompt does not name the unread %s:\n%s", one, wake.System())
	}
	if term, all := w.notifications(parent, one); term != 1 || all != 1 {
		t.Errorf("the parent got %d terminal and %d all-complete notifications, want 1 and 1", term, all)
	}
	if list := w.cli(0, "list", "--root-session", parent); !strings.Contains(list, "- **"+one+"** | Cache race [complete] [unread]") {
		t.Errorf("list:\n%s", list)
	}
	w.oc.Summarize(parent)
	sum = w.model.Await(w.ctx, (*hosttest.ChatRequest).IsCompaction)
	if all := sum.System() + strings.Join(sum.Users(), "\n"); !strings.Contains(all, "## Unread Completed Delegations") || !strings.Contains(all, "### ✅ `"+one+"`") {
		t.Errorf("the second compaction request does not carry the unread delegation:\n%s", all)
	}

	// delegation_list and delegation_read through the model.
	w.oc.PromptAsync(parent, "read: "+one, hosttest.PromptOptions{})
	read := w.model.Await(w.ctx, func(r *hosttest.ChatRequest) bool { _, ok := r.ToolResult("call_read"); return ok })
	if read == nil {
		t.Fatal("no request after delegation_read")
	}
	if got, _ := read.ToolResult("call_list"); !strings.Contains(got, "## Delegations\n\n- **"+one+"** | Cache race [complete] [unread]\n  → The flaky test races on the cache.") {
		t.Errorf("delegation_list answered:\n%s", got)
	}
	if got, _ := read.ToolResult("call_read"); got != art {
		t.Errorf("delegation_read answered:\n%s\nwant the artifact:\n%s", got, art)
	}
	if err := w.oc.AwaitIdle(w.ctx, parent); err != nil {
		t.Fatal(err)
	}
	if list := w.cli(0, "list", "--root-session", parent); strings.Contains(list, "[unread]") {
		t.Errorf("after delegation_read, list still shows unread:\n%s", list)
	}
	timeline := w.cli(0, "timeline", one)
	for _, kind := range []string{"registered", "started", "progressed", "completed", "persisted", "notified", "read"} {
		if !strings.Contains(timeline, kind) {
			t.Errorf("the timeline lacks %s:\n%s", kind, timeline)
		}
	}

	// SIGKILL OpenCode while a delegation runs: after the restart the child
	// is resumed, its notification arrives once, and it stays unread.
	w.model.hold("two") // never released: only the resume answers
	two := w.delegate(parent, "two")
	w.oc.Kill()
	w.oc.Restart()
	w.awaitWake(parent)
	if art := w.artifact(parent, two); !strings.HasSuffix(art, "---\n\nResumed and finished.") {
		t.Errorf("the resumed delegation's artifact:\n%s", art)
	}
	if term, _ := w.notifications(parent, two); term != 1 {
		t.Errorf("after the restart the parent got %d notifications of %s, want 1", term, two)
	}
	w.oc.Restart()
	if list := w.cli(0, "list", "--root-session", parent); !strings.Contains(list, "- **"+two+"**") || !strings.Contains(list, "[complete] [unread]") {
		t.Errorf("after another restart, list:\n%s", list)
	}
	if term, all := w.notifications(parent, two); term != 1 || all != 2 {
		t.Errorf("after another restart: %d notifications of %s and %d all-complete, want 1 and 2", term, two, all)
	}

	// SIGKILL the daemon while a delegation runs: the plugin starts it again
	// and nothing is lost.
	release = w.model.hold("three")
	three := w.delegate(parent, "three")
	st, err := w.daemon()
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(st.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	release()
	w.awaitWake(parent)
	if art := w.artifact(parent, three); !strings.HasSuffix(art, "---\n\nLooking at three. Answer of three.") {
		t.Errorf("artifact after the daemon's restart:\n%s", art)
	}
	if term, all := w.notifications(parent, three); term != 1 || all != 3 {
		t.Errorf("after the daemon's restart: %d notifications of %s and %d all-complete, want 1 and 3", term, three, all)
	}
	if st2, err := w.daemon(); err != nil || st2.PID == st.PID {
		t.Errorf("the daemon after SIGKILL: %+v, %v (killed pid %d)", st2, err, st.PID)
	}

	// Each registration's key is its tool call under its message: message
	// ids ascend, so the keys reach the log's index in order.
	var prev string
	for _, d := range []struct{ id, name string }{{one, "one"}, {two, "two"}, {three, "three"}} {
		key, msg := w.registeredKey(d.id)
		if want := "register:opencode:" + msg + ":call_delegate_" + d.name; !strings.HasPrefix(msg, "msg_") || key != want {
			t.Errorf("%s was registered with key %q, want %q (its parent message is %q)", d.name, key, want, msg)
		}
		if key <= prev {
			t.Errorf("the key of %s, %q, does not sort after the one before, %q", d.name, key, prev)
		}
		prev = key
	}
	w.cli(0, "verify")
	if out := w.cli(0, "replay"); !strings.Contains(out, "\n0 errors, 0 warnings,") {
		t.Errorf("replay:\n%s", out)
	}
}

// TestOpenCodeTimeout: the daemon's deadline ends a delegation whose child
// never answers; its partial output is kept, the parent is notified, and
// the plugin aborts and deletes the child session.
func TestOpenCodeTimeout(t *testing.T) {
	// The daemon runs before OpenCode starts, with a short default
	// deadline; the plugin uses it rather than starting one.
	var progressed <-chan api.Event
	w := newWorld(t, worldOptions{before: func(w *world) {
		w.cli(0, "serve", "--detach", "--default-timeout", "10s")
		progressed = w.follow("progressed")
	}})
	parent := w.oc.CreateSession("parent")
	w.model.hold("four") // never released
	id := w.delegate(parent, "four")
	// The deadline is 10 s after registration; the partial text must be
	// recorded before it for the timeout to keep it.
	select {
	case ev := <-progressed:
		if ev.ID != id || ev.Message != "Looking at four." {
			t.Fatalf("progress: %+v", ev)
		}
	case <-w.ctx.Done():
		t.Fatal("no progress from the child")
	}
	rec := w.show(id)
	w.awaitWake(parent)
	if art := w.artifact(parent, id); !strings.Contains(art, "**Status:** timeout\n") || !strings.HasSuffix(art, "---\n\nLooking at four.\n\n[TIMEOUT REACHED]") {
		t.Errorf("artifact of the timed-out delegation:\n%s", art)
	}
	if term, all := w.notifications(parent, id); term != 1 || all != 1 {
		t.Errorf("%d terminal and %d all-complete notifications, want 1 and 1", term, all)
	}
	if _, err := w.oc.AwaitEvent(w.ctx, 0, func(e hosttest.Event) bool { return e.Type == "session.deleted" && e.SessionID() == rec.SessionID }); err != nil {
		t.Fatalf("the timed-out child session %s was not deleted: %v", rec.SessionID, err)
	}
}

// follow streams the daemon's events of one kind.
func (w *world) follow(kind string) <-chan api.Event {
	w.t.Helper()
	ch := make(chan api.Event, 16)
	c, err := api.Dial(w.ctx, api.DefaultSocket(w.data))
	if err != nil {
		w.t.Fatalf("no daemon to follow: %v", err)
	}
	w.t.Cleanup(func() { c.Close() })
	go func() {
		c.Events(w.ctx, api.EventsRequest{Follow: true}, func(ev api.Event) error {
			if ev.Kind == kind {
				select {
				case ch <- ev:
				default:
				}
			}
			return nil
		})
	}()
	return ch
}

// TestOpenCodeBusyParent: a delegation ends while its parent is in a turn;
// the notification waits for the turn's end (delivered then, it would make
// OpenCode ask the model again), is delivered once, and the all-complete
// wakes the parent once.
func TestOpenCodeBusyParent(t *testing.T) {
	w := newWorld(t, worldOptions{})
	parent := w.oc.CreateSession("parent")
	releaseChild := w.model.hold("six")
	six := w.delegate(parent, "six")
	persisted := w.follow("persisted")
	releaseParent := w.model.hold("busy: x")
	w.oc.PromptAsync(parent, "busy: x", hosttest.PromptOptions{})
	if w.model.Await(w.ctx, func(r *hosttest.ChatRequest) bool { return r.LastUser() == "busy: x" }) == nil {
		t.Fatal("the parent's turn never asked the model")
	}
	releaseChild()
	select {
	case ev := <-persisted:
		if ev.ID != six {
			t.Fatalf("persisted %s, want %s", ev.ID, six)
		}
	case <-w.ctx.Done():
		t.Fatal("the child's result was never persisted")
	}
	// The notification is due now, and the parent is still in its turn.
	releaseParent()
	wake := w.awaitWake(parent)
	if term, all := w.notifications(parent, six); term != 1 || all != 1 {
		t.Errorf("%d terminal and %d all-complete notifications, want 1 and 1", term, all)
	}
	for _, r := range w.model.Requests() {
		if r.Seq < wake.Seq && strings.Contains(strings.Join(r.Users(), "\n"), "<task-id>"+six+"</task-id>") {
			t.Errorf("request %d, before the all-complete's turn, already holds the notification: it was delivered into the busy turn", r.Seq)
		}
	}
}

// TestOpenCodeCancel: delegation_cancel ends a running delegation, stops
// its child, and the parent is notified.
func TestOpenCodeCancel(t *testing.T) {
	w := newWorld(t, worldOptions{})
	parent := w.oc.CreateSession("parent")
	w.model.hold("seven") // never released: only the cancel ends it
	seven := w.delegate(parent, "seven")
	w.oc.PromptAsync(parent, "cancel: "+seven, hosttest.PromptOptions{})
	r := w.model.Await(w.ctx, func(r *hosttest.ChatRequest) bool { _, ok := r.ToolResult("call_cancel"); return ok })
	if r == nil {
		t.Fatal("no request after delegation_cancel")
	}
	if got, _ := r.ToolResult("call_cancel"); got != "Delegation cancelled: "+seven {
		t.Errorf("delegation_cancel answered %q", got)
	}
	w.awaitWake(parent)
	if art := w.artifact(parent, seven); !strings.Contains(art, "**Status:** cancelled\n") || !strings.HasSuffix(art, "---\n\nDelegation was cancelled before completion.") {
		t.Errorf("artifact of the cancelled delegation:\n%s", art)
	}
	if term, all := w.notifications(parent, seven); term != 1 || all != 1 {
		t.Errorf("%d terminal and %d all-complete notifications, want 1 and 1", term, all)
	}
	child := w.show(seven).SessionID
	if _, err := w.oc.AwaitEvent(w.ctx, 0, func(e hosttest.Event) bool { return e.Type == "session.idle" && e.SessionID() == child }); err != nil {
		t.Errorf("the cancelled child %s was not stopped: %v", child, err)
	}
}

// TestOpenCodeNoBinary: without the delegations binary, delegate says what
// is wrong and what to do, and OpenCode goes on working.
func TestOpenCodeNoBinary(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "no-such-delegations")
	w := newWorld(t, worldOptions{env: []string{"DELEGATIONS_BIN=" + missing}})
	parent := w.oc.CreateSession("parent")
	w.oc.PromptAsync(parent, askDelegate+"eight", hosttest.PromptOptions{})
	r := w.model.Await(w.ctx, func(r *hosttest.ChatRequest) bool { _, ok := r.ToolResult("call_delegate_eight"); return ok })
	if r == nil {
		t.Fatal("no request after delegate")
	}
	want := "❌ Delegation failed:\n\nDELEGATIONS_BIN is " + missing + ", which does not exist. Point it at the delegations binary, or unset it."
	if got, _ := r.ToolResult("call_delegate_eight"); got != want {
		t.Errorf("delegate answered:\n%s\nwant:\n%s", got, want)
	}
	if err := w.oc.AwaitIdle(w.ctx, parent); err != nil {
		t.Fatal(err)
	}
}

// TestPluginTypeChecks: plugin.ts passes TypeScript's strict checks. It
// runs inside OpenCode as plain Bun-transpiled TypeScript, which checks no
// types: a type error would surface only as a broken plugin.
func TestPluginTypeChecks(t *testing.T) {
	tsc := hosttest.Host(t, "typescript")
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "plugin.ts"), opencode.Render("/usr/bin/delegations", map[string]string{"DELEGATIONS_DATA": "/data"}), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(tsc, "--strict", "--noEmit", "--noUnusedLocals", "--noUnusedParameters",
		"--lib", "es2022,dom,dom.iterable", "--target", "es2022", "--module", "esnext", "plugin.ts")
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("tsc: %v\n%s", err, out)
	}
}
