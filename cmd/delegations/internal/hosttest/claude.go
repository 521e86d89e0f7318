package hosttest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// ClaudeTurnTimeout bounds one headless Claude Code run, so that a broken
// run fails the test instead of hanging it. It is a guard, not a timing
// assertion: a run here takes about a second.
const ClaudeTurnTimeout = 3 * time.Minute

// Claude runs the real Claude Code headless (-p, stream-json) in a scratch
// environment against a fake Anthropic API.
type Claude struct {
	Bin       string // the claude binary
	Env       *Env
	ConfigDir string // CLAUDE_CONFIG_DIR
	Project   string // the working directory
	Extra     []string
}

// StartClaude prepares a Claude Code in scratch directories (HOME, XDG,
// TMPDIR, CLAUDE_CONFIG_DIR, CLAUDE_CODE_TMPDIR) with a project directory,
// talking to api; extra is more of its environment ("KEY=value").
func StartClaude(tb testing.TB, api *Anthropic, extra ...string) *Claude {
	tb.Helper()
	c := &Claude{Bin: Host(tb, "claude-code"), Env: Scratch(tb)}
	c.ConfigDir = filepath.Join(c.Env.Home, ".claude")
	c.Project = filepath.Join(c.Env.Home, "project")
	for _, d := range []string{c.ConfigDir, c.Project} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			tb.Fatalf("hosttest: %v", err)
		}
	}
	c.Extra = append(api.AnthropicEnv(), extra...)
	return c
}

// Environ is the environment Claude Code runs with (and so its hooks and
// MCP servers, plus what it adds).
// An empty ConfigDir leaves CLAUDE_CONFIG_DIR unset: Claude Code then
// uses ~/.claude and ~/.claude.json, as for a user who never set it.
func (c *Claude) Environ(extra ...string) []string {
	env := []string{"CLAUDE_CODE_TMPDIR=" + c.Env.TmpDir}
	if c.ConfigDir != "" {
		env = append(env, "CLAUDE_CONFIG_DIR="+c.ConfigDir)
	}
	env = append(env, c.Extra...)
	return c.Env.Environ(append(env, extra...)...)
}

// Output is what a headless run printed: its stream-json messages.
type Output struct {
	Messages []map[string]any
	Stdout   string
	Stderr   string
}

// Run runs `claude -p PROMPT --output-format stream-json --verbose ARGS...`
// to its end and fails the test if it fails.
func (c *Claude) Run(tb testing.TB, prompt string, args ...string) Output {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), ClaudeTurnTimeout)
	defer cancel()
	all := append([]string{"-p", prompt, "--output-format", "stream-json", "--verbose"}, args...)
	cmd := exec.CommandContext(ctx, c.Bin, all...)
	cmd.Dir = c.Project
	cmd.Env = c.Environ()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	out := Output{Stdout: stdout.String(), Stderr: stderr.String()}
	sc := bufio.NewScanner(strings.NewReader(out.Stdout))
	sc.Buffer(nil, 64<<20)
	for sc.Scan() {
		var m map[string]any
		if json.Unmarshal(sc.Bytes(), &m) == nil {
			out.Messages = append(out.Messages, m)
		}
	}
	if err != nil {
		tb.Fatalf("claude %s: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(all, " "), err, tail(out.Stdout), tail(out.Stderr))
	}
	return out
}

// Result returns the final result message.
func (o Output) Result() (map[string]any, error) {
	for i := len(o.Messages) - 1; i >= 0; i-- {
		if o.Messages[i]["type"] == "result" {
			return o.Messages[i], nil
		}
	}
	return nil, fmt.Errorf("no result message in:\n%s", tail(o.Stdout))
}

// HookResponses returns the hook_response messages of the hook named
// name (e.g. "SessionStart:compact").
func (o Output) HookResponses(name string) []map[string]any {
	var out []map[string]any
	for _, m := range o.Messages {
		if m["type"] == "system" && m["subtype"] == "hook_response" && m["hook_name"] == name {
			out = append(out, m)
		}
	}
	return out
}

func tail(s string) string {
	const max = 8 << 10
	if len(s) > max {
		return "..." + s[len(s)-max:]
	}
	return s
}
