package api

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
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

// A client refuses a daemon socket that another user listens on: whoever
// it is would read every prompt and result. The listener is perl's, run
// as nobody (root only: it needs setuid).
func TestDialRefusesAnotherUsersDaemon(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root to run a listener as another user")
	}
	perl, err := exec.LookPath("perl")
	if err != nil {
		t.Skip("needs perl for a listener of another user")
	}
	// Not under t.TempDir(), whose parent nobody cannot enter.
	dir, err := os.MkdirTemp("", "delegations-other-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	socket := filepath.Join(dir, "other.sock")
	cmd := exec.Command(perl, "-MIO::Socket::UNIX", "-e",
		`my $s = IO::Socket::UNIX->new(Type => SOCK_STREAM(), Local => $ARGV[0], Listen => 1) or die $!; $| = 1; print "ready\n"; while (my $c = $s->accept) { close $c }`, socket)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	if line, err := bufio.NewReader(out).ReadString('\n'); err != nil || line != "ready\n" {
		t.Fatalf("the listener did not start: %q %v\n%s", line, err, stderr.String())
	}
	_, err = Dial(context.Background(), socket)
	if err == nil || !strings.Contains(err.Error(), "runs as uid 65534") {
		t.Fatalf("Dial to another user's socket: %v", err)
	}
}
