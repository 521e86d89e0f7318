package projectid

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"
)

// wantPathHash computes the fallback id independently of the code under test.
func wantPathHash(dir string) string {
	return fmt.Sprintf("%x", sha256.Sum256([]byte(dir)))[:16]
}

func requireGit(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("git not on PATH")
	}
}

// testGit runs git isolated from the user's configuration and from any GIT_DIR of a calling hook.
func testGit(t *testing.T, dir string, args ...string) string {
	t.Helper()
	full := append([]string{
		"-c", "user.email=t@t", "-c", "user.name=t",
		"-c", "commit.gpgsign=false", "-c", "init.defaultBranch=main",
	}, args...)
	cmd := exec.Command("git", full...)
	cmd.Dir = dir
	cmd.Env = append(projectIDGitEnv(os.Environ()), "GIT_CONFIG_GLOBAL="+os.DevNull, "GIT_CONFIG_NOSYSTEM=1")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return strings.TrimSpace(string(out))
}

// newRepo returns a fresh repository with one empty commit and its root commit hash.
func newRepo(t *testing.T) (dir, root string) {
	t.Helper()
	dir = t.TempDir()
	testGit(t, dir, "init", "-q")
	testGit(t, dir, "commit", "-q", "--allow-empty", "-m", "x")
	return dir, testGit(t, dir, "rev-list", "--max-parents=0", "HEAD")
}

func readCache(t *testing.T, gitDir string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(gitDir, "opencode"))
	if err != nil {
		t.Fatalf("read cache: %v", err)
	}
	return string(b)
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestProjectIDPathHash(t *testing.T) {
	requireGit(t)
	t.Parallel()
	tests := []struct {
		name  string
		setup func(t *testing.T) string
	}{
		{"no .git", func(t *testing.T) string { return t.TempDir() }},
		{"subdirectory of a repository is not walked up", func(t *testing.T) string {
			dir, _ := newRepo(t)
			sub := filepath.Join(dir, "sub")
			if err := os.Mkdir(sub, 0o755); err != nil {
				t.Fatal(err)
			}
			return sub
		}},
		{"empty repository", func(t *testing.T) string {
			dir := t.TempDir()
			testGit(t, dir, "init", "-q")
			return dir
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir := tt.setup(t)
			got, err := Of(t.Context(), dir)
			if err != nil {
				t.Fatal(err)
			}
			if want := wantPathHash(dir); got != want {
				t.Errorf("ProjectID = %q, want path hash %q", got, want)
			}
			if _, err := os.Stat(filepath.Join(dir, ".git", "opencode")); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("a fallback id must not be cached: stat err = %v", err)
			}
		})
	}
}

func TestProjectIDRelativeDir(t *testing.T) {
	root := t.TempDir()
	if err := os.Mkdir(filepath.Join(root, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Chdir(root)
	got, err := Of(t.Context(), "sub/../sub/.")
	if err != nil {
		t.Fatal(err)
	}
	if want := wantPathHash(filepath.Join(root, "sub")); got != want {
		t.Errorf("ProjectID = %q, want hash of the absolute clean path %q", got, want)
	}
}

func TestProjectIDRootCommit(t *testing.T) {
	requireGit(t)
	t.Parallel()
	dir, root := newRepo(t)
	got, err := Of(t.Context(), dir)
	if err != nil {
		t.Fatal(err)
	}
	if got != root {
		t.Errorf("ProjectID = %q, want root commit %q", got, root)
	}
	if c := readCache(t, filepath.Join(dir, ".git")); c != root {
		t.Errorf("cache = %q, want %q", c, root)
	}
	info, err := os.Stat(filepath.Join(dir, ".git", "opencode"))
	if err != nil {
		t.Fatal(err)
	}
	if runtime.GOOS != "windows" && info.Mode().Perm() != 0o644 {
		t.Errorf("cache mode = %v, want 0644", info.Mode().Perm())
	}
	tmps, _ := filepath.Glob(filepath.Join(dir, ".git", ".opencode-*"))
	if len(tmps) != 0 {
		t.Errorf("temp files left behind: %v", tmps)
	}
}

func TestProjectIDCache(t *testing.T) {
	requireGit(t)
	t.Parallel()
	const fake16 = "0123456789abcdef"
	fake40 := strings.Repeat("0", 39) + "1"
	tests := []struct {
		name    string
		content string // written to .git/opencode; "" with dir set makes it a directory
		dir     bool
		want    string // "" means the real root commit, recomputed and cached
	}{
		{name: "16 hex is trusted without git", content: fake16, want: fake16},
		{name: "40 hex is trusted without git", content: fake40, want: fake40},
		{name: "surrounding whitespace is trimmed", content: "\n  " + fake16 + " \r\n", want: fake16},
		{name: "upper case", content: strings.ToUpper("abcdef0123456789")},
		{name: "20 hex", content: strings.Repeat("ab", 10)},
		{name: "64 hex", content: strings.Repeat("ab", 32)},
		{name: "garbage", content: "not an id"},
		{name: "empty", content: ""},
		{name: "valid id beyond the size limit", content: fake16 + strings.Repeat(" ", 2000)},
		{name: "directory: write failure is ignored", dir: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir, root := newRepo(t)
			gitDir := filepath.Join(dir, ".git")
			cache := filepath.Join(gitDir, "opencode")
			if tt.dir {
				if err := os.Mkdir(cache, 0o755); err != nil {
					t.Fatal(err)
				}
			} else {
				writeFile(t, cache, tt.content)
			}
			got, err := Of(t.Context(), dir)
			if err != nil {
				t.Fatal(err)
			}
			if tt.want != "" {
				if tt.want == root {
					t.Fatal("fake cache value equals the real root: the test proves nothing")
				}
				if got != tt.want {
					t.Errorf("ProjectID = %q, want cached %q", got, tt.want)
				}
				if c := readCache(t, gitDir); c != tt.content {
					t.Errorf("valid cache rewritten to %q", c)
				}
				return
			}
			if got != root {
				t.Errorf("ProjectID = %q, want recomputed root %q", got, root)
			}
			if tt.dir {
				if info, err := os.Stat(cache); err != nil || !info.IsDir() {
					t.Errorf("cache directory replaced: %v, %v", info, err)
				}
			} else if c := readCache(t, gitDir); c != root {
				t.Errorf("cache = %q, want overwritten with %q", c, root)
			}
		})
	}
}

func TestProjectIDTwoRoots(t *testing.T) {
	requireGit(t)
	t.Parallel()
	dir, _ := newRepo(t)
	testGit(t, dir, "checkout", "-q", "--orphan", "other")
	testGit(t, dir, "commit", "-q", "--allow-empty", "-m", "y")
	testGit(t, dir, "checkout", "-q", "main")
	testGit(t, dir, "merge", "-q", "--allow-unrelated-histories", "-m", "m", "other")
	roots := strings.Fields(testGit(t, dir, "rev-list", "--max-parents=0", "HEAD"))
	if len(roots) != 2 {
		t.Fatalf("setup: want 2 roots, got %q", roots)
	}
	got, err := Of(t.Context(), dir)
	if err != nil {
		t.Fatal(err)
	}
	if want := slices.Min(roots); got != want {
		t.Errorf("ProjectID = %q, want lexically smallest root %q of %q", got, want, roots)
	}
}

func TestProjectIDWorktree(t *testing.T) {
	requireGit(t)
	t.Parallel()
	dir, root := newRepo(t)
	wt := filepath.Join(t.TempDir(), "wt")
	testGit(t, dir, "worktree", "add", "-q", "--detach", wt)
	mainGitDir := filepath.Join(dir, ".git")

	got, err := Of(t.Context(), wt)
	if err != nil {
		t.Fatal(err)
	}
	if got != root {
		t.Errorf("worktree ProjectID = %q, want main repository's root %q", got, root)
	}
	if c := readCache(t, mainGitDir); c != root {
		t.Errorf("common dir cache = %q, want %q", c, root)
	}
	private, _ := filepath.Glob(filepath.Join(mainGitDir, "worktrees", "*", "opencode"))
	if len(private) != 0 {
		t.Errorf("cache written to the worktree's private git dir: %v", private)
	}
	if got, err := Of(t.Context(), dir); err != nil || got != root {
		t.Errorf("main ProjectID = %q, %v; want %q", got, err, root)
	}

	const fake = "fedcba9876543210"
	writeFile(t, filepath.Join(mainGitDir, "opencode"), fake)
	if got, err := Of(t.Context(), wt); err != nil || got != fake {
		t.Errorf("worktree ProjectID = %q, %v; want %q from the common dir cache", got, err, fake)
	}
}

// TestProjectIDGitFile covers hand-made .git files; every parsable layout has a cache where the
// shared git dir should be, so the expected id proves which directory was chosen.
func TestProjectIDGitFile(t *testing.T) {
	t.Parallel()
	const id = "00112233445566ff"
	tests := []struct {
		name  string
		files map[string]string // relative to a temp root; "$ROOT" expands to it; the project is work/
		want  string            // "" means the path hash
	}{
		{"relative gitdir without commondir uses ../..", map[string]string{
			"work/.git":      "gitdir: ../store/a/b\n",
			"store/a/b/HEAD": "",
			"store/opencode": id,
		}, id},
		{"CRLF", map[string]string{
			"work/.git":      "gitdir: ../store/a/b\r\n",
			"store/a/b/HEAD": "",
			"store/opencode": id,
		}, id},
		{"absolute gitdir, relative commondir", map[string]string{
			"work/.git":         "gitdir: $ROOT/g/wt\n",
			"g/wt/commondir":    "../shared\n",
			"g/shared/opencode": id,
		}, id},
		{"absolute commondir", map[string]string{
			"work/.git":       "gitdir: $ROOT/g/wt",
			"g/wt/commondir":  "$ROOT/common\n",
			"common/opencode": id,
		}, id},
		{"garbage .git file", map[string]string{"work/.git": "hello\n", "opencode": id}, ""},
		{"empty .git file", map[string]string{"work/.git": ""}, ""},
		{"gitdir without a path", map[string]string{"work/.git": "gitdir:   \n"}, ""},
		{"gitdir with a control character", map[string]string{"work/.git": "gitdir: ../st\x00re\n"}, ""},
		{"oversized .git file", map[string]string{
			"work/.git":      "gitdir: ../store/a/b\n" + strings.Repeat("#", 20<<10),
			"store/opencode": id,
		}, ""},
		{"empty commondir", map[string]string{
			"work/.git":      "gitdir: ../g/wt\n",
			"g/wt/commondir": "\n",
			"opencode":       id,
		}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			root := t.TempDir()
			for name, content := range tt.files {
				writeFile(t, filepath.Join(root, name), strings.ReplaceAll(content, "$ROOT", root))
			}
			work := filepath.Join(root, "work")
			got, err := Of(t.Context(), work)
			if err != nil {
				t.Fatal(err)
			}
			want := tt.want
			if want == "" {
				want = wantPathHash(work)
			}
			if got != want {
				t.Errorf("ProjectID = %q, want %q", got, want)
			}
		})
	}
}

func TestProjectIDErrors(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	file := filepath.Join(root, "file")
	writeFile(t, file, "x")

	_, err := Of(t.Context(), filepath.Join(root, "missing"))
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing dir: err = %v, want fs.ErrNotExist", err)
	}
	_, err = Of(t.Context(), file)
	if want := fmt.Sprintf("project dir %q: not a directory", file); err == nil || err.Error() != want {
		t.Errorf("file: err = %v, want %q", err, want)
	}
}

func TestProjectIDNoGitBinary(t *testing.T) {
	requireGit(t)
	dir, _ := newRepo(t)
	t.Setenv("PATH", t.TempDir())
	got, err := Of(t.Context(), dir)
	if err != nil {
		t.Fatalf("a missing git must not fail: %v", err)
	}
	if want := wantPathHash(dir); got != want {
		t.Errorf("ProjectID = %q, want path hash %q", got, want)
	}
}

func TestProjectIDCallerCancelled(t *testing.T) {
	requireGit(t)
	t.Parallel()
	dir, _ := newRepo(t)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, err := Of(ctx, dir)
	if !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v, want context.Canceled: a fallback id would misfile artifacts", err)
	}
	if _, err := os.Stat(filepath.Join(dir, ".git", "opencode")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("cache written after cancellation: stat err = %v", err)
	}
}

// TestProjectIDFakeGit drives the git step with scripts standing in for git, for the outputs a
// real repository cannot easily produce.
func TestProjectIDFakeGit(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("fake git is a shell script")
	}
	t.Parallel()
	a := strings.Repeat("a", 40)
	b := strings.Repeat("b", 40)
	tests := []struct {
		name    string
		script  string
		timeout time.Duration
		want    string // "" means the path hash
	}{
		{"sorted, first 40-hex line wins", fmt.Sprintf("printf '%s\\nzzz\\n%s\\n0garbage\\n'", b, a), time.Minute, a},
		{"garbage", "echo hello; echo world", time.Minute, ""},
		{"no output", "true", time.Minute, ""},
		{"upper case", "echo " + strings.ToUpper(a), time.Minute, ""},
		{"sha-256 repository", "echo " + strings.Repeat("c", 64), time.Minute, ""},
		{"non-zero exit", "echo " + a + "; exit 1", time.Minute, ""},
		{"timeout", "exec sleep 60", 50 * time.Millisecond, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			bin := filepath.Join(t.TempDir(), "git")
			writeFile(t, bin, "#!/bin/sh\n"+tt.script+"\n")
			if err := os.Chmod(bin, 0o755); err != nil {
				t.Fatal(err)
			}
			dir := t.TempDir()
			if err := os.Mkdir(filepath.Join(dir, ".git"), 0o755); err != nil {
				t.Fatal(err)
			}
			got, err := projectID(t.Context(), dir, bin, tt.timeout)
			if err != nil {
				t.Fatal(err)
			}
			want := tt.want
			if want == "" {
				want = wantPathHash(dir)
			}
			if got != want {
				t.Errorf("projectID = %q, want %q", got, want)
			}
			cache, err := os.ReadFile(filepath.Join(dir, ".git", "opencode"))
			switch {
			case tt.want == "" && !errors.Is(err, fs.ErrNotExist):
				t.Errorf("fallback cached: %q, %v", cache, err)
			case tt.want != "" && string(cache) != tt.want:
				t.Errorf("cache = %q, %v; want %q", cache, err, tt.want)
			}
		})
	}
}

func FuzzProjectIDParseGitFile(f *testing.F) {
	for _, s := range []string{
		"gitdir: /a/b\n", "gitdir: ../x\r\n", "gitdir:", "gitdir: \x00\n", "hello", "", "gitdir: a\ngitdir: b",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		p, ok := projectIDParseGitFile(b)
		if !ok {
			if p != "" {
				t.Errorf("rejected input returned %q", p)
			}
			return
		}
		if p == "" || p != strings.TrimSpace(p) || strings.ContainsAny(p, "\x00\n\r") {
			t.Errorf("accepted bad path %q from %q", p, b)
		}
	})
}
