package mcpserver

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/delegations/delegations/cmd/delegations/api"
	"github.com/delegations/delegations/fsm"
	"github.com/delegations/delegations/projection"
	"github.com/delegations/delegations/projection/artifact"
)

type nopClose struct{ api.Local }

func (nopClose) Close() error { return nil }

type fixture struct {
	t       *testing.T
	store   *projection.Store
	cs      *mcp.ClientSession
	connect atomic.Int64
	writers atomic.Int64 // connections that were not read-only
	// beforeConnect, if set, runs before the n-th connection (1-based).
	beforeConnect func(n int64)
}

// start serves the tools in process, as the log opened in process (no
// daemon: reads poll), for the default session s1.
func start(t *testing.T, session string) *fixture {
	t.Helper()
	return startWith(t, Options{Session: session})
}

// startWith is start with options (Connect, DataDir and Version are set
// here).
func startWith(t *testing.T, o Options) *fixture {
	t.Helper()
	s, err := projection.Open(t.TempDir(), projection.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	f := &fixture{t: t, store: s}
	o.DataDir, o.Version = s.Dir(), "test"
	o.Connect = func(_ context.Context, readOnly bool) (Backend, bool, error) {
		n := f.connect.Add(1)
		if !readOnly {
			f.writers.Add(1)
		}
		if f.beforeConnect != nil {
			f.beforeConnect(n)
		}
		return nopClose{api.Local{Service: api.NewService(s)}}, false, nil
	}
	srv := New(o)
	st, ct := mcp.NewInMemoryTransports()
	ctx := context.Background()
	ss, err := srv.Connect(ctx, st, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ss.Close() })
	cs, err := mcp.NewClient(&mcp.Implementation{Name: "test", Version: "1"}, nil).Connect(ctx, ct, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cs.Close() })
	f.cs = cs
	return f
}

// call calls a tool and returns its text and whether it is an error.
func (f *fixture) call(name string, args map[string]any) (string, bool) {
	f.t.Helper()
	res, err := f.cs.CallTool(context.Background(), &mcp.CallToolParams{Name: name, Arguments: args})
	if err != nil {
		f.t.Fatalf("%s: %v", name, err)
	}
	var b strings.Builder
	for _, c := range res.Content {
		b.WriteString(c.(*mcp.TextContent).Text)
	}
	return b.String(), res.IsError
}

func (f *fixture) register(root string) fsm.Delegation {
	f.t.Helper()
	d, err := f.store.Register(context.Background(), projection.Registration{
		ProjectID: "p1", RootSessionID: root, ParentSessionID: root, Agent: "Explore", Prompt: "look", SessionID: "a1",
	})
	if err != nil {
		f.t.Fatal(err)
	}
	if d, err = f.store.Start(context.Background(), d.ID, "a1"); err != nil {
		f.t.Fatal(err)
	}
	return d
}

func (f *fixture) complete(id string) {
	f.t.Helper()
	if _, err := f.store.Complete(context.Background(), id, "The answer.", "", ""); err != nil {
		f.t.Fatal(err)
	}
	if _, err := f.store.Ack(context.Background(), projection.KindTerminal+":"+id); err != nil {
		f.t.Fatal(err)
	}
}

func TestToolsAnnotated(t *testing.T) {
	f := start(t, "s1")
	res, err := f.cs.ListTools(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{"delegation_list": true, "delegation_read": true, "delegation_status": true, "delegation_cancel": false}
	for _, tool := range res.Tools {
		ro, ok := want[tool.Name]
		if !ok {
			t.Errorf("unexpected tool %s", tool.Name)
			continue
		}
		delete(want, tool.Name)
		if tool.Annotations == nil || tool.Annotations.ReadOnlyHint != ro {
			t.Errorf("%s: annotations %+v, want readOnlyHint %v", tool.Name, tool.Annotations, ro)
		}
	}
	if len(want) > 0 {
		t.Errorf("missing tools: %v", want)
	}
}

// TestTools: each tool answers from the store, with the plugin's texts,
// for the default session or the one given, and only its delegations.
func TestTools(t *testing.T) {
	f := start(t, "s1")
	if text, isErr := f.call("delegation_list", nil); isErr || text != "No delegations found for this session." {
		t.Fatalf("empty list: %q %v", text, isErr)
	}
	d := f.register("s1")
	other := f.register("s2")
	f.complete(d.ID)

	text, _ := f.call("delegation_list", nil)
	if want := artifact.ListText(mustList(t, f.store, "s1")); text != want || !strings.Contains(text, "[unread]") || strings.Contains(text, other.ID) {
		t.Fatalf("list:\n%s\nwant\n%s", text, want)
	}
	if text, _ := f.call("delegation_list", map[string]any{"session": "s2"}); !strings.Contains(text, other.ID) || strings.Contains(text, d.ID) {
		t.Fatalf("list of s2:\n%s", text)
	}

	text, isErr := f.call("delegation_status", map[string]any{"id": d.ID})
	var st Status
	if err := json.Unmarshal([]byte(text), &st); err != nil || isErr {
		t.Fatalf("status: %q %v", text, err)
	}
	rec, _ := f.store.Get(d.ID)
	if st.ID != d.ID || st.Status != "complete" || st.Agent != "Explore" || st.Session != "a1" || !st.Unread ||
		st.Artifact != filepath.Join(f.store.Dir(), rec.ArtifactPath) || st.Completed == "" {
		t.Fatalf("status: %+v", st)
	}

	text, isErr = f.call("delegation_read", map[string]any{"id": d.ID})
	art, err := artifact.Read(f.store.Dir(), rec.ArtifactPath)
	if err != nil || isErr || text != string(art) {
		t.Fatalf("read: %q (%v), want the artifact %q", text, err, art)
	}
	if text, _ := f.call("delegation_list", nil); strings.Contains(text, "[unread]") {
		t.Fatalf("still unread after delegation_read:\n%s", text)
	}

	for _, tool := range []string{"delegation_read", "delegation_status", "delegation_cancel"} {
		if text, isErr := f.call(tool, map[string]any{"id": other.ID}); !isErr || text != artifact.NotFoundReadText(other.ID) {
			t.Errorf("%s of another session's delegation: %q %v", tool, text, isErr)
		}
		if text, isErr := f.call(tool, map[string]any{"id": " "}); !isErr || text != artifact.ReadIDRequired {
			t.Errorf("%s without an id: %q %v", tool, text, isErr)
		}
	}

	if text, isErr := f.call("delegation_cancel", map[string]any{"id": other.ID, "session": "s2", "reason": "not needed"}); isErr || !strings.Contains(text, "cancelled") {
		t.Fatalf("cancel: %q", text)
	}
	if rec, _ := f.store.Get(other.ID); rec.State != fsm.Cancelled || rec.Error != "not needed" {
		t.Fatalf("after cancel: %+v", rec)
	}
	if text, isErr := f.call("delegation_cancel", map[string]any{"id": d.ID}); isErr || !strings.Contains(text, "already complete") {
		t.Fatalf("cancel of a complete delegation: %q", text)
	}
}

func mustList(t *testing.T, s *projection.Store, root string) []fsm.Delegation {
	ds, err := s.List(root, projection.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return ds
}

// TestReadWaits: without a daemon a read polls; it returns the result once
// the delegation completes, and the current state when told not to wait.
func TestReadWaits(t *testing.T) {
	f := start(t, "s1")
	d := f.register("s1")
	text, isErr := f.call("delegation_read", map[string]any{"id": d.ID, "wait_seconds": 0})
	if isErr || !strings.HasPrefix(text, "Delegation ID: "+d.ID+"\nStatus: running") {
		t.Fatalf("read without waiting: %q", text)
	}
	// The delegation completes between the first poll and the second.
	first := f.connect.Load() + 1
	f.beforeConnect = func(n int64) {
		if n == first+1 {
			f.complete(d.ID)
		}
	}
	writers := f.writers.Load()
	text, isErr = f.call("delegation_read", map[string]any{"id": d.ID, "wait_seconds": 600})
	if isErr || !strings.HasSuffix(text, "The answer.") {
		t.Fatalf("read while waiting: %q", text)
	}
	// Polling never opened the log for writing: only the final read did.
	if n := f.writers.Load() - writers; n != 1 {
		t.Fatalf("a waiting read opened the writer %d times, want 1", n)
	}
}

// TestReadClaudeCode: under Claude Code a running delegation is answered
// at once (nothing can end it while the parent's turn waits in the call),
// with the note that a notification will come.
func TestReadClaudeCode(t *testing.T) {
	f := startWith(t, Options{Session: "s1", FixedSession: true, ClaudeCode: true})
	d := f.register("s1")
	start := time.Now()
	text, isErr := f.call("delegation_read", map[string]any{"id": d.ID, "wait_seconds": 600})
	if isErr || !strings.HasPrefix(text, "Delegation ID: "+d.ID+"\nStatus: running") || !strings.HasSuffix(text, RunningNote) {
		t.Fatalf("read of a running agent: %q", text)
	}
	if el := time.Since(start); el > 5*time.Second {
		t.Fatalf("the read waited %s", el)
	}
	f.complete(d.ID)
	if text, isErr := f.call("delegation_read", map[string]any{"id": d.ID}); isErr || !strings.HasSuffix(text, "The answer.") {
		t.Fatalf("read once complete: %q", text)
	}
}

// TestFixedSession: under Claude Code the session is the host's; the
// model cannot name another session's delegations.
func TestFixedSession(t *testing.T) {
	f := startWith(t, Options{Session: "s1", FixedSession: true, ClaudeCode: true})
	other := f.register("s2")
	for _, tool := range []string{"delegation_list", "delegation_read", "delegation_status", "delegation_cancel"} {
		args := map[string]any{"session": "s2", "id": other.ID}
		if tool == "delegation_list" {
			delete(args, "id")
		}
		text, isErr := f.call(tool, args)
		if !isErr || !strings.Contains(text, "not this Claude Code session") {
			t.Fatalf("%s with another session: %q %v", tool, text, isErr)
		}
	}
	if d, _ := f.store.Get(other.ID); d.State != fsm.Running {
		t.Fatalf("the other session's delegation is %s", d.State)
	}
	if text, isErr := f.call("delegation_list", map[string]any{"session": "s1"}); isErr {
		t.Fatalf("own session named: %q", text)
	}
}

func TestNoSession(t *testing.T) {
	f := start(t, "")
	text, isErr := f.call("delegation_list", nil)
	if !isErr || !strings.Contains(text, `pass "session"`) {
		t.Fatalf("%q %v", text, isErr)
	}
	if text, isErr := f.call("delegation_list", map[string]any{"session": "../x"}); !isErr || !strings.Contains(text, "invalid session") {
		t.Fatalf("%q %v", text, isErr)
	}
}
