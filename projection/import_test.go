package projection

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cespare/xxhash/v2"

	"github.com/delegations/delegations/fsm"
	"github.com/delegations/delegations/projection/artifact"
)

// legacyFiles are files as the plugin wrote them: one current, one
// without **Session:** (older plugins), one with a status it did not know.
var legacyFiles = map[string]string{
	"0123456789abcdef/ses_legacy/quiet-amber-owl.md": "# Found the flaky test\n\nTestLock races on a fixed port.\n\n" +
		"**ID:** quiet-amber-owl\n**Agent:** explore\n**Status:** complete\n**Session:** ses_child_1\n" +
		"**Started:** 2026-10-01T09:00:00.000Z\n**Completed:** 2026-10-01T09:04:30.123Z\n\n---\n\nTestLock races on a fixed port.",
	"0123456789abcdef/ses_legacy/brave-teal-heron.md": "# brave-teal-heron\n\n(No description generated)\n\n" +
		"**ID:** brave-teal-heron\n**Agent:** general\n**Status:** error\n" +
		"**Started:** 2026-10-02T11:00:00.000Z\n**Completed:** 2026-10-02T11:00:05.000Z\n\n---\n\nError: model overloaded",
	"fedcba9876543210/ses_other/odd-gray-lynx.md": "# An older file\n\nWritten before statuses were stable.\n\n" +
		"**ID:** odd-gray-lynx\n**Agent:** explore\n**Status:** finished\n**Completed:** N/A\n\n---\n\nEverything is fine.",
}

func writeFiles(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for rel, content := range files {
		p := filepath.Join(dir, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

func outcomes(res ImportResult) map[string]ImportFile {
	out := map[string]ImportFile{}
	for _, f := range res.Files {
		out[f.Path] = f
	}
	return out
}

// TestImportTwiceImportsOnce imports a directory of legacy files from
// outside the data directory twice: the first time adopts every file
// (copied in byte for byte), the second adopts none and appends nothing.
func TestImportTwiceImportsOnce(t *testing.T) {
	ctx := context.Background()
	legacy := t.TempDir()
	writeFiles(t, legacy, legacyFiles)
	s := openStore(t, t.TempDir())

	var calls [][2]int
	res, err := s.Import(ctx, legacy, func(done, total int) { calls = append(calls, [2]int{done, total}) })
	if err != nil {
		t.Fatal(err)
	}
	if res.Imported != 3 || res.Skipped != 0 || res.Refused != 0 || !res.Copied {
		t.Fatalf("first import: %+v", res)
	}
	if len(calls) != 4 || calls[0] != [2]int{0, 3} || calls[3] != [2]int{3, 3} {
		t.Errorf("progress calls %v, want 0/3 .. 3/3", calls)
	}
	last := s.Log().Last()

	res, err = s.Import(ctx, legacy, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Imported != 0 || res.Skipped != 3 || res.Refused != 0 {
		t.Fatalf("second import: %+v", res)
	}
	for _, f := range res.Files {
		if f.Reason != "already imported" {
			t.Errorf("%s: reason %q", f.Path, f.Reason)
		}
	}
	if got := s.Log().Last(); got != last {
		t.Fatalf("second import appended %d records", got-last)
	}

	for rel, content := range legacyFiles {
		got, err := os.ReadFile(filepath.Join(s.Dir(), rel))
		if err != nil || string(got) != content {
			t.Errorf("%s in the data directory: %q, %v", rel, got, err)
		}
	}

	d, err := s.Get("quiet-amber-owl")
	if err != nil {
		t.Fatal(err)
	}
	content := legacyFiles["0123456789abcdef/ses_legacy/quiet-amber-owl.md"]
	if d.State != fsm.Complete || d.Title != "Found the flaky test" || d.Agent != "explore" || d.SessionID != "ses_child_1" ||
		d.ProjectID != "0123456789abcdef" || d.RootSessionID != "ses_legacy" || d.Result != "TestLock races on a fixed port." ||
		fsm.FormatTime(d.CompletedAt) != "2026-10-01T09:04:30.123Z" || d.PersistedAt.IsZero() ||
		d.ArtifactSize != int64(len(content)) || d.ArtifactHash != xxhash.Sum64String(content) || !d.NotifiedAt.IsZero() || d.Unread() {
		t.Errorf("imported record: %+v", d)
	}
	if d, _ := s.Get("brave-teal-heron"); d.State != fsm.Error || d.Error != "model overloaded" || d.SessionID != "" {
		t.Errorf("legacy record without a session: %+v", d)
	}
	if d, _ := s.Get("odd-gray-lynx"); d.State != fsm.Complete || d.CompletedAt.IsZero() {
		t.Errorf("unknown status and no times: %+v", d)
	}

	// Imported delegations are visible, not due for notification, not unread.
	ds, err := s.List("ses_legacy", ListOptions{})
	if err != nil || len(ds) != 2 {
		t.Fatalf("List = %d, %v", len(ds), err)
	}
	if ns := mustNotifications(t, s); len(ns) != 0 {
		t.Errorf("imported delegations made notifications due: %+v", ns)
	}
	running, unread, err := s.Carried("ses_legacy", 0)
	if err != nil || len(running)+len(unread) != 0 {
		t.Errorf("Carried = %d running, %d unread, %v", len(running), len(unread), err)
	}
	// Read returns the plugin's file verbatim, though the store renders it
	// otherwise, and does not rewrite it.
	if bytes.Equal(artifact.Render(&d), []byte(content)) {
		t.Fatal("test needs a legacy file that differs from the store's rendering")
	}
	rr, err := s.Read(ctx, "ses_legacy", "quiet-amber-owl", 0)
	if err != nil || rr.Text != content || !rr.Artifact {
		t.Fatalf("Read = %q, %v", rr.Text, err)
	}
	if got, _ := os.ReadFile(filepath.Join(s.Dir(), "0123456789abcdef/ses_legacy/quiet-amber-owl.md")); string(got) != content {
		t.Errorf("read rewrote the legacy file: %q", got)
	}
}

// TestImportInPlaceSurvivesRebuild imports the data directory itself, then
// rebuilds: the views come back identical and the legacy files untouched.
func TestImportInPlaceSurvivesRebuild(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	writeFiles(t, dir, legacyFiles)
	s, err := Open(dir, Options{Now: newClock().Now})
	if err != nil {
		t.Fatal(err)
	}
	own := register(t, s)
	if _, err := s.Complete(ctx, own.ID, "done", "", ""); err != nil {
		t.Fatal(err)
	}
	res, err := s.Import(ctx, dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Imported != 3 || res.Skipped != 1 || res.Refused != 0 || res.Copied {
		t.Fatalf("import in place: %+v", res)
	}
	if f := outcomes(res)["0123456789abcdef/ses_root/"+own.ID+".md"]; f.Outcome != ImportSkipped || !strings.Contains(f.Reason, "store's own") {
		t.Errorf("the store's own artifact: %+v", f)
	}
	before := dumpViews(t, s)
	s.Close()

	s, err = Open(dir, Options{Now: newClock().Now, Rebuild: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	after := dumpViews(t, s)
	if len(before) != len(after) {
		t.Fatalf("views: %d entries before the rebuild, %d after", len(before), len(after))
	}
	for k, v := range before {
		if after[k] != v {
			t.Errorf("view entry %q differs after the rebuild", k)
		}
	}
	for rel, content := range legacyFiles {
		if got, _ := os.ReadFile(filepath.Join(dir, rel)); string(got) != content {
			t.Errorf("rebuild rewrote %s: %q", rel, got)
		}
	}
}

// TestImportRefuses checks every kind of entry Import must not adopt, each
// with a reason, and that nothing outside the directory is read.
func TestImportRefuses(t *testing.T) {
	ctx := context.Background()
	legacy := t.TempDir()
	outside := t.TempDir()
	good := legacyFiles["0123456789abcdef/ses_legacy/quiet-amber-owl.md"]
	writeFiles(t, outside, map[string]string{"p/r/secret-red-fox.md": strings.ReplaceAll(good, "quiet-amber-owl", "secret-red-fox")})
	writeFiles(t, legacy, map[string]string{
		"p1/r1/bad_name.md":            good,
		"p1/r1/notes.txt":              "x",
		"p1/r1/bad-utf-eight.md":       "# T\n\n\xff\xfe",
		"p1/r1/evil-session-id.md":     strings.Replace(good, "**Session:** ses_child_1", "**Session:** ../../etc", 1),
		"p1/r1/long-agent-name.md":     strings.Replace(good, "**Agent:** explore", "**Agent:** "+strings.Repeat("a", fsm.MaxNameLen+1), 1),
		"p1/r1/nested-dir-here.md/x":   "x",
		"bad root/r1/calm-blue-ant.md": good,
		"p1/-r/calm-blue-ant.md":       good,
		"README.md":                    "not a project",
	})
	big := filepath.Join(legacy, "p1", "r1", "huge-white-whale.md")
	f, err := os.Create(big)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(artifact.MaxSize + 1); err != nil {
		t.Fatal(err)
	}
	f.Close()
	links := map[string]string{
		filepath.Join(legacy, "p1", "r1", "linked-red-fox.md"): filepath.Join(outside, "p", "r", "secret-red-fox.md"),
		filepath.Join(legacy, "p1", "linked"):                  filepath.Join(outside, "p", "r"),
		filepath.Join(legacy, "plink"):                         filepath.Join(outside, "p"),
	}
	for link, target := range links {
		if err := os.Symlink(target, link); err != nil {
			t.Skipf("symlinks: %v", err)
		}
	}

	s := openStore(t, t.TempDir())
	res, err := s.Import(ctx, legacy, nil)
	if err != nil {
		t.Fatal(err)
	}
	got := outcomes(res)
	want := map[string]string{
		"p1/r1/bad_name.md":         "invalid delegation id",
		"p1/r1/notes.txt":           "not an artifact file",
		"p1/r1/bad-utf-eight.md":    "not valid UTF-8",
		"p1/r1/evil-session-id.md":  "invalid session id",
		"p1/r1/long-agent-name.md":  "invalid agent",
		"p1/r1/nested-dir-here.md":  "a directory where artifact files belong",
		"p1/r1/huge-white-whale.md": "over the artifact limit",
		"p1/r1/linked-red-fox.md":   "symbolic link",
		"p1/linked":                 "symbolic link",
		"plink":                     "symbolic link",
		"bad root":                  "invalid project id",
		"p1/-r":                     "invalid root session id",
		"README.md":                 "not a directory",
	}
	for path, reason := range want {
		f, ok := got[path]
		if !ok || f.Outcome != ImportRefused || !strings.Contains(f.Reason, reason) {
			t.Errorf("%s: %+v, want refused with %q", path, f, reason)
		}
	}
	if res.Imported != 0 || res.Refused != len(want) || len(res.Files) != len(want) {
		t.Errorf("result: imported %d, refused %d, %d files; want 0, %d", res.Imported, res.Refused, len(res.Files), len(want))
	}
	if s.Log().Last() != 0 {
		t.Errorf("refused files appended %d records", s.Log().Last())
	}
	if _, err := os.Stat(filepath.Join(s.Dir(), "p1")); err == nil {
		t.Error("a refused file was copied into the data directory")
	}
}

// TestImportDoesNotReplaceDataFiles refuses a file whose copy would
// replace a different file already in the data directory.
func TestImportDoesNotReplaceDataFiles(t *testing.T) {
	legacy, data := t.TempDir(), t.TempDir()
	rel := "0123456789abcdef/ses_legacy/quiet-amber-owl.md"
	writeFiles(t, legacy, map[string]string{rel: legacyFiles[rel]})
	writeFiles(t, data, map[string]string{rel: "# something else"})
	s := openStore(t, data)
	res, err := s.Import(context.Background(), legacy, nil)
	if err != nil {
		t.Fatal(err)
	}
	if f := outcomes(res)[rel]; f.Outcome != ImportRefused || !strings.Contains(f.Reason, "already holds a different") {
		t.Fatalf("%+v", f)
	}
	if got, _ := os.ReadFile(filepath.Join(data, rel)); string(got) != "# something else" {
		t.Errorf("the data directory's file was replaced: %q", got)
	}
}

func TestImportMissingDirectory(t *testing.T) {
	s := openStore(t, t.TempDir())
	if _, err := s.Import(context.Background(), filepath.Join(t.TempDir(), "nope"), nil); err == nil {
		t.Fatal("importing a missing directory succeeded")
	}
}

func TestImportCancelled(t *testing.T) {
	legacy := t.TempDir()
	writeFiles(t, legacy, legacyFiles)
	s := openStore(t, t.TempDir())
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	res, err := s.Import(ctx, legacy, nil)
	if err == nil || res.Imported != 0 {
		t.Fatalf("cancelled import: %+v, %v", res, err)
	}
}
