package hosttest_test

import (
	"context"
	"encoding/json"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/delegations/delegations/cmd/delegations/internal/hosttest"
)

// testContext bounds a test's waits, so a broken host fails the test
// instead of hanging the run. It is a hang guard, not a delay.
func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// A prompt answered by the fake model with text reaches the session.
func TestOpenCodePromptText(t *testing.T) {
	ctx := testContext(t)
	model := hosttest.NewOpenAI(t, func(r *hosttest.ChatRequest) hosttest.Reply {
		return hosttest.Say("pong: " + r.LastUser())
	})
	oc := hosttest.StartOpenCode(t, hosttest.OpenCodeOptions{Model: model})
	ses := oc.CreateSession("") // untitled: OpenCode asks the model for a title
	oc.PromptAsync(ses, "ping", hosttest.PromptOptions{})
	if err := oc.AwaitIdle(ctx, ses); err != nil {
		t.Fatal(err)
	}
	if title := model.Await(ctx, (*hosttest.ChatRequest).IsTitle); title == nil {
		t.Error("no title request for an untitled session")
	}
	req := model.Await(ctx, hosttest.NotTitle)
	if req == nil || req.LastUser() != "ping" {
		t.Fatalf("model request: %+v", req)
	}
	msgs := oc.Messages(ses)
	var got []string
	for _, m := range msgs {
		got = append(got, m.Info.Role+": "+m.Text())
	}
	want := []string{"user: ping", "assistant: pong: ping"}
	if !slices.Equal(got, want) {
		t.Fatalf("messages = %q, want %q", got, want)
	}
	var p struct {
		ID string `json:"id"`
	}
	oc.Do("GET", "/project/current", nil, &p)
	if p.ID != hosttest.ProjectID {
		t.Errorf("project id = %q, want %q", p.ID, hosttest.ProjectID)
	}
}

// A plugin with no imports and JSON Schema args loads offline; the model
// sees its tool and the tool's output comes back to the model.
func TestOpenCodePluginTool(t *testing.T) {
	ctx := testContext(t)
	model := hosttest.NewOpenAI(t, func(r *hosttest.ChatRequest) hosttest.Reply {
		if _, ok := r.ToolResult("call_echo_1"); ok {
			return hosttest.Say("done")
		}
		return hosttest.Call("call_echo_1", "echo", map[string]string{"text": "hello"})
	})
	oc := hosttest.StartOpenCode(t, hosttest.OpenCodeOptions{
		Model:   model,
		Plugins: []string{filepath.Join("testdata", "echo.ts")},
	})
	if ids := oc.ToolIDs(); !slices.Contains(ids, "echo") {
		t.Fatalf("tool ids %q lack echo: the plugin did not load", ids)
	}
	ses := oc.CreateSession("echo")
	oc.PromptAsync(ses, "echo hello", hosttest.PromptOptions{})
	first := model.Await(ctx, hosttest.NotTitle)
	if first == nil {
		t.Fatal("no model request")
	}
	spec, ok := first.Tool("echo")
	if !ok {
		t.Fatalf("tools offered %q lack echo", first.ToolNames())
	}
	var schema struct {
		Type       string `json:"type"`
		Properties map[string]struct {
			Type        string `json:"type"`
			Description string `json:"description"`
		} `json:"properties"`
		Required []string `json:"required"`
	}
	if err := json.Unmarshal(spec.Parameters, &schema); err != nil {
		t.Fatal(err)
	}
	if schema.Type != "object" || schema.Properties["text"].Type != "string" || schema.Properties["text"].Description != "The text to echo." {
		t.Errorf("echo schema = %s", spec.Parameters)
	}
	second := model.Await(ctx, hosttest.NotTitle)
	if second == nil {
		t.Fatal("no model request after the tool call")
	}
	out, ok := second.ToolResult("call_echo_1")
	if !ok {
		t.Fatalf("no tool result in %s", second.Raw)
	}
	var res struct {
		Echo    string         `json:"echo"`
		Context map[string]any `json:"context"`
		Plugin  []string       `json:"plugin"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("tool output %q: %v", out, err)
	}
	if res.Echo != "hello" {
		t.Errorf("echo = %q", res.Echo)
	}
	if res.Context["sessionID"] != ses {
		t.Errorf("tool context sessionID = %v, want %s", res.Context["sessionID"], ses)
	}
	t.Logf("tool context: %v; plugin input: %v", res.Context, res.Plugin)
	if err := oc.AwaitIdle(ctx, ses); err != nil {
		t.Fatal(err)
	}
	msgs := oc.Messages(ses)
	last := msgs[len(msgs)-1]
	if !strings.Contains(last.Text(), "done") {
		t.Errorf("last message %q", last.Text())
	}
}

// Sessions outlive the server: after Kill and Restart (same directories,
// same port) the messages are there and the event log goes on.
func TestOpenCodeRestart(t *testing.T) {
	ctx := testContext(t)
	oc := hosttest.StartOpenCode(t, hosttest.OpenCodeOptions{})
	ses := oc.CreateSession("restart")
	oc.Prompt(ses, "before")
	port := oc.Port
	t0 := time.Now()
	oc.Kill()
	t.Logf("killed after %v", time.Since(t0))
	oc.Restart()
	t.Logf("restarted after %v", time.Since(t0))
	if oc.Port != port {
		t.Errorf("port %d after restart, was %d", oc.Port, port)
	}
	events := oc.Events(ctx)
	if e := <-events; e.Type != "server.connected" {
		t.Errorf("first event of a new subscription: %q", e.Type)
	}
	oc.PromptAsync(ses, "after", hosttest.PromptOptions{})
	if err := oc.AwaitIdle(ctx, ses); err != nil {
		t.Fatal(err)
	}
	t.Logf("idle after %v", time.Since(t0))
	var got []string
	for _, m := range oc.Messages(ses) {
		got = append(got, m.Info.Role+": "+m.Text())
	}
	want := []string{"user: before", "assistant: ok", "user: after", "assistant: ok"}
	if !slices.Equal(got, want) {
		t.Errorf("messages = %q, want %q", got, want)
	}
	oc.Restart() // graceful this time: SIGTERM
	t.Logf("stopped and restarted after %v", time.Since(t0))
	if n := len(oc.Messages(ses)); n != len(want) {
		t.Errorf("%d messages after a graceful restart, want %d", n, len(want))
	}
}
