package claudecode_test

// End to end with the real Claude Code (hosttest.Host "claude-code"),
// headless, against a scripted fake Anthropic API, offline when the
// machine allows it (TestMain). Nothing sleeps to synchronise: each step
// is a claude -p run to its end; nothing asserts on time.

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/delegations/delegations/cmd/delegations/claudecode"
	"github.com/delegations/delegations/cmd/delegations/internal/hosttest"
	"github.com/delegations/delegations/fsm"
)

func TestMain(m *testing.M) {
	code := hosttest.RunOffline(m)
	hosttest.Cleanup()
	os.Exit(code)
}

const (
	sessionID = "0b5e8a2c-6f0e-4c1a-9d55-6a3f2e1c7b90"
	answer    = "The flaky test races on the cache: TestCache reads before the writer commits."
	prompt    = "Find why TestCache is flaky"
)

// model is the fake model's script: it launches a background agent on
// "launch", answers as the sub-agent, and calls the MCP tools on request.
type model struct {
	mu         sync.Mutex
	mcpResults map[string]string // tool name -> the text it returned
	readID     string            // the delegation delegation_read is asked for
}

func (m *model) reply(r *hosttest.MessagesRequest) hosttest.AnthropicReply {
	m.mu.Lock()
	defer m.mu.Unlock()
	last := r.LastText()
	if _, ok := r.LastToolResult(); ok {
		u, _ := r.LastUser()
		for _, b := range u.Content {
			if b.Type == "tool_result" && strings.HasPrefix(b.ToolUseID, "toolu_mcp_") {
				text, _ := r.ToolResult(b.ToolUseID)
				m.mcpResults[strings.TrimPrefix(b.ToolUseID, "toolu_mcp_")] = text
			}
		}
		return hosttest.AnthropicReply{Text: "Done."}
	}
	switch {
	case r.Subagent():
		return hosttest.AnthropicReply{Text: answer}
	case strings.HasPrefix(last, "CRITICAL: Respond with TEXT ONLY"):
		return hosttest.AnthropicReply{Text: "Summary: we started a background investigation of the flaky test."}
	case strings.Contains(last, "<task-notification>"):
		return hosttest.AnthropicReply{Text: "Noted the result."}
	case strings.HasSuffix(last, "launch"):
		return hosttest.AnthropicReply{Tools: []hosttest.ToolUse{{Name: "Agent", Input: map[string]any{
			"description": "investigate flaky test", "prompt": prompt, "subagent_type": "general-purpose", "run_in_background": true,
		}}}}
	case strings.HasSuffix(last, "use the tools"):
		var calls []hosttest.ToolUse
		calls = append(calls, hosttest.ToolUse{ID: "toolu_mcp_delegation_list", Name: "mcp__delegations__delegation_list", Input: map[string]any{}})
		if m.readID != "" {
			calls = append(calls,
				hosttest.ToolUse{ID: "toolu_mcp_delegation_status", Name: "mcp__delegations__delegation_status", Input: map[string]any{"id": m.readID}},
				hosttest.ToolUse{ID: "toolu_mcp_delegation_read", Name: "mcp__delegations__delegation_read", Input: map[string]any{"id": m.readID}})
		}
		return hosttest.AnthropicReply{Tools: calls}
	}
	return hosttest.AnthropicReply{Text: "ok"}
}

// delegations runs the delegations CLI on the test's data directory.
func delegations(t *testing.T, c *hosttest.Claude, args ...string) string {
	t.Helper()
	cmd := exec.Command(hosttest.Delegations(t), args...)
	cmd.Env = c.Environ()
	cmd.Dir = c.Project
	out, err := cmd.Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		t.Fatalf("delegations %s: %v\n%s%s", strings.Join(args, " "), err, out, stderr)
	}
	return string(out)
}

// TestClaudeCode drives the real Claude Code through a background agent's
// life with the hooks and the MCP server installed by `delegations install
// claude-code --project DIR --mcp`, and checks what the store recorded,
// what a compacted and a resumed session get, and what the MCP tools say.
//
// Two set-ups: installed for the project (settings.local.json) with no
// daemon running (the first hook starts one), and installed for the user (settings.json and
// .claude.json in $CLAUDE_CONFIG_DIR) with a daemon serving (a hook that
// opened the log itself would find it locked and log an error).
func TestClaudeCode(t *testing.T) {
	if !hosttest.Offline() {
		t.Logf("not offline-proven: %s", hosttest.OfflineReason())
	}
	for _, tc := range []struct {
		name   string
		scope  []string
		daemon bool
	}{
		{"project", []string{"--project", ""}, false},
		{"user with a daemon", []string{"--user"}, true},
	} {
		t.Run(tc.name, func(t *testing.T) { testClaudeCode(t, tc.scope, tc.daemon) })
	}
}

func testClaudeCode(t *testing.T, scope []string, daemon bool) {
	m := &model{mcpResults: map[string]string{}}
	api := hosttest.StartAnthropic(t, m.reply)
	data := filepath.Join(t.TempDir(), "data")
	c := hosttest.StartClaude(t, api, "DELEGATIONS_DATA="+data, "ENABLE_TOOL_SEARCH=false")
	if daemon {
		hosttest.Serve(t, c.Environ())
	} else {
		stopDaemon(t, c) // the first hook starts one
	}
	if scope[0] == "--project" {
		scope = []string{"--project", c.Project}
	}
	delegations(t, c, append([]string{"install", "claude-code", "--mcp"}, scope...)...)

	// 1. Launch a background agent; -p waits for it to finish.
	out := c.Run(t, "please launch", "--session-id", sessionID)
	if res, err := out.Result(); err != nil || res["is_error"] == true {
		t.Fatalf("run 1: %v %v", res, err)
	}
	if _, err := os.Stat(filepath.Join(data, ".delegations.log")); !daemon && err != nil {
		t.Fatalf("no hook started a daemon: %v\nhook log: %s", err, readLog(data))
	}
	var list struct{ Delegations []fsm.Delegation }
	if err := json.Unmarshal([]byte(delegations(t, c, "--json", "list", "--root-session", sessionID)), &list); err != nil {
		t.Fatal(err)
	}
	if len(list.Delegations) != 1 {
		t.Fatalf("want one delegation, got %+v\nhook log: %s", list, readLog(data))
	}
	// A listing carries summaries; the record's texts come with show.
	var d fsm.Delegation
	if err := json.Unmarshal([]byte(delegations(t, c, "--json", "show", list.Delegations[0].ID)), &d); err != nil {
		t.Fatal(err)
	}
	agentID := regexp.MustCompile(`^a[0-9a-f]+$`)
	if d.State != fsm.Complete || d.Result != answer || d.Prompt != prompt || d.Agent != "general-purpose" ||
		!agentID.MatchString(d.SessionID) || d.RootSessionID != sessionID || d.NotifiedAt.IsZero() || !d.ReadAt.IsZero() {
		t.Fatalf("recorded: %+v\nhook log: %s", d, readLog(data))
	}
	artifact, err := os.ReadFile(filepath.Join(data, d.ArtifactPath))
	if err != nil || !strings.Contains(string(artifact), "**Session:** "+d.SessionID) || !strings.HasSuffix(string(artifact), answer) {
		t.Fatalf("artifact: %v\n%s", err, artifact)
	}
	// The session's transcript holds the agent's notification where Stop
	// looks for it (an agent ending while the parent works).
	transcripts, _ := filepath.Glob(filepath.Join(c.ConfigDir, "projects", "*", sessionID+".jsonl"))
	if len(transcripts) != 1 {
		t.Fatalf("transcripts of the session: %v", transcripts)
	}
	t.Setenv("CLAUDE_CONFIG_DIR", c.ConfigDir)
	ns, err := claudecode.TranscriptNotifications(transcripts[0])
	if n := last(ns, d.SessionID); err != nil || n.Result != answer || n.Status != "completed" || n.ToolUseID != d.ParentMessageID {
		t.Fatalf("the transcript's notifications: %+v %v", ns, err)
	}
	timeline := delegations(t, c, "timeline", d.ID)
	// SubagentStart and SubagentStop run beside PostToolUse: for an agent
	// this quick they may come before it registered the agent and be
	// ignored, so progress is not required; the rest is, in this order.
	rest := timeline
	for _, kind := range []string{" registered ", " started ", " completed ", " persisted ", " notified "} {
		i := strings.Index(rest, kind)
		if i < 0 {
			t.Fatalf("timeline lacks%sor has it out of order:\n%s", kind, timeline)
		}
		rest = rest[i:]
	}
	if strings.Contains(timeline, "rejected") {
		t.Errorf("refused commands:\n%s", timeline)
	}
	// The registration's idempotency key is the Agent tool call under its
	// session, led by the session's start: the time of the transcript's
	// first entry that has one (Claude Code writes one before it calls the
	// model).
	head, err := os.ReadFile(transcripts[0])
	if err != nil {
		t.Fatal(err)
	}
	var began time.Time
	for line := range strings.Lines(string(head)) {
		var entry struct{ Timestamp time.Time }
		if json.Unmarshal([]byte(line), &entry) == nil && !entry.Timestamp.IsZero() {
			began = entry.Timestamp
			break
		}
	}
	if began.IsZero() {
		t.Fatalf("no entry of the transcript has a time: %.300q", head)
	}
	started := began.UTC().Format("2006-01-02T15:04:05.000Z")
	type event struct{ Kind, IdempotencyKey string }
	var registered event
	for line := range strings.Lines(delegations(t, c, "--json", "events", "--delegation", d.ID)) {
		var e event
		if json.Unmarshal([]byte(line), &e) == nil && e.Kind == "registered" {
			registered = e
			break
		}
	}
	if want := "register:claude:" + started + ":" + sessionID + ":" + d.ParentMessageID; registered.Kind != "registered" || registered.IdempotencyKey != want || !strings.HasPrefix(d.ParentMessageID, "toolu_") {
		t.Errorf("the registration %+v, want the key %q", registered, want)
	}
	if text := delegations(t, c, "list", "--root-session", sessionID); !strings.Contains(text, "**"+d.ID+"**") || !strings.Contains(text, "[complete] [unread]") {
		t.Errorf("list:\n%s", text)
	}

	artifactPath := filepath.Join(data, d.ArtifactPath)
	carries := func(text string) bool {
		return strings.Contains(text, "<delegation-context>") && strings.Contains(text, "`"+d.ID+"`") && strings.Contains(text, artifactPath) &&
			strings.Contains(text, "- `"+d.ID+"`: agent "+d.SessionID)
	}

	// 2. Compact: the SessionStart hook gives Claude Code the block.
	out = c.Run(t, "/compact", "--resume", sessionID)
	hooks := out.HookResponses("SessionStart:compact")
	if len(hooks) != 1 {
		t.Fatalf("SessionStart:compact ran %d times:\n%s", len(hooks), out.Stdout)
	}
	var printed struct {
		HookSpecificOutput struct{ HookEventName, AdditionalContext string }
	}
	if err := json.Unmarshal([]byte(hooks[0]["stdout"].(string)), &printed); err != nil || !carries(printed.HookSpecificOutput.AdditionalContext) {
		t.Fatalf("SessionStart:compact printed %v (%v)", hooks[0]["stdout"], err)
	}

	// 3. Resume: the next model request carries the block twice, the
	// compaction's (kept in the session) and the resume's.
	n := len(api.Requests())
	c.Run(t, "what now", "--resume", sessionID)
	first := api.Requests()[n]
	if first.LastText() != "what now" || first.Count("<delegation-context>") < 2 || !carries(string(first.Body)) {
		t.Fatalf("the first request after compaction and resume has %d blocks; last text %q", first.Count("<delegation-context>"), first.LastText())
	}

	// 4. The MCP tools reach the model (tool search off) and answer from
	// the store, for the session Claude Code runs them in.
	m.mu.Lock()
	m.readID = d.ID
	m.mu.Unlock()
	n = len(api.Requests())
	c.Run(t, "use the tools", "--resume", sessionID)
	for _, tool := range []string{"delegation_list", "delegation_read", "delegation_status", "delegation_cancel"} {
		if !api.Requests()[n].HasTool("mcp__delegations__" + tool) {
			t.Errorf("the model was not offered %s: %v", tool, api.Requests()[n].Tools)
		}
	}
	m.mu.Lock()
	results := m.mcpResults
	m.mu.Unlock()
	if r := results["delegation_list"]; !strings.HasPrefix(r, "## Delegations") || !strings.Contains(r, "**"+d.ID+"**") || !strings.Contains(r, "[complete]") {
		t.Errorf("delegation_list: %q", r)
	}
	var status struct{ ID, Status, Artifact, ChildSession string }
	if err := json.Unmarshal([]byte(results["delegation_status"]), &status); err != nil || status.ID != d.ID || status.Status != "complete" ||
		status.Artifact != artifactPath || status.ChildSession != d.SessionID {
		t.Errorf("delegation_status: %q (%v)", results["delegation_status"], err)
	}
	if r := results["delegation_read"]; r != string(artifact) {
		t.Errorf("delegation_read: %q, want the artifact %q", r, artifact)
	}
	var after fsm.Delegation
	if err := json.Unmarshal([]byte(delegations(t, c, "--json", "show", d.ID)), &after); err != nil || after.ReadAt.IsZero() {
		t.Errorf("after delegation_read the delegation is not read: %+v %v", after, err)
	}
	if got := delegations(t, c, "read", "--root-session", sessionID, d.ID); got != string(artifact) {
		t.Errorf("read: %q, want the artifact", got)
	}
	if log := readLog(data); log != "" {
		t.Errorf("the hooks logged errors:\n%s", log)
	}
}

func readLog(data string) string {
	b, _ := os.ReadFile(filepath.Join(data, "hook-errors.log"))
	return string(b)
}

// last returns the last notification of agent in ns.
func last(ns []claudecode.Notification, agent string) claudecode.Notification {
	for i := len(ns) - 1; i >= 0; i-- {
		if ns[i].TaskID == agent {
			return ns[i]
		}
	}
	return claudecode.Notification{}
}

// stopDaemon stops, when the test ends, the daemon a hook started.
func stopDaemon(t *testing.T, c *hosttest.Claude) {
	t.Cleanup(func() {
		cmd := exec.Command(hosttest.Delegations(t), "--json", "serve", "--detach")
		cmd.Env = c.Environ()
		out, _ := cmd.Output()
		var st struct{ PID int }
		if json.Unmarshal(out, &st) == nil && st.PID > 0 {
			syscall.Kill(st.PID, syscall.SIGTERM)
		}
	})
}
