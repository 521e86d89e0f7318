package artifact

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/cespare/xxhash/v2"

	"github.com/delegations/delegations/fsm"
)

const artifactTestRel = "4b825dc642cb6eb9/ses_root01/elegant-blue-tiger.md"

// artifactTestNames lists the entries of a directory, sorted.
func artifactTestNames(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	names := make([]string, len(entries))
	for i, e := range entries {
		names[i] = e.Name()
	}
	sort.Strings(names)
	return names
}

func artifactTestMode(t *testing.T, path string, want fs.FileMode) {
	t.Helper()
	info, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := info.Mode().Perm(); got != want {
		t.Errorf("%s: mode %v, want %v", path, got, want)
	}
}

func TestArtifactRelPath(t *testing.T) {
	got, err := RelPath("4b825dc642cb6eb9", "ses_root01", "elegant-blue-tiger")
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join("4b825dc642cb6eb9", "ses_root01", "elegant-blue-tiger.md"); got != want {
		t.Errorf("RelPath = %q, want %q", got, want)
	}
	if !IsRelPath(got, "4b825dc642cb6eb9", "ses_root01", "elegant-blue-tiger") {
		t.Errorf("IsRelPath(%q) is false", got)
	}
	for _, other := range []string{got + "x", got[1:], "", "4b825dc642cb6eb9/ses_root01/elegant-blue-tiger", "4b825dc642cb6eb9/ses_root01//elegant-blue-tiger.md"} {
		if IsRelPath(other, "4b825dc642cb6eb9", "ses_root01", "elegant-blue-tiger") {
			t.Errorf("IsRelPath(%q) is true", other)
		}
	}

	bad := []string{"", ".", "..", "a/b", `a\b`, "a\x00b", "../x", "/abs", ".hidden", "a b", "x\n"}
	for _, b := range bad {
		for _, args := range [][3]string{
			{b, "ses_root01", "elegant-blue-tiger"},
			{"4b825dc642cb6eb9", b, "elegant-blue-tiger"},
			{"4b825dc642cb6eb9", "ses_root01", b},
		} {
			if p, err := RelPath(args[0], args[1], args[2]); !errors.Is(err, fsm.ErrInvalid) {
				t.Errorf("RelPath(%q, %q, %q) = %q, %v; want ErrInvalid", args[0], args[1], args[2], p, err)
			}
			if rel := args[0] + "/" + args[1] + "/" + args[2] + ".md"; IsRelPath(rel, args[0], args[1], args[2]) {
				t.Errorf("IsRelPath(%q, %q, %q, %q) is true", rel, args[0], args[1], args[2])
			}
		}
	}
	for _, id := range []string{"Elegant-blue-tiger", "elegant-blue", "elegant-blue-tiger.md", "elegant--tiger"} {
		if _, err := RelPath("p", "r", id); !errors.Is(err, fsm.ErrInvalid) {
			t.Errorf("id %q: %v, want ErrInvalid", id, err)
		}
	}
}

func TestWriteReadArtifact(t *testing.T) {
	dir := t.TempDir()
	content := []byte("# T\n\nD\n\n---\n\nresult")
	size, sum, err := Write(dir, artifactTestRel, content)
	if err != nil {
		t.Fatal(err)
	}
	if size != int64(len(content)) || sum != xxhash.Sum64(content) {
		t.Errorf("size, sum = %d, %016x; want %d, %016x", size, sum, len(content), xxhash.Sum64(content))
	}
	got, err := Read(dir, artifactTestRel)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, content) {
		t.Errorf("read %q, want %q", got, content)
	}

	// Permissions: results are private.
	artifactTestMode(t, filepath.Join(dir, "4b825dc642cb6eb9"), 0o700)
	artifactTestMode(t, filepath.Join(dir, "4b825dc642cb6eb9", "ses_root01"), 0o700)
	artifactTestMode(t, filepath.Join(dir, filepath.FromSlash(artifactTestRel)), 0o600)
	if names := artifactTestNames(t, filepath.Join(dir, "4b825dc642cb6eb9", "ses_root01")); len(names) != 1 || names[0] != "elegant-blue-tiger.md" {
		t.Errorf("session directory holds %q, want only the artifact", names)
	}

	// The OS-specific form from RelPath works too.
	rel, err := RelPath("4b825dc642cb6eb9", "ses_root01", "brave-red-fox")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := Write(dir, rel, nil); err != nil {
		t.Fatal(err)
	}
	if got, err := Read(dir, rel); err != nil || len(got) != 0 {
		t.Errorf("empty artifact: %q, %v", got, err)
	}
}

func TestWriteArtifactOverwrite(t *testing.T) {
	dir := t.TempDir()
	oldContent, newContent := []byte("old content"), []byte("new content, longer than the old one")
	if _, _, err := Write(dir, artifactTestRel, oldContent); err != nil {
		t.Fatal(err)
	}
	if _, _, err := Write(dir, artifactTestRel, newContent); err != nil {
		t.Fatal(err)
	}
	got, err := Read(dir, artifactTestRel)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, newContent) {
		t.Errorf("read %q, want %q", got, newContent)
	}
	artifactTestMode(t, filepath.Join(dir, filepath.FromSlash(artifactTestRel)), 0o600)
	if names := artifactTestNames(t, filepath.Join(dir, "4b825dc642cb6eb9", "ses_root01")); len(names) != 1 {
		t.Errorf("session directory holds %q, want only the artifact (no temp file)", names)
	}
}

// TestWriteArtifactReadersSeeWholeFiles rewrites an artifact while readers
// read it: every read must be one whole version, never a mix or a prefix.
func TestWriteArtifactReadersSeeWholeFiles(t *testing.T) {
	dir := t.TempDir()
	a := bytes.Repeat([]byte("a"), 256<<10)
	b := bytes.Repeat([]byte("b"), 128<<10)
	if _, _, err := Write(dir, artifactTestRel, a); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-done:
					return
				default:
				}
				got, err := Read(dir, artifactTestRel)
				if err != nil {
					t.Error(err)
					return
				}
				if !bytes.Equal(got, a) && !bytes.Equal(got, b) {
					t.Errorf("read a torn file of %d bytes", len(got))
					return
				}
			}
		})
	}
	for i := range 50 {
		content := a
		if i%2 == 0 {
			content = b
		}
		if _, _, err := Write(dir, artifactTestRel, content); err != nil {
			t.Error(err)
			break
		}
	}
	close(done)
	wg.Wait()
	if names := artifactTestNames(t, filepath.Join(dir, "4b825dc642cb6eb9", "ses_root01")); len(names) != 1 {
		t.Errorf("session directory holds %q, want only the artifact", names)
	}
}

func TestArtifactBadPathsRefusedBeforeDisk(t *testing.T) {
	bad := []string{
		"",
		"elegant-blue-tiger.md",
		"p/elegant-blue-tiger.md",
		"p/r/s/elegant-blue-tiger.md",
		"../r/elegant-blue-tiger.md",
		"p/../elegant-blue-tiger.md",
		"p/r/../elegant-blue-tiger.md",
		"/p/r/elegant-blue-tiger.md",
		"p//elegant-blue-tiger.md",
		"p/r/elegant-blue-tiger.txt",
		"p/r/elegant-blue-tiger",
		"p/r/..md",
		"p/r/.md",
		"p/r/Elegant-blue-tiger.md",
		"p/r/.elegant-blue-tiger.md.tmp-00",
		"p\x00/r/elegant-blue-tiger.md",
		"p/r\x00/elegant-blue-tiger.md",
		".hidden/r/elegant-blue-tiger.md",
		"p/.r/elegant-blue-tiger.md",
		"./r/elegant-blue-tiger.md",
	}
	// A data directory that does not exist: touching the disk first would
	// give fs.ErrNotExist instead of fsm.ErrInvalid.
	absent := filepath.Join(t.TempDir(), "absent")
	present := t.TempDir()
	for _, rel := range bad {
		for _, dir := range []string{absent, present} {
			if _, _, err := Write(dir, rel, []byte("x")); !errors.Is(err, fsm.ErrInvalid) {
				t.Errorf("Write(%q) = %v, want ErrInvalid", rel, err)
			}
			if _, err := Read(dir, rel); !errors.Is(err, fsm.ErrInvalid) {
				t.Errorf("Read(%q) = %v, want ErrInvalid", rel, err)
			}
		}
	}
	if _, err := os.Stat(absent); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("absent data directory was created: %v", err)
	}
	if names := artifactTestNames(t, present); len(names) != 0 {
		t.Errorf("data directory holds %q after refused writes", names)
	}

	// Content too large to read back is refused too.
	if _, _, err := Write(present, artifactTestRel, make([]byte, MaxSize+1)); !errors.Is(err, fsm.ErrInvalid) {
		t.Errorf("oversized write: %v, want ErrInvalid", err)
	}
	if names := artifactTestNames(t, present); len(names) != 0 {
		t.Errorf("data directory holds %q after an oversized write", names)
	}
}

func TestArtifactSymlinkEscape(t *testing.T) {
	base := t.TempDir()
	dir := filepath.Join(base, "data")
	outside := filepath.Join(base, "outside")
	for _, d := range []string{dir, outside} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	secret := filepath.Join(outside, "ses_root01")
	if err := os.Mkdir(secret, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(secret, "elegant-blue-tiger.md"), []byte("outside secret"), 0o600); err != nil {
		t.Fatal(err)
	}

	for _, target := range []string{outside, filepath.Join("..", "outside")} {
		t.Run(target, func(t *testing.T) {
			link := filepath.Join(dir, "proj")
			if err := os.Symlink(target, link); err != nil {
				t.Skipf("symlinks unavailable: %v", err)
			}
			defer os.Remove(link)

			if _, _, err := Write(dir, "proj/ses_root01/elegant-blue-tiger.md", []byte("escaped")); err == nil {
				t.Error("write through a symlink leading outside succeeded")
			}
			if _, _, err := Write(dir, "proj/ses_new/elegant-blue-tiger.md", []byte("escaped")); err == nil {
				t.Error("write creating directories through a symlink leading outside succeeded")
			}
			if got, err := Read(dir, "proj/ses_root01/elegant-blue-tiger.md"); err == nil {
				t.Errorf("read through a symlink leading outside returned %q", got)
			}
			if names := artifactTestNames(t, outside); len(names) != 1 || names[0] != "ses_root01" {
				t.Errorf("outside directory now holds %q", names)
			}
			if names := artifactTestNames(t, secret); len(names) != 1 {
				t.Errorf("outside session directory now holds %q", names)
			}
			if b, _ := os.ReadFile(filepath.Join(secret, "elegant-blue-tiger.md")); string(b) != "outside secret" {
				t.Errorf("outside file changed to %q", b)
			}
		})
	}

	// A symlink planted at the session level, and one at the file itself.
	if err := os.MkdirAll(filepath.Join(dir, "proj2"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(secret, filepath.Join(dir, "proj2", "ses_root01")); err != nil {
		t.Skipf("symlinks unavailable: %v", err)
	}
	if _, _, err := Write(dir, "proj2/ses_root01/elegant-blue-tiger.md", []byte("escaped")); err == nil {
		t.Error("write through a session-level symlink succeeded")
	}
	if err := os.MkdirAll(filepath.Join(dir, "proj3", "ses_root01"), 0o700); err != nil {
		t.Fatal(err)
	}
	fileLink := filepath.Join(dir, "proj3", "ses_root01", "elegant-blue-tiger.md")
	if err := os.Symlink(filepath.Join(secret, "elegant-blue-tiger.md"), fileLink); err != nil {
		t.Fatal(err)
	}
	if got, err := Read(dir, "proj3/ses_root01/elegant-blue-tiger.md"); err == nil {
		t.Errorf("read through a file symlink leading outside returned %q", got)
	}
	// Writing replaces the link itself (rename does not follow it).
	if _, _, err := Write(dir, "proj3/ses_root01/elegant-blue-tiger.md", []byte("inside")); err != nil {
		t.Fatal(err)
	}
	if info, err := os.Lstat(fileLink); err != nil || !info.Mode().IsRegular() {
		t.Errorf("artifact after write: %v, %v; want a regular file", info, err)
	}
	if b, _ := os.ReadFile(filepath.Join(secret, "elegant-blue-tiger.md")); string(b) != "outside secret" {
		t.Errorf("outside file changed to %q", b)
	}
}

func TestReadArtifactErrors(t *testing.T) {
	dir := t.TempDir()
	if _, err := Read(dir, artifactTestRel); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing directories: %v, want fs.ErrNotExist", err)
	}
	if _, _, err := Write(dir, "4b825dc642cb6eb9/ses_root01/brave-red-fox.md", []byte("x")); err != nil {
		t.Fatal(err)
	}
	if _, err := Read(dir, artifactTestRel); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing file: %v, want fs.ErrNotExist", err)
	}

	// Not a regular file.
	if err := os.Mkdir(filepath.Join(dir, filepath.FromSlash(artifactTestRel)), 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := Read(dir, artifactTestRel); !errors.Is(err, fsm.ErrInvalid) {
		t.Errorf("directory: %v, want ErrInvalid", err)
	}

	// Over the size limit.
	big := "4b825dc642cb6eb9/ses_root01/calm-green-otter.md"
	if err := os.WriteFile(filepath.Join(dir, filepath.FromSlash(big)), make([]byte, MaxSize+1), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Read(dir, big); !errors.Is(err, fsm.ErrInvalid) {
		t.Errorf("oversized file: %v, want ErrInvalid", err)
	}
}

func TestSweepTempFiles(t *testing.T) {
	base := t.TempDir()
	dir := filepath.Join(base, "data")
	outside := filepath.Join(base, "outside")
	write := func(rel string) string {
		t.Helper()
		p := filepath.Join(dir, filepath.FromSlash(rel))
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(rel), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	stale := []string{
		write("p1/ses_a/.elegant-blue-tiger.md.tmp-0123456789abcdef"),
		write("p1/ses_a/.brave-red-fox.md.tmp-1"),
		write("p2/ses_b/.calm-green-otter.md.tmp-ffff"),
	}
	keep := []string{
		write(".delegations.db"),
		write(".elegant-blue-tiger.md.tmp-top"),            // level 0
		write("p1/.elegant-blue-tiger.md.tmp-level1"),      // level 1
		write("p1/ses_a/sub/.elegant-blue-tiger.md.tmp-3"), // level 3
		write("p1/ses_a/elegant-blue-tiger.md"),
		write("p1/ses_a/notes.txt"),
		write("p1/ses_a/.hidden"),
		write("p1/ses_a/.elegant-blue-tiger.md.tmp-"), // no suffix
		write("p1/ses_a/.Bad-Id.md.tmp-1"),
		write("p1/ses_a/elegant-blue-tiger.md.tmp-1"), // no leading dot
		write(".git/ses_c/.elegant-blue-tiger.md.tmp-1"),
		write("p1/.ses_d/.elegant-blue-tiger.md.tmp-1"),
	}
	if err := os.MkdirAll(filepath.Join(dir, "p1", "ses_a", ".dark-gray-heron.md.tmp-dir"), 0o700); err != nil {
		t.Fatal(err)
	}
	keep = append(keep, filepath.Join(dir, "p1", "ses_a", ".dark-gray-heron.md.tmp-dir"))

	// Symlinks: a temp-named link to a file outside, and a project
	// directory that is a link to a tree outside holding a temp file.
	outsideTemp := filepath.Join(outside, "ses_e", ".eager-olive-lynx.md.tmp-1")
	if err := os.MkdirAll(filepath.Dir(outsideTemp), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(outsideTemp, []byte("outside"), 0o600); err != nil {
		t.Fatal(err)
	}
	keep = append(keep, outsideTemp)
	symlinks := true
	if err := os.Symlink(outside, filepath.Join(dir, "p3")); err != nil {
		symlinks = false
	}
	if symlinks {
		link := filepath.Join(dir, "p1", "ses_a", ".fuzzy-amber-moth.md.tmp-link")
		if err := os.Symlink(outsideTemp, link); err != nil {
			t.Fatal(err)
		}
		keep = append(keep, link, filepath.Join(dir, "p3"))
	}

	n, err := SweepTempFiles(dir)
	if err != nil {
		t.Fatal(err)
	}
	if n != len(stale) {
		t.Errorf("removed %d files, want %d", n, len(stale))
	}
	for _, p := range stale {
		if _, err := os.Lstat(p); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("stale temp file %s survived: %v", p, err)
		}
	}
	for _, p := range keep {
		if _, err := os.Lstat(p); err != nil {
			t.Errorf("%s was touched: %v", strings.TrimPrefix(p, base), err)
		}
	}

	// Nothing left: a second sweep removes nothing.
	if n, err := SweepTempFiles(dir); err != nil || n != 0 {
		t.Errorf("second sweep: %d, %v", n, err)
	}
}

func TestSweepTempFilesMissingDir(t *testing.T) {
	if _, err := SweepTempFiles(filepath.Join(t.TempDir(), "absent")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing data directory: %v, want fs.ErrNotExist", err)
	}
}

// TestWriteArtifactLeavesNoTempOnFailure: a write that cannot rename (the
// final name is a non-empty directory) removes its temp file.
func TestWriteArtifactLeavesNoTempOnFailure(t *testing.T) {
	dir := t.TempDir()
	final := filepath.Join(dir, filepath.FromSlash(artifactTestRel))
	if err := os.MkdirAll(filepath.Join(final, "child"), 0o700); err != nil {
		t.Fatal(err)
	}
	if _, _, err := Write(dir, artifactTestRel, []byte("x")); err == nil {
		t.Fatal("rename over a non-empty directory succeeded")
	}
	if names := artifactTestNames(t, filepath.Dir(final)); len(names) != 1 || names[0] != "elegant-blue-tiger.md" {
		t.Errorf("session directory holds %q, want no temp file", names)
	}
}

// TestWriteSyncsParentsUntilSeenDurable: a session directory that exists
// (created by another writer, or before this process) is not known to be
// durable: the first write there syncs it and its parents; later writes
// sync only the directory they rename in.
func TestWriteSyncsParentsUntilSeenDurable(t *testing.T) {
	var synced []string
	syncDir = func(root *os.Root, name string) error {
		synced = append(synced, name)
		return artifactSyncDir(root, name)
	}
	t.Cleanup(func() { syncDir = artifactSyncDir })
	dir := t.TempDir()
	// Another writer made the directory and has not synced its parents yet.
	if err := os.MkdirAll(filepath.Join(dir, "4b825dc642cb6eb9", "ses_root01"), 0o700); err != nil {
		t.Fatal(err)
	}
	if _, _, err := Write(dir, "4b825dc642cb6eb9/ses_root01/brave-red-fox.md", []byte("one")); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(synced, " "); got != "4b825dc642cb6eb9/ses_root01 4b825dc642cb6eb9 ." {
		t.Errorf("first write into an existing directory synced %q, want it and its parents", got)
	}
	synced = nil
	if _, _, err := Write(dir, "4b825dc642cb6eb9/ses_root01/calm-green-otter.md", []byte("two")); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(synced, " "); got != "4b825dc642cb6eb9/ses_root01" {
		t.Errorf("second write synced %q, want only its directory", got)
	}
}
