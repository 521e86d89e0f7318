package claudecode_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/delegations/delegations/cmd/delegations/claudecode"
	"github.com/delegations/delegations/cmd/delegations/internal/hosttest"
	"github.com/delegations/delegations/fsm"
)

// TestClaudeCodeEarlyStop drives the real Claude Code through an agent
// that ends while its parent still works (the parent runs a slow Bash
// command): the parent's Stop no longer lists the agent, whose
// notification is then only in the transcript. A second Stop hook
// captures that Stop's input and the transcript as it stood; the test
// checks the premise (unlisted, notification in the transcript, found by
// TranscriptNotifications) and what the store recorded.
func TestClaudeCodeEarlyStop(t *testing.T) {
	api := hosttest.StartAnthropic(t, func(r *hosttest.MessagesRequest) hosttest.AnthropicReply {
		last := r.LastText()
		switch {
		case r.Subagent():
			return hosttest.AnthropicReply{Text: answer}
		case strings.Contains(last, "<task-notification>"):
			return hosttest.AnthropicReply{Text: "Noted the result."}
		case strings.HasSuffix(last, "launch early"):
			return hosttest.AnthropicReply{Tools: []hosttest.ToolUse{
				{Name: "Agent", Input: map[string]any{"description": "investigate flaky test", "prompt": prompt, "subagent_type": "general-purpose", "run_in_background": true}},
				{Name: "Bash", Input: map[string]any{"command": "sleep 6", "description": "wait"}},
			}}
		}
		if _, ok := r.LastToolResult(); ok {
			return hosttest.AnthropicReply{Text: "Done."}
		}
		return hosttest.AnthropicReply{Text: "ok"}
	})
	data := filepath.Join(t.TempDir(), "data")
	c := hosttest.StartClaude(t, api, "DELEGATIONS_DATA="+data)
	stopDaemon(t, c)
	delegations(t, c, "install", "claude-code", "--user")

	// The capturing Stop hook, beside ours: the first Stop's input, and
	// the transcripts as they stood, under the projects folder.
	snap := filepath.Join(c.ConfigDir, "projects", "snapshot")
	script := filepath.Join(t.TempDir(), "capture.sh")
	err := os.WriteFile(script, []byte("#!/bin/sh\n[ -e '"+snap+"/stop.json' ] && exit 0\nmkdir -p '"+snap+"'\ncat > '"+snap+"/stop.json.tmp'\n"+
		"for f in \"$CLAUDE_CONFIG_DIR\"/projects/*/*.jsonl; do case \"$f\" in */snapshot/*) ;; *) cp \"$f\" '"+snap+"/';; esac; done\n"+
		"mv '"+snap+"/stop.json.tmp' '"+snap+"/stop.json'\n"), 0o755)
	if err != nil {
		t.Fatal(err)
	}
	settingsPath := filepath.Join(c.ConfigDir, "settings.json")
	var settings map[string]any
	b, err := os.ReadFile(settingsPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &settings); err != nil {
		t.Fatal(err)
	}
	hooks := settings["hooks"].(map[string]any)
	hooks["Stop"] = append(hooks["Stop"].([]any), map[string]any{"hooks": []any{map[string]any{"type": "command", "command": script, "timeout": 10}}})
	if b, err = json.Marshal(settings); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(settingsPath, b, 0o600); err != nil {
		t.Fatal(err)
	}

	c.Run(t, "please launch early", "--session-id", sessionID, "--allowedTools", "Bash")

	var list struct{ Delegations []fsm.Delegation }
	if err := json.Unmarshal([]byte(delegations(t, c, "--json", "list", "--root-session", sessionID)), &list); err != nil || len(list.Delegations) != 1 {
		t.Fatalf("%+v %v\nhook log: %s", list, err, readLog(data))
	}
	var d fsm.Delegation
	if err := json.Unmarshal([]byte(delegations(t, c, "--json", "show", list.Delegations[0].ID)), &d); err != nil {
		t.Fatal(err)
	}
	if d.State != fsm.Complete || d.Result != answer {
		t.Fatalf("recorded: %s %q %q", d.State, d.Result, d.Error)
	}

	var stop claudecode.Input
	b, err = os.ReadFile(filepath.Join(snap, "stop.json"))
	if err != nil || json.Unmarshal(b, &stop) != nil {
		t.Fatalf("no Stop captured: %v %s", err, b)
	}
	if stop.BackgroundTasks == nil || slices.ContainsFunc(*stop.BackgroundTasks, func(bt claudecode.BackgroundTask) bool { return bt.ID == d.SessionID }) {
		t.Fatalf("the first Stop still lists the agent (the parent did not outlast it): %s", b)
	}
	t.Setenv("CLAUDE_CONFIG_DIR", c.ConfigDir)
	ns, err := claudecode.TranscriptNotifications(filepath.Join(snap, sessionID+".jsonl"))
	if n := last(ns, d.SessionID); err != nil || n.Status != "completed" || n.Result != answer || n.ToolUseID != d.ParentMessageID {
		t.Fatalf("the transcript at the first Stop: %+v %v", ns, err)
	}
	if log := readLog(data); log != "" {
		t.Errorf("the hooks logged errors:\n%s", log)
	}
}
