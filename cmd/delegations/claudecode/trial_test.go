package claudecode_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/delegations/delegations/cmd/delegations/internal/hosttest"
	"github.com/delegations/delegations/fsm"
)

// TestClaudeCodeAsNewUser follows README's set-up as a new user would:
// `delegations install claude-code --mcp` with no CLAUDE_CONFIG_DIR, no
// daemon, tool search left on. A background agent runs, the session is
// compacted, and the resumed session knows the agent and where its result
// is; delegation_list, found through ToolSearch, shows it.
func TestClaudeCodeAsNewUser(t *testing.T) {
	var listed string
	api := hosttest.StartAnthropic(t, func(r *hosttest.MessagesRequest) hosttest.AnthropicReply {
		if id, ok := r.LastToolResult(); ok {
			switch id {
			case "toolu_search":
				return hosttest.AnthropicReply{Tools: []hosttest.ToolUse{{ID: "toolu_list", Name: "mcp__delegations__delegation_list", Input: map[string]any{}}}}
			case "toolu_list":
				listed, _ = r.ToolResult(id)
			}
			return hosttest.AnthropicReply{Text: "Done."}
		}
		last := r.LastText()
		switch {
		case r.Subagent():
			return hosttest.AnthropicReply{Text: answer}
		case strings.HasPrefix(last, "CRITICAL: Respond with TEXT ONLY"):
			return hosttest.AnthropicReply{Text: "Summary."}
		case strings.HasSuffix(last, "launch"):
			// No run_in_background: Claude Code's default is the background.
			return hosttest.AnthropicReply{Tools: []hosttest.ToolUse{{Name: "Agent", Input: map[string]any{"description": "investigate", "prompt": prompt, "subagent_type": "Explore"}}}}
		case strings.HasSuffix(last, "list them"):
			return hosttest.AnthropicReply{Tools: []hosttest.ToolUse{{ID: "toolu_search", Name: "ToolSearch", Input: map[string]any{"query": "select:mcp__delegations__delegation_list"}}}}
		}
		return hosttest.AnthropicReply{Text: "ok"}
	})
	c := hosttest.StartClaude(t, api)
	c.ConfigDir = ""
	stopDaemon(t, c) // the first hook starts one
	delegations(t, c, "install", "claude-code", "--mcp")
	for _, f := range []string{".claude/settings.json", ".claude.json"} {
		if b, err := os.ReadFile(filepath.Join(c.Env.Home, f)); err != nil || !strings.Contains(string(b), hosttest.Delegations(t)) {
			t.Fatalf("~/%s: %v\n%s", f, err, b)
		}
	}

	c.Run(t, "please launch", "--session-id", sessionID)
	c.Run(t, "/compact", "--resume", sessionID)
	n := len(api.Requests())
	c.Run(t, "please list them", "--resume", sessionID)
	var list struct{ Delegations []fsm.Delegation }
	if err := json.Unmarshal([]byte(delegations(t, c, "--json", "list", "--root-session", sessionID)), &list); err != nil ||
		len(list.Delegations) != 1 || list.Delegations[0].State != fsm.Complete {
		t.Fatalf("the store has %+v (%v)", list, err)
	}
	var d fsm.Delegation
	if err := json.Unmarshal([]byte(delegations(t, c, "--json", "show", list.Delegations[0].ID)), &d); err != nil || d.Result != answer {
		t.Fatalf("the delegation's result: %q (%v)", d.Result, err)
	}
	id := list.Delegations[0].ID
	data := filepath.Join(c.Env.DataHome, "opencode", "delegations")
	first := api.Requests()[n]
	if !first.Contains("<delegation-context>") || !first.Contains("`"+id+"`") || !first.Contains("**Artifact:** "+data+"/") {
		t.Fatalf("the first request after compaction lacks the block naming %s and its artifact", id)
	}
	if !strings.Contains(listed, "**"+id+"** |") || !strings.Contains(listed, "[complete] [unread]") {
		t.Fatalf("delegation_list answered %q", listed)
	}
	if log := readLog(data); log != "" {
		t.Errorf("the hooks logged errors:\n%s", log)
	}
}
