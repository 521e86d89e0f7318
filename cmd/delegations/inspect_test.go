package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The debugging flow from the command line: a lost artifact is named by
// replay with exit 1, rebuilt, and then verify is clean; timeline lists a
// refused command; none of it changes the log.
func TestReplayRebuildVerifyTimeline(t *testing.T) {
	data := t.TempDir()
	if r := cli(t, data, "", "replay"); r.code != 1 || !strings.Contains(r.stderr, "no log at") {
		t.Fatalf("replay of an empty data directory: exit %d, %q", r.code, r.stderr)
	}
	if _, err := os.Stat(filepath.Join(data, ".delegations.db")); !os.IsNotExist(err) {
		t.Fatalf("replay created the log: %v", err)
	}
	id := strings.TrimSpace(mustCLI(t, data, "", registerArgs()...))
	mustCLI(t, data, "", "complete", "--result", "found it", id)
	cli(t, data, "", "progress", "--message", "late", id)
	mustCLI(t, data, "", "ack", "terminal:"+id)

	out := mustCLI(t, data, "", "timeline", id)
	for _, want := range []string{"Timeline of " + id + ": complete, 5 events", "registered", "completed", "persisted", "rejected", "notified"} {
		if !strings.Contains(out, want) {
			t.Fatalf("timeline lacks %q:\n%s", want, out)
		}
	}
	if out := mustCLI(t, data, "", "replay"); !strings.Contains(out, "unread") || !strings.Contains(out, "0 errors, 0 warnings") {
		t.Fatalf("healthy replay (an unread result is info):\n%s", out)
	}

	artifact := filepath.Join(data, "0123456789abcdef", "ses_root", id+".md")
	want, err := os.ReadFile(artifact)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(artifact); err != nil {
		t.Fatal(err)
	}
	r := cli(t, data, "", "--json", "replay")
	var rep struct {
		Errors   int `json:"errors"`
		Findings []struct {
			Code       string   `json:"code"`
			Delegation string   `json:"delegationId"`
			Seqs       []uint64 `json:"seqs"`
			Next       string   `json:"next"`
		} `json:"findings"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil || r.code != 1 {
		t.Fatalf("replay --json: exit %d, %v\n%s", r.code, err, r.stdout)
	}
	lost := 0
	for _, f := range rep.Findings {
		if f.Code == "artifact_missing" && f.Delegation == id && len(f.Seqs) == 1 && strings.Contains(f.Next, "replay --rebuild") {
			lost++
		}
	}
	if rep.Errors != 1 || lost != 1 {
		t.Fatalf("the lost artifact: %+v", rep)
	}
	if r := cli(t, data, "", "replay", "--rebuild", "--until", "3"); r.code != 2 {
		t.Fatalf("--rebuild with --until: exit %d", r.code)
	}
	if out := mustCLI(t, data, "", "replay", "--rebuild"); !strings.Contains(out, "fixed 1 finding(s)") || !strings.Contains(out, "fixed artifact_missing "+id) {
		t.Fatalf("rebuild:\n%s", out)
	}
	if got, err := os.ReadFile(artifact); err != nil || string(got) != string(want) {
		t.Fatalf("rebuilt artifact differs: %v\n%s", err, got)
	}
	if out := mustCLI(t, data, "", "verify"); !strings.Contains(out, "No findings.") {
		t.Fatalf("verify after rebuild:\n%s", out)
	}
	// The state as of record 2: complete but not yet persisted.
	if r := cli(t, data, "", "replay", "--until", "2"); r.code != 1 || !strings.Contains(r.stdout, "not_persisted") {
		t.Fatalf("replay --until 2: exit %d\n%s", r.code, r.stdout)
	}
	if r := cli(t, data, "", "replay", "--until", "yesterday"); r.code != 2 || !strings.Contains(r.stderr, "--until") {
		t.Fatalf("bad --until: exit %d %q", r.code, r.stderr)
	}
	if r := cli(t, data, "", "timeline", "../etc"); r.code != 1 || !strings.Contains(r.stderr, "invalid delegation id") {
		t.Fatalf("timeline of a bad id: exit %d %q", r.code, r.stderr)
	}
}

// import adopts legacy files once, refuses what it cannot adopt with a
// reason, and exits 1 when something was refused.
func TestImportTwice(t *testing.T) {
	data, legacy := t.TempDir(), t.TempDir()
	dir := filepath.Join(legacy, "0123456789abcdef", "ses_old")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	file := "# Old title\n\nOld description\n\n**ID:** old-red-fox\n**Agent:** explore\n**Status:** error\n" +
		"**Started:** 2026-01-01T00:00:00.000Z\n**Completed:** 2026-01-01T00:01:00.000Z\n\n---\n\nError: it broke\n"
	if err := os.WriteFile(filepath.Join(dir, "old-red-fox.md"), []byte(file), 0o600); err != nil {
		t.Fatal(err)
	}
	out := mustCLI(t, data, "", "import", legacy)
	if !strings.HasSuffix(out, "1 imported, 0 skipped, 0 refused from "+legacy+" (copied into the data directory)\n") {
		t.Fatalf("first import: %q", out)
	}
	if out := mustCLI(t, data, "", "import", legacy); !strings.Contains(out, "0 imported, 1 skipped, 0 refused") {
		t.Fatalf("second import: %q", out)
	}
	if out := mustCLI(t, data, "", "read", "--root-session", "ses_old", "old-red-fox"); out != file {
		t.Fatalf("read of the imported file: %q", out)
	}
	if err := os.WriteFile(filepath.Join(dir, "NOT-AN-ID.md"), []byte(file), 0o600); err != nil {
		t.Fatal(err)
	}
	r := cli(t, data, "", "import", legacy)
	if r.code != 1 || !strings.Contains(r.stdout, "refused  0123456789abcdef/ses_old/NOT-AN-ID.md: invalid delegation id") {
		t.Fatalf("import with a bad file: exit %d\n%s", r.code, r.stdout)
	}
}
