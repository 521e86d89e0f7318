package hosttest

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// ProjectID is OpenCode's id of every project NewProject makes: the hash of
// its fixed root commit.
const ProjectID = "f0642d1b4ae2cbc0ed46cc8611781fcc9a251e56"

// NewProject makes a git repository in a temporary directory with one empty
// root commit whose author, committer and dates are fixed, so OpenCode gives
// it the same project id in every run, and does not climb into an enclosing
// repository.
func NewProject(tb testing.TB) string {
	tb.Helper()
	dir := filepath.Join(tb.TempDir(), "project")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		tb.Fatalf("hosttest: %v", err)
	}
	git := func(args ...string) string {
		tb.Helper()
		cmd := exec.Command("git", args...)
		cmd.Dir = dir
		cmd.Env = []string{
			"PATH=" + os.Getenv("PATH"),
			"HOME=" + dir,
			"GIT_CONFIG_NOSYSTEM=1",
			"GIT_CONFIG_GLOBAL=/dev/null",
			"GIT_AUTHOR_NAME=hosttest", "GIT_AUTHOR_EMAIL=hosttest@example.invalid", "GIT_AUTHOR_DATE=2026-01-01T00:00:00Z",
			"GIT_COMMITTER_NAME=hosttest", "GIT_COMMITTER_EMAIL=hosttest@example.invalid", "GIT_COMMITTER_DATE=2026-01-01T00:00:00Z",
		}
		out, err := cmd.CombinedOutput()
		if err != nil {
			tb.Fatalf("hosttest: git %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return strings.TrimSpace(string(out))
	}
	git("init", "-q", "-b", "main")
	git("commit", "-q", "--allow-empty", "--no-gpg-sign", "-m", "root")
	return dir
}

// RootCommit returns the hash of the project's root commit, which OpenCode
// uses as the project id.
func RootCommit(tb testing.TB, dir string) string {
	tb.Helper()
	out, err := exec.Command("git", "-C", dir, "rev-list", "--max-parents=0", "HEAD").Output()
	if err != nil {
		tb.Fatalf("hosttest: git rev-list: %v", err)
	}
	return strings.TrimSpace(string(out))
}
