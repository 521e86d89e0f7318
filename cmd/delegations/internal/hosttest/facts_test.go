package hosttest_test

// Facts about OpenCode 1.18.33 the plugin relies on, found by experiment
// and kept as tests so an upgrade that changes them fails here first. The
// calls come from testdata/probe.ts, i.e. from a plugin's own SDK client in
// its background code, as the delegations plugin makes them.

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/delegations/delegations/cmd/delegations/internal/hosttest"
)

func texts(msgs []hosttest.Message) []string {
	var out []string
	for _, m := range msgs {
		out = append(out, m.Info.Role+": "+m.Text())
	}
	return out
}

// A noReply notification to an idle session appends a synthetic user
// message and starts no turn: the model's next request is the next prompt's.
func TestOpenCodeNotifyIdle(t *testing.T) {
	ctx := testContext(t)
	model := hosttest.NewOpenAI(t, func(r *hosttest.ChatRequest) hosttest.Reply { return hosttest.Say("re: " + r.LastUser()) })
	oc, p := startWithProbe(t, model, nil)
	ses := oc.CreateSession("parent")
	oc.Prompt(ses, "hello")
	p.notify(ctx, ses, "NOTE", true)
	oc.Prompt(ses, "after")
	var users [][]string
	for _, r := range model.Requests() {
		users = append(users, r.Users())
	}
	if want := [][]string{{"hello"}, {"hello", "NOTE", "after"}}; !reflect.DeepEqual(users, want) {
		t.Errorf("model requests' user texts = %q, want %q", users, want)
	}
	msgs := oc.Messages(ses)
	if got, want := texts(msgs), []string{"user: hello", "assistant: re: hello", "user: NOTE", "user: after", "assistant: re: after"}; !slices.Equal(got, want) {
		t.Errorf("messages = %q, want %q", got, want)
	}
	if note := msgs[2].Parts[0]; !note.Synthetic {
		t.Errorf("note part not synthetic: %s", note.Raw)
	}
}

// A notification to a busy session (mid-turn) does not block the caller,
// with or without noReply, and is stored at once; after the turn ends the
// model gets one more request holding it: mid-turn, noReply does not
// prevent a reply.
func TestOpenCodeNotifyBusy(t *testing.T) {
	for _, noReply := range []bool{true, false} {
		t.Run(map[bool]string{true: "noReply", false: "reply"}[noReply], func(t *testing.T) {
			ctx := testContext(t)
			hold := make(chan struct{})
			model := hosttest.NewOpenAI(t, func(r *hosttest.ChatRequest) hosttest.Reply {
				if r.LastUser() == "busy" {
					return hosttest.Reply{Partial: "working...", Hold: hold, Text: " done"}
				}
				return hosttest.Say("re: " + r.LastUser())
			})
			oc, p := startWithProbe(t, model, nil)
			ses := oc.CreateSession("parent")
			oc.PromptAsync(ses, "busy", hosttest.PromptOptions{})
			if model.Await(ctx, nil) == nil {
				t.Fatal("no model request")
			}
			// The turn is held open: a call that waited for it would hang
			// until the test's context ends.
			mark := len(oc.Log())
			p.notify(ctx, ses, "NOTE", noReply)
			// Stored at once, while the turn is still held.
			if _, err := oc.AwaitEvent(ctx, mark, func(e hosttest.Event) bool {
				return e.Type == "message.part.updated" && e.SessionID() == ses && strings.Contains(string(e.Properties), `"text":"NOTE"`)
			}); err != nil {
				t.Fatalf("no part event for the note while the turn is held: %v", err)
			}
			close(hold)
			next := model.Await(ctx, nil)
			if next == nil {
				t.Fatal("no follow-up request")
			}
			if got := next.Users(); !slices.Equal(got, []string{"busy", "NOTE"}) {
				t.Errorf("follow-up request's user texts = %q", got)
			}
			if err := oc.AwaitIdle(ctx, ses); err != nil {
				t.Fatal(err)
			}
			if got, want := texts(oc.Messages(ses)), []string{"user: busy", "assistant: working... done", "user: NOTE", "assistant: re: NOTE"}; !slices.Equal(got, want) {
				t.Errorf("messages = %q, want %q", got, want)
			}
		})
	}
}

// An agent's permission object comes back from config.get as written
// ("write" is accepted), and from app.agents as a ruleset.
func TestOpenCodeAgentPermission(t *testing.T) {
	ctx := testContext(t)
	perm := map[string]any{"edit": "deny", "write": "deny", "bash": "deny"}
	_, p := startWithProbe(t, nil, map[string]any{
		"agent": map[string]any{
			"researcher": map[string]any{"description": "Researches.", "mode": "subagent", "permission": perm},
		},
	})
	var cfg struct {
		Agent map[string]struct {
			Permission map[string]any `json:"permission"`
		} `json:"agent"`
	}
	r := p.mustCall(ctx, "config.get", map[string]any{})
	if err := json.Unmarshal(r.Data, &cfg); err != nil {
		t.Fatal(err)
	}
	if got := cfg.Agent["researcher"].Permission; !reflect.DeepEqual(got, perm) {
		t.Errorf("config.get agent.researcher.permission = %v, want %v", got, perm)
	}
	type rule struct{ Permission, Pattern, Action string }
	var agents []struct {
		Name       string `json:"name"`
		Mode       string `json:"mode"`
		Native     bool   `json:"native"`
		Permission []rule `json:"permission"`
	}
	r = p.mustCall(ctx, "app.agents", map[string]any{})
	if err := json.Unmarshal(r.Data, &agents); err != nil {
		t.Fatal(err)
	}
	i := slices.IndexFunc(agents, func(a struct {
		Name       string `json:"name"`
		Mode       string `json:"mode"`
		Native     bool   `json:"native"`
		Permission []rule `json:"permission"`
	}) bool {
		return a.Name == "researcher"
	})
	if i < 0 {
		t.Fatalf("app.agents lacks researcher: %s", r.Data)
	}
	a := agents[i]
	if a.Mode != "subagent" || a.Native {
		t.Errorf("researcher mode %q native %v", a.Mode, a.Native)
	}
	for _, name := range []string{"edit", "write", "bash"} {
		if !slices.Contains(a.Permission, rule{name, "*", "deny"}) {
			t.Errorf("researcher's ruleset lacks {%s * deny}: %v", name, a.Permission)
		}
	}
}

// A child session made and prompted from a plugin ends its turn with
// session.status idle then session.idle; streamed text arrives as
// message.part.delta events, and message.part.updated carries the whole
// text (empty when the part starts, full when it ends).
func TestOpenCodeChildSession(t *testing.T) {
	ctx := testContext(t)
	model := hosttest.NewOpenAI(t, func(r *hosttest.ChatRequest) hosttest.Reply {
		return hosttest.Reply{Partial: "child ", Text: "answer"}
	})
	oc, p := startWithProbe(t, model, nil)
	parent := oc.CreateSession("parent")
	r := p.mustCall(ctx, "session.create", map[string]any{"body": map[string]any{"parentID": parent, "title": "Delegation: probe"}})
	var child hosttest.Session
	if err := json.Unmarshal(r.Data, &child); err != nil || child.ID == "" {
		t.Fatalf("session.create: %s: %v", r.Data, err)
	}
	if child.ParentID != parent {
		t.Errorf("child's parentID = %q, want %q", child.ParentID, parent)
	}
	p.mustCall(ctx, "session.promptAsync", map[string]any{
		"path": map[string]any{"id": child.ID},
		"body": map[string]any{"parts": []any{map[string]any{"type": "text", "text": "child task"}}},
	})
	status, err := oc.AwaitEvent(ctx, 0, func(e hosttest.Event) bool { return e.Type == "session.status" && e.IsIdle(child.ID) })
	if err != nil {
		t.Fatal(err)
	}
	idle, err := oc.AwaitEvent(ctx, status.Seq, func(e hosttest.Event) bool { return e.Type == "session.idle" && e.IsIdle(child.ID) })
	if err != nil {
		t.Fatal(err)
	}
	if got := oc.Children(parent); len(got) != 1 || got[0].ID != child.ID {
		t.Errorf("children of the parent = %+v", got)
	}
	var deltas []string
	var updates []string
	for _, e := range oc.Log()[:idle.Seq] {
		if e.SessionID() != child.ID {
			continue
		}
		var p struct {
			Delta string `json:"delta"`
			Field string `json:"field"`
			Part  struct {
				Type string `json:"type"`
				Text string `json:"text"`
			} `json:"part"`
		}
		json.Unmarshal(e.Properties, &p)
		switch {
		case e.Type == "message.part.delta" && p.Field == "text":
			deltas = append(deltas, p.Delta)
		case e.Type == "message.part.updated" && p.Part.Type == "text" && p.Part.Text != "child task":
			updates = append(updates, p.Part.Text)
		}
	}
	if strings.Join(deltas, "") != "child answer" {
		t.Errorf("text deltas = %q", deltas)
	}
	if len(updates) == 0 || updates[0] != "" || updates[len(updates)-1] != "child answer" {
		t.Errorf("text part updates = %q, want \"\" first and the whole text last", updates)
	}
}

// POST /session/:id/summarize {providerID, modelID} blocks until the
// summary is written; the model sees the compaction agent's system prompt,
// no tools, and the conversation as one user message.
func TestOpenCodeSummarize(t *testing.T) {
	ctx := testContext(t)
	model := hosttest.NewOpenAI(t, func(r *hosttest.ChatRequest) hosttest.Reply {
		if r.IsCompaction() {
			return hosttest.Say("SUMMARY: said hello")
		}
		return hosttest.Say("re: " + r.LastUser())
	})
	oc := hosttest.StartOpenCode(t, hosttest.OpenCodeOptions{Model: model})
	ses := oc.CreateSession("parent")
	oc.Prompt(ses, "hello")
	oc.Summarize(ses)
	sum := model.Await(ctx, (*hosttest.ChatRequest).IsCompaction)
	if sum == nil {
		t.Fatal("no compaction request")
	}
	if len(sum.Tools) != 0 {
		t.Errorf("compaction request offers tools %q", sum.ToolNames())
	}
	if u := sum.LastUser(); !strings.HasPrefix(u, "Here is the conversation so far:") || !strings.Contains(u, "[User]: hello") {
		t.Errorf("compaction request's user text = %q", u)
	}
	oc.Prompt(ses, "after")
	after := model.Await(ctx, func(r *hosttest.ChatRequest) bool { return r.LastUser() == "after" })
	if after == nil {
		t.Fatal("no request after compaction")
	}
	t.Logf("after compaction the model sees: %q", after.Messages[1:])
}

// "write": "deny" is accepted but inert: the write tool is still offered and
// writes. "edit": "deny" is what removes both edit and write from the tools
// the model is offered (a call to write then fails as an unavailable tool).
func TestOpenCodeWritePermission(t *testing.T) {
	for _, tc := range []struct {
		key     string
		offered bool // write offered to the model, and the file written
	}{{"write", true}, {"edit", false}} {
		t.Run(tc.key, func(t *testing.T) {
			ctx := testContext(t)
			model := hosttest.NewOpenAI(t, func(r *hosttest.ChatRequest) hosttest.Reply {
				if _, ok := r.ToolResult("call_w"); ok {
					return hosttest.Say("done")
				}
				return hosttest.Call("call_w", "write", map[string]string{"filePath": "out.txt", "content": "hi"})
			})
			oc := hosttest.StartOpenCode(t, hosttest.OpenCodeOptions{Model: model, Config: map[string]any{"permission": map[string]any{tc.key: "deny"}}})
			ses := oc.CreateSession("write")
			oc.PromptAsync(ses, "write", hosttest.PromptOptions{})
			if err := oc.AwaitIdle(ctx, ses); err != nil {
				t.Fatal(err)
			}
			first := model.Await(ctx, nil)
			if _, ok := first.Tool("write"); ok != tc.offered {
				t.Errorf("%s deny: write offered = %v, want %v (tools %q)", tc.key, ok, tc.offered, first.ToolNames())
			}
			if _, ok := first.Tool("edit"); ok != tc.offered {
				t.Errorf("%s deny: edit offered = %v, want %v", tc.key, ok, tc.offered)
			}
			_, err := os.Stat(filepath.Join(oc.Project, "out.txt"))
			if written := err == nil; written != tc.offered {
				t.Errorf("%s deny: file written = %v, want %v", tc.key, written, tc.offered)
			}
		})
	}
}
