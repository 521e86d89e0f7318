package api

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A data directory too deep for a socket inside it gets one socket in
// ShortSocketDir, the same however the directory is named: through a
// symlink or directly, before it exists and after.
func TestDefaultSocketShort(t *testing.T) {
	base := t.TempDir()
	deep := filepath.Join(base, strings.Repeat("d", 70), strings.Repeat("e", 40))
	before := DefaultSocket(deep)
	if filepath.Dir(before) != ShortSocketDir() {
		t.Fatalf("DefaultSocket(%s) = %s, want one in %s", deep, before, ShortSocketDir())
	}
	if err := os.MkdirAll(deep, 0o700); err != nil {
		t.Fatal(err)
	}
	if after := DefaultSocket(deep); after != before {
		t.Errorf("the socket changed once the directory exists: %s, then %s", before, after)
	}
	link := filepath.Join(base, "link")
	if err := os.Symlink(filepath.Join(base, strings.Repeat("d", 70)), link); err != nil {
		t.Fatal(err)
	}
	viaLink := filepath.Join(link, strings.Repeat("e", 40), "..", strings.Repeat("e", 40))
	if len(filepath.Join(filepath.Clean(viaLink), SocketName)) <= maxSocketPath {
		t.Skip("the temporary directory is too short for this case")
	}
	if got := DefaultSocket(viaLink); got != before {
		t.Errorf("through a symlink: %s, want %s", got, before)
	}
	if short := DefaultSocket(base); short != filepath.Join(base, SocketName) {
		t.Errorf("a short data directory: %s", short)
	}
}

// The short socket's shared directory is refused unless it is ours, a
// real directory, and closed to others.
func TestCheckPrivateDir(t *testing.T) {
	base := t.TempDir()
	good := filepath.Join(base, "good")
	if err := os.Mkdir(good, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := checkPrivateDir(good); err != nil {
		t.Errorf("a private directory: %v", err)
	}
	open := filepath.Join(base, "open")
	if err := os.Mkdir(open, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(open, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := checkPrivateDir(open); err == nil || !strings.Contains(err.Error(), "open to other users") {
		t.Errorf("a directory open to others: %v", err)
	}
	link := filepath.Join(base, "link")
	if err := os.Symlink(good, link); err != nil {
		t.Fatal(err)
	}
	if err := checkPrivateDir(link); err == nil || !strings.Contains(err.Error(), "not a directory") {
		t.Errorf("a symlink: %v", err)
	}
	if os.Getuid() != 0 {
		t.Log("not root: the foreign-owner case needs chown")
		return
	}
	foreign := filepath.Join(base, "foreign")
	if err := os.Mkdir(foreign, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(foreign, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	if err := checkPrivateDir(foreign); err == nil || !strings.Contains(err.Error(), "belongs to another user") {
		t.Errorf("another user's directory: %v", err)
	}
}
