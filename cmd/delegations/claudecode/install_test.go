package claudecode

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

const bin = "/opt/my tools/delegations"

func options(dir string) InstallOptions {
	return InstallOptions{
		Settings: filepath.Join(dir, ".claude", "settings.json"),
		MCPFile:  filepath.Join(dir, ".mcp.json"),
		Binary:   bin,
		Global:   []string{"--data", "/var/lib/d"},
		MCP:      true,
	}
}

func write(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func read(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// The user's settings: other hooks on the same events, other keys, other
// allow rules, another MCP server.
const (
	userSettings = `{
  "model": "opus",
  "hooks": {
    "PostToolUse": [{"matcher": "Bash", "hooks": [{"type": "command", "command": "lint.sh"}]}],
    "Stop": [{"hooks": [{"type": "command", "command": "notify-send done", "timeout": 3}]}],
    "Notification": [{"hooks": [{"type": "command", "command": "beep"}]}]
  },
  "permissions": {"allow": ["Bash(ls:*)"], "deny": ["Read(./.env)"]},
  "env": {"A": "1"}
}`
	userMCP = `{"mcpServers": {"other": {"type": "stdio", "command": "other-server"}}}`
)

func normalise(t *testing.T, s string) string {
	t.Helper()
	var v any
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		t.Fatalf("%v:\n%s", err, s)
	}
	b, _ := json.Marshal(v)
	return string(b)
}

// TestInstallMergesAndUninstalls: install adds every hook beside the
// user's, keeps every other setting and their order; a second install
// changes no byte; uninstall gives back the user's settings.
func TestInstallMergesAndUninstalls(t *testing.T) {
	dir := t.TempDir()
	o := options(dir)
	write(t, o.Settings, userSettings)
	write(t, o.MCPFile, userMCP)
	o.EnableProjectServer = true

	report, err := Install(o)
	if err != nil {
		t.Fatal(err)
	}
	got := read(t, o.Settings)
	var s struct {
		Model string
		Hooks map[string][]struct {
			Matcher string
			Hooks   []struct {
				Type, Command string
				Timeout       int
			}
		}
		Permissions           struct{ Allow, Deny []string }
		EnabledMcpjsonServers []string
		Env                   map[string]string
	}
	if err := json.Unmarshal([]byte(got), &s); err != nil {
		t.Fatal(err)
	}
	cmd := `'/opt/my tools/delegations' --data /var/lib/d hook claude-code`
	for _, h := range hookEvents {
		groups := s.Hooks[h.event]
		last := groups[len(groups)-1]
		if last.Matcher != h.matcher || len(last.Hooks) != 1 || last.Hooks[0].Command != cmd || last.Hooks[0].Timeout != HookTimeout || last.Hooks[0].Type != "command" {
			t.Errorf("%s: %+v", h.event, groups)
		}
	}
	if len(s.Hooks["PostToolUse"]) != 2 || s.Hooks["PostToolUse"][0].Hooks[0].Command != "lint.sh" ||
		len(s.Hooks["Stop"]) != 2 || s.Hooks["Stop"][0].Hooks[0].Command != "notify-send done" || len(s.Hooks["Notification"]) != 1 {
		t.Errorf("the user's hooks changed: %+v", s.Hooks)
	}
	if s.Model != "opus" || s.Env["A"] != "1" || !slices.Equal(s.Permissions.Allow, []string{"Bash(ls:*)", AllowRule}) ||
		!slices.Equal(s.Permissions.Deny, []string{"Read(./.env)"}) || !slices.Equal(s.EnabledMcpjsonServers, []string{ServerName}) {
		t.Errorf("settings: %+v", s)
	}
	if i, j := strings.Index(got, `"model"`), strings.Index(got, `"env"`); i < 0 || j < i {
		t.Errorf("key order changed:\n%s", got)
	}
	var m struct {
		McpServers map[string]struct {
			Type, Command string
			Args          []string
		}
	}
	json.Unmarshal([]byte(read(t, o.MCPFile)), &m)
	if srv := m.McpServers[ServerName]; srv.Type != "stdio" || srv.Command != bin || !slices.Equal(srv.Args, []string{"--data", "/var/lib/d", "mcp"}) || m.McpServers["other"].Command != "other-server" {
		t.Errorf("mcp: %+v", m)
	}
	if len(report) != len(hookEvents)+3 {
		t.Errorf("report: %q", report)
	}

	// Twice: nothing changes.
	settingsBefore, mcpBefore := read(t, o.Settings), read(t, o.MCPFile)
	report, err = Install(o)
	if err != nil {
		t.Fatal(err)
	}
	if read(t, o.Settings) != settingsBefore || read(t, o.MCPFile) != mcpBefore {
		t.Fatal("a second install changed the files")
	}
	for _, line := range report {
		if !strings.Contains(line, "already") {
			t.Errorf("second install reports %q", line)
		}
	}

	o.Uninstall = true
	if _, err := Install(o); err != nil {
		t.Fatal(err)
	}
	if got, want := normalise(t, read(t, o.Settings)), normalise(t, userSettings); got != want {
		t.Errorf("uninstall left\n%s\nwant\n%s", got, want)
	}
	if got, want := normalise(t, read(t, o.MCPFile)), normalise(t, userMCP); got != want {
		t.Errorf("uninstall left\n%s\nwant\n%s", got, want)
	}
}

// TestInstallFresh: no files yet; uninstall removes every entry again.
func TestInstallFresh(t *testing.T) {
	dir := t.TempDir()
	o := options(dir)
	o.Global = nil
	o.Permissions = filepath.Join(dir, ".claude", "settings.local.json")
	if _, err := Install(o); err != nil {
		t.Fatal(err)
	}
	if local := read(t, o.Permissions); !strings.Contains(local, `"mcp__delegations"`) || strings.Contains(read(t, o.Settings), "mcp__") {
		t.Fatalf("the allow rule is not (only) in %s:\n%s", o.Permissions, local)
	}
	if fi, err := os.Stat(o.Settings); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("settings: %v %v", fi, err)
	}
	if !strings.Contains(read(t, o.Settings), `"command": "'/opt/my tools/delegations' hook claude-code"`) {
		t.Fatal(read(t, o.Settings))
	}
	o.Uninstall = true
	if _, err := Install(o); err != nil {
		t.Fatal(err)
	}
	if got := normalise(t, read(t, o.Settings)); got != "{}" {
		t.Errorf("settings after uninstall: %s", got)
	}
	if got := normalise(t, read(t, o.Permissions)); got != "{}" {
		t.Errorf("local settings after uninstall: %s", got)
	}
	if got := normalise(t, read(t, o.MCPFile)); got != "{}" {
		t.Errorf("mcp after uninstall: %s", got)
	}
}

// TestReinstallReplaces: a reinstall with another binary path or other
// flags replaces the hooks and the server of the earlier install rather
// than adding a second set (every event would be recorded twice); an
// uninstall after an upgrade (the old path gone) removes them; hooks of
// programs not named delegations stay.
func TestReinstallReplaces(t *testing.T) {
	dir := t.TempDir()
	foreign := `{"hooks": {"Stop": [{"hooks": [{"type": "command", "command": "/usr/bin/other hook claude-code"}]}]}}`
	o := options(dir)
	write(t, o.Settings, foreign)
	old := o
	old.Binary = "/usr/local/Cellar/delegations/1.0/bin/delegations"
	old.Global = []string{"--data", "/old"}
	if _, err := Install(old); err != nil {
		t.Fatal(err)
	}
	report, err := Install(o)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(strings.Join(report, "\n"), "replaced") {
		t.Errorf("report: %q", report)
	}
	got := read(t, o.Settings)
	if strings.Contains(got, "Cellar") || strings.Count(got, "my tools/delegations") != len(hookEvents) || !strings.Contains(got, "/usr/bin/other") {
		t.Fatalf("after a reinstall:\n%s", got)
	}
	if mcp := read(t, o.MCPFile); strings.Contains(mcp, "Cellar") || !strings.Contains(mcp, "my tools") {
		t.Fatalf("the server after a reinstall:\n%s", mcp)
	}
	before := got
	if _, err := Install(o); err != nil || read(t, o.Settings) != before {
		t.Fatalf("a third install changed the file: %v", err)
	}
	upgraded := o
	upgraded.Binary = "/usr/local/Cellar/delegations/2.0/bin/delegations"
	upgraded.Uninstall = true
	if _, err := Install(upgraded); err != nil {
		t.Fatal(err)
	}
	if got := normalise(t, read(t, o.Settings)); got != normalise(t, foreign) {
		t.Fatalf("after uninstalling: %s", got)
	}
	if got := normalise(t, read(t, o.MCPFile)); got != "{}" {
		t.Fatalf("the server after uninstalling: %s", got)
	}
}

// TestInstallAnotherServerRefused: a server named delegations that runs
// another program is not ours to replace.
func TestInstallAnotherServerRefused(t *testing.T) {
	dir := t.TempDir()
	o := options(dir)
	write(t, o.MCPFile, `{"mcpServers": {"delegations": {"type": "stdio", "command": "/usr/bin/someone-else"}}}`)
	if _, err := Install(o); err == nil || !strings.Contains(err.Error(), "already configured") {
		t.Fatalf("another program's server: %v", err)
	}
}

// TestInstallKeepsSymlinks: a settings file that is a symlink (dotfiles
// kept in a repository) stays a symlink; the file it leads to is edited.
func TestInstallKeepsSymlinks(t *testing.T) {
	dir := t.TempDir()
	o := options(dir)
	o.MCP = false
	target := filepath.Join(t.TempDir(), "dotfiles", "settings.json")
	write(t, target, userSettings)
	if err := os.MkdirAll(filepath.Dir(o.Settings), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, o.Settings); err != nil {
		t.Fatal(err)
	}
	if _, err := Install(o); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Lstat(o.Settings); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Fatalf("the symlink was replaced: %v %v", fi, err)
	}
	if !strings.Contains(read(t, target), "hook claude-code") {
		t.Fatalf("the target was not edited:\n%s", read(t, target))
	}
}

// TestInstallMovesOldProjectHooks: hooks an earlier version put into the
// file OldSettings names are moved out of it.
func TestInstallMovesOldProjectHooks(t *testing.T) {
	dir := t.TempDir()
	o := options(dir)
	o.MCP = false
	if _, err := Install(o); err != nil {
		t.Fatal(err)
	}
	o.OldSettings = o.Settings
	o.Settings = filepath.Join(dir, ".claude", "settings.local.json")
	if _, err := Install(o); err != nil {
		t.Fatal(err)
	}
	if got := normalise(t, read(t, o.OldSettings)); got != "{}" {
		t.Fatalf("old settings: %s", got)
	}
	if n := strings.Count(read(t, o.Settings), "hook claude-code"); n != len(hookEvents) {
		t.Fatalf("%d hooks in the new file", n)
	}
}

// TestInstallRefusesInvalidJSON: a file Claude Code could not read either
// is left as it is, byte for byte, and so is the other file.
func TestInstallRefusesInvalidJSON(t *testing.T) {
	for _, tc := range []struct{ name, settings, mcp string }{
		{"syntax", `{"hooks": {`, userMCP},
		{"array", `[]`, userMCP},
		{"trailing", `{} {}`, userMCP},
		{"hooks not an object", `{"hooks": []}`, userMCP},
		{"event not an array", `{"hooks": {"Stop": {}}}`, userMCP},
		{"allow not an array", `{"permissions": {"allow": "x"}}`, userMCP},
		{"mcp syntax", userSettings, `{"mcpServers": `},
		{"mcpServers not an object", userSettings, `{"mcpServers": []}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, uninstall := range []bool{false, true} {
				dir := t.TempDir()
				o := options(dir)
				o.Uninstall = uninstall
				write(t, o.Settings, tc.settings)
				write(t, o.MCPFile, tc.mcp)
				_, err := Install(o)
				if !errors.Is(err, ErrNotJSON) {
					t.Errorf("uninstall=%v: err = %v, want ErrNotJSON", uninstall, err)
				}
				if read(t, o.Settings) != tc.settings || read(t, o.MCPFile) != tc.mcp {
					t.Errorf("uninstall=%v: a file changed", uninstall)
				}
				if ents, _ := os.ReadDir(filepath.Dir(o.Settings)); len(ents) != 1 {
					t.Errorf("temporary files left: %v", ents)
				}
			}
		})
	}
}

func TestShellWords(t *testing.T) {
	for _, words := range [][]string{
		{"/usr/bin/delegations", "hook", "claude-code"},
		{"/opt/my tools/it's", "--data", "/a b/c", "hook", "claude-code"},
		{"/x/$HOME`x`", "--data", `"q"\`, "hook", "claude-code"},
	} {
		if got := shellSplit(shellJoin(words)); !slices.Equal(got, words) {
			t.Errorf("%q: round trip gives %q", words, got)
		}
	}
	if got := shellSplit(`"/a b/delegations" hook claude-code`); !slices.Equal(got, []string{"/a b/delegations", "hook", "claude-code"}) {
		t.Errorf("double quotes: %q", got)
	}
}
