package api

import (
	"context"
	"errors"
	"path/filepath"
	"syscall"
	"testing"
)

// A daemon whose connection backlog is full does not answer: Dial and a
// call on a client dialled before are unavailable, not internal. (Linux
// refuses such a connect with EAGAIN; the BSDs with ECONNREFUSED, which
// Dial takes for no daemon.)
func TestClientFullBacklog(t *testing.T) {
	socket := filepath.Join(t.TempDir(), "s")
	fd, err := syscall.Socket(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(fd)
	if err := syscall.Bind(fd, &syscall.SockaddrUnix{Name: socket}); err != nil {
		t.Fatal(err)
	}
	// A backlog of one waiting connection, which nothing accepts: the
	// Dial below takes it.
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	c, err := DialWith(context.Background(), socket, ClientOptions{ConnectTimeout: hangGuard, ResponseTimeout: hangGuard})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := DialWith(context.Background(), socket, ClientOptions{ConnectTimeout: hangGuard, ResponseTimeout: hangGuard}); Code(err) != "unavailable" || !errors.Is(err, ErrNotAnswering) {
		t.Errorf("dial to a full backlog: code %q (%v), want unavailable", Code(err), err)
	}
	if _, err := c.Status(context.Background()); Code(err) != "unavailable" || !errors.Is(err, ErrNotAnswering) {
		t.Errorf("a call to a full backlog: code %q (%v), want unavailable", Code(err), err)
	}
}
