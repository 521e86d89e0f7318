package main

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
)

// TestCompactFlow follows delegations through the block: running while
// active, unread once completed and notified, gone once read, and no
// output at all when nothing is left to carry.
func TestCompactFlow(t *testing.T) {
	data := t.TempDir()
	compact := func(args ...string) string {
		t.Helper()
		return mustCLI(t, data, "", append([]string{"compact", "--root-session", "ses_root"}, args...)...)
	}
	if out := compact(); out != "" {
		t.Fatalf("empty store: %q", out)
	}

	first := strings.TrimSpace(mustCLI(t, data, "", registerArgs()...))
	second := strings.TrimSpace(mustCLI(t, data, "", registerArgs()...))
	mustCLI(t, data, "", "start", "--session", "ses_child", first)
	out := compact()
	if !strings.HasPrefix(out, "<delegation-context>\n## Running Delegations\n\n### `"+first+"` (researcher)\n") ||
		!strings.HasSuffix(out, "</delegation-context>\n") ||
		!strings.Contains(out, "### `"+second+"` (researcher)\n") ||
		!strings.Contains(out, "**Prompt:** Find the flaky test\n") ||
		strings.Contains(out, "## Unread Completed Delegations") {
		t.Fatalf("two running:\n%s", out)
	}
	if strings.Index(out, first) > strings.Index(out, second) {
		t.Fatalf("running not in registration order:\n%s", out)
	}

	// Complete: terminal but not yet notified, so in neither section.
	mustCLI(t, data, "", "complete", "--title", "Cache race", "--result", "The cache races.", first)
	if out := compact(); strings.Contains(out, first) {
		t.Fatalf("completed, not yet notified, still carried:\n%s", out)
	}
	mustCLI(t, data, "", "ack", "terminal:"+first)
	out = compact()
	artifact := filepath.Join(data, "0123456789abcdef", "ses_root", first+".md")
	unread := "## Unread Completed Delegations\n\n### ✅ `" + first + "`\n**Title:** Cache race\n**Status:** complete\n"
	if !strings.Contains(out, unread) ||
		!strings.Contains(out, "**Retrieve:** `delegation_read(\""+first+"\")`\n**Artifact:** "+artifact+"\n") ||
		!strings.Contains(out, "### `"+second+"`") {
		t.Fatalf("after complete and ack:\n%s", out)
	}

	var res struct {
		Block                    string
		Running, Unread, Omitted int
	}
	if err := json.Unmarshal([]byte(mustCLI(t, data, "", "--json", "compact", "--root-session", "ses_root")), &res); err != nil {
		t.Fatal(err)
	}
	if res.Running != 1 || res.Unread != 1 || res.Omitted != 0 || res.Block+"\n" != out {
		t.Fatalf("--json: %+v", res)
	}
	if err := json.Unmarshal([]byte(mustCLI(t, data, "", "compact", "--json", "--root-session", "ses_root", "--max-bytes", "1")), &res); err != nil {
		t.Fatal(err)
	}
	if res.Running != 0 || res.Unread != 0 || res.Omitted != 2 || !strings.Contains(res.Block, "> 2 more delegations not shown") {
		t.Fatalf("--max-bytes 1: %+v", res)
	}
	brief := compact("--brief")
	if !strings.Contains(brief, "- `"+second+"` (researcher) registered: Find the flaky test\n") ||
		!strings.Contains(brief, "- ✅ `"+first+"` (researcher) complete: Cache race; read with `delegation_read(\""+first+"\")` or "+artifact+"\n") {
		t.Fatalf("--brief:\n%s", brief)
	}
	if out := compact("--max-unread", "1"); !strings.Contains(out, first) {
		t.Fatalf("--max-unread 1:\n%s", out)
	}
	if out := mustCLI(t, data, "", "compact", "--root-session", "ses_other"); out != "" {
		t.Fatalf("another root sees: %q", out)
	}

	// Read: the first leaves the block; the second still runs.
	mustCLI(t, data, "", "read", "--root-session", "ses_root", first)
	out = compact()
	if strings.Contains(out, first) || strings.Contains(out, "## Unread Completed Delegations") || !strings.Contains(out, second) {
		t.Fatalf("after read:\n%s", out)
	}

	// Every delegation read: nothing at all, not even a newline.
	mustCLI(t, data, "", "fail", "--error", "boom", second)
	mustCLI(t, data, "", "ack", "terminal:"+second)
	if out := compact(); !strings.Contains(out, "### ❌ `"+second+"`") {
		t.Fatalf("failed and notified:\n%s", out)
	}
	mustCLI(t, data, "", "read", "--root-session", "ses_root", second)
	if out := compact(); out != "" {
		t.Fatalf("everything read: %q", out)
	}
	if out := mustCLI(t, data, "", "--json", "compact", "--root-session", "ses_root"); out != `{"block":"","running":0,"unread":0,"omitted":0}`+"\n" {
		t.Fatalf("everything read, --json: %q", out)
	}
}

func TestCompactUsage(t *testing.T) {
	data := t.TempDir()
	for _, c := range []struct {
		args   []string
		code   int
		stderr string
	}{
		{[]string{"compact"}, 2, "missing --root-session"},
		{[]string{"compact", "--root-session", "r", "--max-unread", "-1"}, 2, "--max-unread must not be negative"},
		{[]string{"compact", "--root-session", "r", "--max-bytes", "-5"}, 2, "--max-bytes must not be negative"},
		{[]string{"compact", "--root-session", "r", "--max-bytes", "lots"}, 2, "invalid value"},
		{[]string{"compact", "--root-session", "r", "extra"}, 2, "want 0 argument(s)"},
		{[]string{"compact", "--root-session", "../x"}, 1, "invalid root session id"},
	} {
		r := cli(t, data, "", c.args...)
		if r.code != c.code || !strings.Contains(r.stderr, c.stderr) || (c.code == 2 && r.stdout != "") {
			t.Errorf("%v: exit %d, stdout %q, stderr %q; want exit %d and %q", c.args, r.code, r.stdout, r.stderr, c.code, c.stderr)
		}
	}
	if r := cli(t, data, "", "help", "compact"); r.code != 0 || !strings.Contains(r.stdout, "-max-bytes") || !strings.Contains(r.stdout, "Example:") {
		t.Errorf("help compact: %q", r.stdout)
	}
}
