package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/delegations/delegations/projection"
	"github.com/delegations/delegations/projection/projectid"
)

type result struct {
	stdout, stderr string
	code           int
}

// cli runs the program in-process against data directory data.
func cli(t *testing.T, data, stdin string, args ...string) result {
	t.Helper()
	var out, errOut bytes.Buffer
	err := run(context.Background(), append([]string{"--data", data}, args...), strings.NewReader(stdin), &out, &errOut)
	return result{out.String(), errOut.String(), exitCode(err)}
}

func mustCLI(t *testing.T, data, stdin string, args ...string) string {
	t.Helper()
	r := cli(t, data, stdin, args...)
	if r.code != 0 {
		t.Fatalf("delegations %s: exit %d\nstderr: %s", strings.Join(args, " "), r.code, r.stderr)
	}
	return r.stdout
}

func registerArgs() []string {
	return []string{"register", "--root-session", "ses_root", "--parent-session", "ses_parent", "--agent", "researcher", "--project", "0123456789abcdef", "--prompt", "Find the flaky test"}
}

// TestNewcomerFlow is the README's tour: register, start, complete, show,
// then a late progress refused with a clear message and exit 1.
func TestNewcomerFlow(t *testing.T) {
	data := t.TempDir()
	id := strings.TrimSpace(mustCLI(t, data, "", registerArgs()...))
	if _, err := idArg(id); err != nil {
		t.Fatalf("register printed %q: %v", id, err)
	}
	if out := mustCLI(t, data, "", "start", "--session", "ses_child", id); out != id+" running\n" {
		t.Fatalf("start printed %q", out)
	}
	mustCLI(t, data, "", "progress", "--message", "half way", id)
	if out := mustCLI(t, data, "The cache races.\nDetails follow.", "complete", id); out != id+" complete\n" {
		t.Fatalf("complete printed %q", out)
	}

	var rec map[string]any
	if err := json.Unmarshal([]byte(mustCLI(t, data, "", "--json", "show", id)), &rec); err != nil {
		t.Fatal(err)
	}
	if rec["status"] != "complete" || rec["result"] != "The cache races.\nDetails follow." ||
		rec["title"] != "The cache races." || rec["sessionID"] != "ses_child" || rec["version"] != 5.0 {
		t.Fatalf("show --json: %v", rec)
	}
	text := mustCLI(t, data, "", "show", id)
	for _, want := range []string{"Status:       complete", "Title:        The cache races.", "Result:\n  The cache races.\n  Details follow.\n"} {
		if !strings.Contains(text, want) {
			t.Fatalf("show text lacks %q:\n%s", want, text)
		}
	}

	late := cli(t, data, "", "progress", "--message", "too late", id)
	if late.code != 1 || !strings.Contains(late.stderr, "is already complete; refusing progressed") {
		t.Fatalf("late progress: exit %d, stderr %q", late.code, late.stderr)
	}
	late = cli(t, data, "", "--json", "progress", "--message", "too late", id)
	var jerr struct {
		Error struct{ Code, Message string }
	}
	if late.code != 1 || json.Unmarshal([]byte(late.stdout), &jerr) != nil || jerr.Error.Code != "terminal" {
		t.Fatalf("late progress --json: exit %d, stdout %q", late.code, late.stdout)
	}

	events := mustCLI(t, data, "", "events", "--delegation", id)
	lines := strings.Split(strings.TrimSpace(events), "\n")
	if len(lines) != 7 || !strings.Contains(lines[6], "rejected") || !strings.Contains(lines[6], "refused progressed: delegation was already complete") {
		t.Fatalf("events:\n%s", events)
	}
	jl := mustCLI(t, data, "", "--json", "events", "--from", "4")
	var first struct {
		Seq     uint64
		Kind    string
		Result  string
		Refused string
	}
	if err := json.Unmarshal([]byte(strings.Split(jl, "\n")[0]), &first); err != nil || first.Seq != 4 || first.Kind != "completed" {
		t.Fatalf("events --json --from 4: %q (%v)", jl, err)
	}
	if n := strings.Count(jl, "\n"); n != 4 {
		t.Fatalf("events --from 4 printed %d lines, want 4", n)
	}
}

func TestExitCodesAndMessages(t *testing.T) {
	data := t.TempDir()
	id := strings.TrimSpace(mustCLI(t, data, "", registerArgs()...))
	cases := []struct {
		name   string
		args   []string
		code   int
		stderr string
	}{
		{"no verb", nil, 2, "no verb"},
		{"unknown verb", []string{"frobnicate"}, 2, `unknown verb "frobnicate"`},
		{"missing flags", []string{"register", "--agent", "a", "--project", "p"}, 2, "missing --root-session, --parent-session"},
		{"no project", []string{"register", "--root-session", "r", "--parent-session", "p", "--agent", "a"}, 2, "give --project ID or --project-dir DIR"},
		{"flag after id", []string{"progress", id, "--message", "x"}, 2, "put flags before the id"},
		{"no id", []string{"show"}, 2, "want 1 argument(s), got 0"},
		{"bad flag", []string{"show", "--nope", id}, 2, "flag provided but not defined: -nope"},
		{"fail without error", []string{"fail", id}, 2, "missing --error"},
		{"traversal id", []string{"show", "../../etc/passwd"}, 1, "want adjective-color-animal"},
		{"unknown id", []string{"complete", "--result", "x", "unknown-grey-owl"}, 1, `delegation "unknown-grey-owl" not found in `},
		{"bad session", []string{"register", "--root-session", "../x", "--parent-session", "p", "--agent", "a", "--project", "p"}, 1, "invalid root session id"},
		{"bad timeout", []string{"register", "--root-session", "r", "--parent-session", "p", "--agent", "a", "--project", "p", "--timeout", "-5s"}, 2, "--timeout must not be negative"},
		{"read --wait without a daemon", []string{"read", "--root-session", "r", "--wait", "1s", "quiet-blue-fox"}, 1, "read --wait needs a running daemon"},
		{"timeout too long", []string{"register", "--root-session", "r", "--parent-session", "p", "--agent", "a", "--project", "p", "--timeout", "9000h"}, 1, "timeout"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := cli(t, data, "", c.args...)
			if r.code != c.code || !strings.Contains(r.stderr, c.stderr) {
				t.Fatalf("exit %d, stderr %q; want exit %d and %q", r.code, r.stderr, c.code, c.stderr)
			}
		})
	}
	// None of that changed the log: one registration.
	if out := mustCLI(t, data, "", "events"); strings.Count(out, "\n") != 1 {
		t.Fatalf("refused commands changed the log:\n%s", out)
	}
}

func TestHelp(t *testing.T) {
	data := t.TempDir()
	for _, args := range [][]string{{"help"}, {"--help"}, {"help", "register"}, {"register", "-h"}} {
		r := cli(t, data, "", args...)
		if r.code != 0 || !strings.Contains(r.stdout, "register") {
			t.Fatalf("%v: exit %d, stdout %q", args, r.code, r.stdout)
		}
	}
	if r := cli(t, data, "", "help", "complete"); !strings.Contains(r.stdout, "Example:") || !strings.Contains(r.stdout, "-result") {
		t.Fatalf("help complete: %q", r.stdout)
	}
}

func TestRegisterFromProjectDirAndStdin(t *testing.T) {
	data, project := t.TempDir(), t.TempDir()
	out := mustCLI(t, data, "a prompt\nfrom stdin", "--json", "register", "--root-session", "r", "--parent-session", "p",
		"--agent", "a", "--project-dir", project, "--timeout", "30m", "--idempotency-key", "k1")
	var rec map[string]any
	if err := json.Unmarshal([]byte(out), &rec); err != nil {
		t.Fatal(err)
	}
	want, err := projectid.Of(context.Background(), project)
	if err != nil {
		t.Fatal(err)
	}
	if rec["projectId"] != want || rec["prompt"] != "a prompt\nfrom stdin" || rec["timeoutMs"] != 1800000.0 {
		t.Fatalf("registered %v, want project %s", rec, want)
	}
	again := mustCLI(t, data, "a prompt\nfrom stdin", "--json", "register", "--root-session", "r", "--parent-session", "p",
		"--agent", "a", "--project-dir", project, "--timeout", "30m", "--idempotency-key", "k1")
	if again != out {
		t.Fatalf("retry with the same idempotency key:\n%s\nwant\n%s", again, out)
	}
}

func TestLockedDataDirectory(t *testing.T) {
	data := t.TempDir()
	s, err := projection.Open(data, projection.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	r := cli(t, data, "", "show", "elegant-blue-tiger")
	if r.code != 1 || !strings.Contains(r.stderr, "is `delegations serve` running") {
		t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
	}
}

func TestDataDirResolution(t *testing.T) {
	home := t.TempDir()
	t.Setenv("HOME", home)
	t.Setenv("DELEGATIONS_DATA", "")
	t.Setenv("XDG_DATA_HOME", "")
	for _, c := range []struct{ flag, env, xdg, want string }{
		{"", "", "", filepath.Join(home, ".local/share/opencode/delegations")},
		{"", "", "/xdg", "/xdg/opencode/delegations"},
		{"", "/env", "/xdg", "/env"},
		{"/flag", "/env", "/xdg", "/flag"},
	} {
		t.Setenv("DELEGATIONS_DATA", c.env)
		t.Setenv("XDG_DATA_HOME", c.xdg)
		got, err := dataDir(c.flag)
		if err != nil || got != c.want {
			t.Fatalf("dataDir(%q) with env %q xdg %q = %q, %v; want %q", c.flag, c.env, c.xdg, got, err, c.want)
		}
	}
	// The default directory is created private on first use.
	t.Setenv("DELEGATIONS_DATA", "")
	t.Setenv("XDG_DATA_HOME", "")
	var out, errOut bytes.Buffer
	if err := run(context.Background(), registerArgs(), strings.NewReader(""), &out, &errOut); err != nil {
		t.Fatalf("register on the default data directory: %v\n%s", err, errOut.String())
	}
	fi, err := os.Stat(filepath.Join(home, ".local/share/opencode/delegations", projection.LogFile))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("default log file: %v, %v", fi, err)
	}
}

// TestReadListNotifyFlow drives the projection verbs: the notification is
// due after complete, ack marks the delegation unread, read returns the
// artifact at the plugin's path and clears the unread flag.
func TestReadListNotifyFlow(t *testing.T) {
	data := t.TempDir()
	id := strings.TrimSpace(mustCLI(t, data, "", registerArgs()...))
	if out := mustCLI(t, data, "", "list", "--root-session", "ses_root"); out != "## Delegations\n\n- **"+id+"** | "+id+" [registered]\n  → (running)\n" {
		t.Fatalf("list while active:\n%q", out)
	}
	mustCLI(t, data, "", "complete", "--result", "Found it.", id)
	var ns struct{ Notifications []struct{ ID, Text string } }
	if err := json.Unmarshal([]byte(mustCLI(t, data, "", "--json", "notifications")), &ns); err != nil {
		t.Fatal(err)
	}
	if len(ns.Notifications) != 1 || ns.Notifications[0].ID != "terminal:"+id || !strings.Contains(ns.Notifications[0].Text, "<task-id>"+id+"</task-id>") {
		t.Fatalf("notifications: %+v", ns)
	}
	if out := mustCLI(t, data, "", "ack", "terminal:"+id); out != "terminal:"+id+" acknowledged\n" {
		t.Fatalf("ack: %q", out)
	}
	if out := mustCLI(t, data, "", "list", "--root-session", "ses_root", "--unread"); !strings.Contains(out, "[complete] [unread]") {
		t.Fatalf("unread list: %q", out)
	}
	artifact := filepath.Join(data, "0123456789abcdef", "ses_root", id+".md")
	want, err := os.ReadFile(artifact)
	if err != nil {
		t.Fatalf("artifact not at the plugin's path: %v", err)
	}
	if out := mustCLI(t, data, "", "read", "--root-session", "ses_root", id); out != string(want) { // verbatim: no newline added
		t.Fatalf("read:\n%q\nwant the artifact\n%q", out, want)
	}
	if out := mustCLI(t, data, "", "list", "--root-session", "ses_root", "--unread"); out != "No delegations found for this session.\n" {
		t.Fatalf("unread list after read: %q", out)
	}
	r := cli(t, data, "", "read", "--root-session", "ses_other", id)
	if r.code != 1 || !strings.Contains(r.stderr, `Delegation "`+id+`" not found.`) {
		t.Fatalf("read from another root: %d %q", r.code, r.stderr)
	}
	if r := cli(t, data, "", "list", "--root-session", "ses_root", "--order", "size"); r.code != 2 {
		t.Fatalf("bad --order: exit %d", r.code)
	}
}
