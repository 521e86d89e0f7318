package projection

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestOpenSweepsStaleTempFiles: opening a store removes the temp files a
// crash left (older than the open), in the background (Close stops it),
// and leaves a temp file written since.
func TestOpenSweepsStaleTempFiles(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	sdir := filepath.Join(dir, "4b825dc642cb6eb9", "ses_root01")
	if err := os.MkdirAll(sdir, 0o700); err != nil {
		t.Fatal(err)
	}
	stale := filepath.Join(sdir, ".brave-red-fox.md.tmp-crash")
	fresh := filepath.Join(sdir, ".calm-green-otter.md.tmp-now")
	for _, p := range []string{stale, fresh} {
		if err := os.WriteFile(p, []byte("partial"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	old := time.Now().Add(-time.Hour)
	if err := os.Chtimes(stale, old, old); err != nil {
		t.Fatal(err)
	}
	s, err = Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	<-s.swept // Close would stop it
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(stale); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("stale temp file after open: %v", err)
	}
	if _, err := os.Stat(fresh); err != nil {
		t.Errorf("a temp file younger than the open was removed: %v", err)
	}
}
