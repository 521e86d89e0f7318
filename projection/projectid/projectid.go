// Package projectid derives the OpenCode project id of a directory, the
// name of the folder that holds its artifacts, exactly as the plugin did:
// the repository's root commit (asked of git, then cached), else a hash
// of the path.
package projectid

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

const (
	// projectIDGitTimeout is the plugin's limit on the root-commit lookup.
	projectIDGitTimeout = 5 * time.Second
	// projectIDCacheFile is shared with the plugin (and OpenCode itself): same name, same content.
	projectIDCacheFile = "opencode"
	// projectIDCacheLimit bounds the cache read: a valid id is at most 40 bytes plus whitespace.
	projectIDCacheLimit = 1 << 10
	// projectIDPathLimit bounds reads of .git and commondir files, which hold one path each.
	projectIDPathLimit = 16 << 10
)

var (
	errProjectIDNotRegular = errors.New("not a regular file")
	errProjectIDTooLarge   = errors.New("file too large")
)

// Of returns the OpenCode project id of dir (as the plugin derives it).
//
// It reproduces the plugin's rule exactly because the id names the directory that already holds
// people's artifacts: any other id would orphan them. So it keeps the plugin's quirks too:
//   - without <dir>/.git the id is the first 16 hex chars of sha256 of the absolute, cleaned path
//     string (filepath.Abs; symlinks are not resolved), and a subdirectory of a repository hashes its
//     own path (no walk up to the repository root);
//   - a .git file whose gitdir has no commondir file uses <gitdir>/../.. as the shared git dir, which
//     for a submodule is the superproject's git dir;
//   - only 40-hex (SHA-1) root commits count, so a SHA-256 repository falls back to the path hash.
//
// A missing git binary, an empty repository, a git timeout (5 s) or unparsable content never fail
// the call: they fall back to the path hash. The only errors are a dir that is not an existing
// directory and a caller's ctx that ends before git answers (a fallback id would silently file
// artifacts under the wrong project). ctx only bounds the git call.
func Of(ctx context.Context, dir string) (string, error) {
	return projectID(ctx, dir, "git", projectIDGitTimeout)
}

// OfWithin is Of with its own limit on the git lookup,
// past which it falls back to the path hash: for callers with a short
// budget of their own (Claude Code's hooks). Once git has answered, the id
// is cached in the git dir and later calls do not run git.
func OfWithin(ctx context.Context, dir string, gitTimeout time.Duration) (string, error) {
	return projectID(ctx, dir, "git", gitTimeout)
}

// projectID is Of with the git binary and its time limit injectable for tests.
func projectID(ctx context.Context, dir, gitBin string, timeout time.Duration) (string, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", fmt.Errorf("project dir %q: %w", dir, err)
	}
	fi, err := os.Stat(abs)
	if err != nil {
		return "", fmt.Errorf("project dir %q: %w", abs, err)
	}
	if !fi.IsDir() {
		return "", fmt.Errorf("project dir %q: not a directory", abs)
	}
	fallback := projectIDPathHash(abs)

	gitDir, ok := projectIDGitDir(abs)
	if !ok {
		return fallback, nil
	}
	if b, err := projectIDReadFile(filepath.Join(gitDir, projectIDCacheFile), projectIDCacheLimit); err == nil {
		if id := strings.TrimSpace(string(b)); projectIDIsHex(id, 40) || projectIDIsHex(id, 16) {
			return id, nil
		}
	}

	id, err := projectIDRootCommit(ctx, abs, gitBin, timeout)
	if err != nil {
		if ctx.Err() != nil {
			return "", fmt.Errorf("project id of %q: %w", abs, context.Cause(ctx))
		}
		return fallback, nil
	}
	if id == "" {
		return fallback, nil
	}
	_ = projectIDWriteCache(gitDir, id) // best effort, as in the plugin: the id is right either way
	return id, nil
}

// projectIDPathHash is the plugin's id for a directory outside git: sha256 of the path, 16 hex chars.
func projectIDPathHash(abs string) string {
	sum := sha256.Sum256([]byte(abs))
	return hex.EncodeToString(sum[:])[:16]
}

// projectIDGitDir returns the shared git dir for dir, or false when dir has no usable .git
// (absent, unreadable, or a .git file or commondir that does not parse), which means the path hash.
func projectIDGitDir(dir string) (string, bool) {
	dotGit := filepath.Join(dir, ".git")
	fi, err := os.Stat(dotGit)
	switch {
	case err != nil:
		return "", false
	case fi.IsDir():
		return dotGit, true
	case !fi.Mode().IsRegular():
		return "", false
	}

	b, err := projectIDReadFile(dotGit, projectIDPathLimit)
	if err != nil {
		return "", false
	}
	gitDir, ok := projectIDParseGitFile(b)
	if !ok {
		return "", false
	}
	if !filepath.IsAbs(gitDir) {
		gitDir = filepath.Join(dir, gitDir)
	}

	common := filepath.Join("..", "..")
	b, err = projectIDReadFile(filepath.Join(gitDir, "commondir"), projectIDPathLimit)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return "", false
	default:
		common, ok = projectIDParsePath(string(b))
		if !ok {
			return "", false
		}
	}
	if !filepath.IsAbs(common) {
		common = filepath.Join(gitDir, common)
	}
	return filepath.Clean(common), true
}

// projectIDParseGitFile extracts the path of a "gitdir: <path>" line, the only content git writes
// into a .git file.
func projectIDParseGitFile(b []byte) (string, bool) {
	line, _, _ := bytes.Cut(b, []byte("\n"))
	rest, ok := bytes.CutPrefix(line, []byte("gitdir:"))
	if !ok {
		return "", false
	}
	return projectIDParsePath(string(rest))
}

// projectIDParsePath accepts one trimmed, non-empty path without control characters; anything
// else is not something git wrote.
func projectIDParsePath(s string) (string, bool) {
	s = strings.TrimSpace(s)
	if s == "" || strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		return "", false
	}
	return s, true
}

// projectIDReadFile reads a small regular file, refusing anything larger than limit so that a
// hostile or corrupt file (or a FIFO, or /dev/zero behind a symlink) cannot stall or bloat us.
func projectIDReadFile(path string, limit int64) ([]byte, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: %w", path, errProjectIDNotRegular)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%s: %w", path, errProjectIDTooLarge)
	}
	return b, nil
}

// projectIDRootCommit returns the lexically smallest 40-hex root commit of the repository at dir,
// or "" when git answered but listed none (empty repository, garbage output).
func projectIDRootCommit(ctx context.Context, dir, gitBin string, timeout time.Duration) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, gitBin, "rev-list", "--max-parents=0", "--all")
	cmd.Dir = dir
	cmd.Env = projectIDGitEnv(os.Environ())
	// A killed git may leave a grandchild holding stdout; do not wait for it forever.
	cmd.WaitDelay = time.Second
	out, err := cmd.Output()
	if err != nil {
		return "", err
	}
	lines := strings.Split(string(out), "\n")
	for i := range lines {
		lines[i] = strings.TrimSpace(lines[i])
	}
	slices.Sort(lines)
	for _, l := range lines {
		if projectIDIsHex(l, 40) {
			return l, nil
		}
	}
	return "", nil
}

// projectIDGitEnv drops the variables that point git at another repository (the list of
// `git rev-parse --local-env-vars`), so the answer depends on dir alone even when we run
// under a git hook.
func projectIDGitEnv(env []string) []string {
	local := []string{
		"GIT_ALTERNATE_OBJECT_DIRECTORIES", "GIT_CONFIG", "GIT_CONFIG_PARAMETERS", "GIT_CONFIG_COUNT",
		"GIT_OBJECT_DIRECTORY", "GIT_DIR", "GIT_WORK_TREE", "GIT_IMPLICIT_WORK_TREE", "GIT_GRAFT_FILE",
		"GIT_INDEX_FILE", "GIT_NO_REPLACE_OBJECTS", "GIT_REPLACE_REF_BASE", "GIT_PREFIX",
		"GIT_INTERNAL_SUPER_PREFIX", "GIT_SHALLOW_FILE", "GIT_COMMON_DIR",
	}
	return slices.DeleteFunc(slices.Clone(env), func(kv string) bool {
		k, _, _ := strings.Cut(kv, "=")
		return slices.Contains(local, k)
	})
}

// projectIDWriteCache stores id where the plugin and OpenCode look for it, atomically so that a
// concurrent reader never sees a partial id.
func projectIDWriteCache(gitDir, id string) (err error) {
	f, err := os.CreateTemp(gitDir, "."+projectIDCacheFile+"-*.tmp")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if _, err = f.WriteString(id); err != nil {
		return err
	}
	if err = f.Chmod(0o644); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	if err = os.Rename(f.Name(), filepath.Join(gitDir, projectIDCacheFile)); err != nil {
		return err
	}
	if d, derr := os.Open(gitDir); derr == nil {
		_ = d.Sync() // durability of the rename; the cache can always be recomputed
		d.Close()
	}
	return nil
}

// projectIDIsHex reports whether s is exactly n lower-case hex digits, the only shape git prints.
func projectIDIsHex(s string, n int) bool {
	if len(s) != n {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}
