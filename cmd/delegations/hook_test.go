package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/delegations/delegations/cmd/delegations/claudecode"
	"github.com/delegations/delegations/projection"
)

// TestHookNeverFailsTheHost: whatever goes wrong, `hook claude-code`
// exits 0 with nothing on stdout (exit 2 would block Claude Code's action)
// and appends the error to the log in the data directory.
func TestHookNeverFailsTheHost(t *testing.T) {
	data := t.TempDir()
	cases := []struct {
		name  string
		args  []string
		stdin string
		want  string // in the log
	}{
		{"not JSON", []string{"hook", "claude-code"}, "{not json", "decode the hook input"},
		{"unknown host", []string{"hook", "opencode"}, `{}`, `unknown host "opencode"`},
		{"no host", []string{"hook"}, `{}`, "want 1 argument"},
		{"bad session", []string{"hook", "claude-code"}, `{"hook_event_name":"SessionStart","source":"compact","session_id":"../etc"}`, "session_id"},
		{"relative cwd", []string{"hook", "claude-code"}, `{"hook_event_name":"PostToolUse","tool_name":"Agent","session_id":"s1","tool_use_id":"t1","cwd":"proj","tool_response":{"status":"async_launched","agentId":"a1"}}`, `cwd "proj" is not absolute`},
		{"data is a file", []string{"--data", "/dev/null/x", "hook", "claude-code"}, `{"hook_event_name":"Stop","session_id":"s1"}`, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"--data", data}, tc.args...)
			if tc.args[0] == "--data" {
				args = tc.args
			}
			r := runBin(t, tc.stdin, args...)
			if r.code != 0 || r.stdout != "" {
				t.Fatalf("exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
			}
			if tc.want == "" {
				return
			}
			log, err := os.ReadFile(filepath.Join(data, hookLogName))
			if err != nil || !strings.Contains(string(log), tc.want) {
				t.Fatalf("log: %v\n%s", err, log)
			}
		})
	}
}

// TestHookSessionStart: a session with a running delegation gets its
// block as SessionStart additional context, with or without a daemon.
func TestHookSessionStart(t *testing.T) {
	data := t.TempDir()
	proj := t.TempDir()
	post := `{"hook_event_name":"PostToolUse","tool_name":"Agent","session_id":"s1","tool_use_id":"toolu_1","cwd":"` + proj +
		`","tool_input":{"prompt":"Find it","subagent_type":"Explore"},"tool_response":{"status":"async_launched","agentId":"a1"}}`
	if r := runBin(t, post, "--data", data, "hook", "claude-code"); r.code != 0 || r.stdout != "" {
		t.Fatalf("PostToolUse: %+v", r)
	}
	check := func(when string) {
		t.Helper()
		r := runBin(t, `{"hook_event_name":"SessionStart","source":"compact","session_id":"s1"}`, "--data", data, "hook", "claude-code")
		var out struct {
			HookSpecificOutput struct{ HookEventName, AdditionalContext string }
		}
		if err := json.Unmarshal([]byte(r.stdout), &out); err != nil || r.code != 0 {
			t.Fatalf("%s: %v %+v", when, err, r)
		}
		if c := out.HookSpecificOutput.AdditionalContext; out.HookSpecificOutput.HookEventName != "SessionStart" ||
			!strings.Contains(c, "## Running Delegations") || !strings.Contains(c, "(Explore)") || !strings.Contains(c, "Find it") {
			t.Fatalf("%s: %s", when, r.stdout)
		}
	}
	check("without a daemon")
	d := startDaemon(t, data)
	check("through the daemon")
	d.stop(os.Interrupt)
	if _, err := os.Stat(filepath.Join(data, hookLogName)); err == nil {
		t.Fatalf("errors logged: %s", readFile(t, filepath.Join(data, hookLogName)))
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, _ := os.ReadFile(path)
	return string(b)
}

// TestInstallVerb: install writes the running binary's absolute path,
// refuses a settings file that is not JSON (exit 1, untouched), and says
// how to undo.
func TestInstallVerb(t *testing.T) {
	proj := t.TempDir()
	r := runBin(t, "", "install", "claude-code", "--project", proj, "--mcp")
	if r.code != 0 || !strings.Contains(r.stdout, "undo with: delegations install claude-code --project "+proj+" --mcp --uninstall") {
		t.Fatalf("%+v", r)
	}
	// This machine's paths stay out of settings.json, which teams commit.
	if _, err := os.Stat(filepath.Join(proj, ".claude", "settings.json")); err == nil {
		t.Fatalf("install wrote settings.json:\n%s", readFile(t, filepath.Join(proj, ".claude", "settings.json")))
	}
	settings := readFile(t, filepath.Join(proj, ".claude", "settings.local.json"))
	if !strings.Contains(settings, binary(t)+" hook claude-code") {
		t.Fatalf("settings:\n%s", settings)
	}
	// Claude Code honours a project's allow rules in -p mode only there.
	if local := readFile(t, filepath.Join(proj, ".claude", "settings.local.json")); !strings.Contains(local, `"mcp__delegations"`) {
		t.Fatalf("settings.local.json:\n%s", local)
	}
	if mcp := readFile(t, filepath.Join(proj, ".mcp.json")); !strings.Contains(mcp, `"command": "`+binary(t)+`"`) {
		t.Fatalf(".mcp.json:\n%s", mcp)
	}
	bad := "{\"hooks\": {\n"
	if err := os.WriteFile(filepath.Join(proj, ".claude", "settings.json"), []byte(bad), 0o644); err != nil {
		t.Fatal(err)
	}
	r = runBin(t, "", "install", "claude-code", "--project", proj)
	if r.code != 1 || !strings.Contains(r.stderr, "not valid settings JSON") || readFile(t, filepath.Join(proj, ".claude", "settings.json")) != bad {
		t.Fatalf("invalid settings: %+v", r)
	}
	if r := runBin(t, "", "install", "claude-code", "--project", proj, "--user"); r.code != 2 {
		t.Fatalf("--project with --user: %+v", r)
	}
}

// TestHookLockedLog: another process holds the log and no daemon runs
// (a second CLI, a replay): the hook gives up after the lock timeout,
// exits 0 and logs why, rather than holding Claude Code up.
func TestHookLockedLog(t *testing.T) {
	data := t.TempDir()
	s, err := projection.Open(data, projection.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	r := runBin(t, `{"hook_event_name":"SessionStart","source":"resume","session_id":"s1"}`, "--data", data, "hook", "claude-code")
	if r.code != 0 || r.stdout != "" {
		t.Fatalf("%+v", r)
	}
	if log := readFile(t, filepath.Join(data, hookLogName)); !strings.Contains(log, "locked") || !strings.Contains(log, `"source":"resume"`) {
		t.Fatalf("log:\n%s", log)
	}
}

// TestHookPanics: a panic in a hook is logged and the hook exits 0 with
// nothing on stdout (a crash would exit 2 and block Claude Code).
func TestHookPanics(t *testing.T) {
	data := t.TempDir()
	old := hookFunc
	defer func() { hookFunc = old }()
	hookFunc = func(context.Context, []byte, claudecode.Connect) ([]byte, error) { panic("boom") }
	r := cli(t, data, `{"hook_event_name":"Stop","session_id":"s1"}`, "hook", "claude-code")
	if r.code != 0 || r.stdout != "" {
		t.Fatalf("%+v", r)
	}
	log, err := os.ReadFile(filepath.Join(data, hookLogName))
	if err != nil || !strings.Contains(string(log), "panic: boom") {
		t.Fatalf("log: %v\n%s", err, log)
	}
}

// TestInstallRecordsInvokedPath: installed through a symlink (a package
// manager's bin directory), the hooks run the symlink, which survives an
// upgrade, not the versioned file it leads to.
func TestInstallRecordsInvokedPath(t *testing.T) {
	proj := t.TempDir()
	link := filepath.Join(t.TempDir(), "bin", "delegations")
	if err := os.MkdirAll(filepath.Dir(link), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(binary(t), link); err != nil {
		t.Fatal(err)
	}
	r, err := execBin(link, "", "install", "claude-code", "--project", proj)
	if err != nil || r.code != 0 {
		t.Fatalf("%+v %v", r, err)
	}
	if settings := readFile(t, filepath.Join(proj, ".claude", "settings.local.json")); !strings.Contains(settings, `"`+link+` hook claude-code"`) {
		t.Fatalf("settings:\n%s", settings)
	}
}

// TestHookStartsDaemon: a hook that finds no daemon starts one and goes
// through it, so that hooks running at once never compete for the log's
// lock. Its output stays clean (SessionStart's JSON), and the first hook's
// extra cost is logged.
func TestHookStartsDaemon(t *testing.T) {
	data := t.TempDir()
	proj := t.TempDir()
	on := []string{"DELEGATIONS_HOOK_DAEMON=1"}
	t.Cleanup(func() {
		r, _ := execBinEnv(binary(t), on, "", "--data", data, "--json", "serve", "--detach")
		var st struct{ PID int }
		if json.Unmarshal([]byte(r.stdout), &st) == nil && st.PID > 0 {
			syscall.Kill(st.PID, syscall.SIGTERM)
		}
	})
	post := `{"hook_event_name":"PostToolUse","tool_name":"Agent","session_id":"s1","tool_use_id":"toolu_1","cwd":"` + proj +
		`","tool_input":{"prompt":"Find it","subagent_type":"Explore"},"tool_response":{"status":"async_launched","agentId":"a1"}}`
	bin := binary(t)
	start := time.Now()
	r, err := execBinEnv(bin, on, post, "--data", data, "hook", "claude-code")
	first := time.Since(start)
	if err != nil || r.code != 0 || r.stdout != "" {
		t.Fatalf("PostToolUse: %+v %v", r, err)
	}
	// A daemon serves now: the log is locked by it, and hooks go through it.
	r, err = execBinEnv(binary(t), on, "", "--data", data, "--json", "serve", "--detach")
	if err != nil || r.code != 0 {
		t.Fatalf("serve --detach: %+v %v", r, err)
	}
	var st struct{ PID int }
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil || st.PID == 0 {
		t.Fatalf("no daemon answers: %q", r.stdout)
	}
	start = time.Now()
	r, err = execBinEnv(bin, on, `{"hook_event_name":"SessionStart","source":"compact","session_id":"s1"}`, "--data", data, "hook", "claude-code")
	next := time.Since(start)
	if err != nil || r.code != 0 || !strings.HasPrefix(r.stdout, `{"hookSpecificOutput":`) || !strings.Contains(r.stdout, "Find it") {
		t.Fatalf("SessionStart through the daemon: %+v %v", r, err)
	}
	if log := readFile(t, filepath.Join(data, hookLogName)); log != "" {
		t.Fatalf("errors logged: %s", log)
	}
	t.Logf("first hook (starting the daemon) %s, next hook %s", first, next)
}
