package api

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/delegations/delegations/projection"
)

// Deadlines short enough for a test to see them pass; the tests wait for
// what the daemon does when they pass, never for the time itself.
const testDeadline = 50 * time.Millisecond

func dialRaw(t *testing.T, d *daemon) net.Conn {
	t.Helper()
	c, err := net.Dial("unix", DefaultSocket(d.dir))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// awaitClosed reads c until the daemon closes it; a read that reaches the
// hang guard instead fails the test.
func awaitClosed(t *testing.T, c net.Conn, what string) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(hangGuard))
	if _, err := io.Copy(io.Discard, c); err != nil {
		t.Fatalf("%s: the daemon did not close the connection: %v", what, err)
	}
}

// A chunked body that never ends is cut off at the body deadline: the
// connection is closed (after a 400 saying why), not held forever.
func TestBodyDeadline(t *testing.T) {
	d := startDaemonWith(t, func(c *Config) { c.BodyTimeout = testDeadline })
	c := dialRaw(t, d)
	if _, err := io.WriteString(c, "POST /v1/show HTTP/1.1\r\nHost: d\r\nContent-Type: application/json\r\n"+
		"Transfer-Encoding: chunked\r\n\r\n5\r\n{\"id\"\r\n"); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(hangGuard))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("no answer to a body that never ends: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(b), "read request body") {
		t.Fatalf("answer %s %s", resp.Status, b)
	}
	awaitClosed(t, c, "a body that never ends")

	// Headers that never end are cut off too.
	d2 := startDaemonWith(t, func(c *Config) { c.HeaderTimeout = testDeadline })
	c2 := dialRaw(t, d2)
	io.WriteString(c2, "POST /v1/show HTTP/1.1\r\nHost: d\r\n")
	awaitClosed(t, c2, "headers that never end")
}

// A blocking wait is not cut by the body deadline, which must end once the
// body is read (net/http's watch for a hang-up would otherwise cancel the
// wait when it passes): the read ends on the clock, as asked.
func TestBodyDeadlineSparesWaits(t *testing.T) {
	d := startDaemonWith(t, func(c *Config) { c.BodyTimeout = testDeadline })
	rec := d.register(t, "ses_root", 3_600_000)
	done := make(chan error, 1)
	go func() {
		var res projection.ReadResult
		err := d.client.Call(context.Background(), "read", ReadRequest{RootSessionID: "ses_root", ID: rec.ID, WaitMs: 600_000}, &res)
		if err == nil && (res.Artifact || !strings.Contains(res.Text, "Status: registered")) {
			err = fmt.Errorf("read of an active delegation: %+v", res)
		}
		done <- err
	}()
	ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
	defer cancel()
	if err := d.clock.AwaitTimer(ctx, t0.Add(600*time.Second)); err != nil {
		t.Fatal(err)
	}
	// A body deadline set after the read's has passed once this
	// connection is cut off.
	c := dialRaw(t, d)
	io.WriteString(c, "POST /v1/show HTTP/1.1\r\nHost: d\r\nTransfer-Encoding: chunked\r\n\r\n1\r\n{\r\n")
	awaitClosed(t, c, "a body that never ends")
	d.clock.Advance(601 * time.Second)
	if err := <-done; err != nil {
		t.Fatalf("a blocking read that outlived the body deadline: %v", err)
	}
}

// Kept-alive connections that send nothing more are closed after the
// idle deadline.
func TestIdleConnectionsClosed(t *testing.T) {
	d := startDaemonWith(t, func(c *Config) { c.IdleTimeout = testDeadline })
	conns := make([]net.Conn, 20)
	for i := range conns {
		c := dialRaw(t, d)
		io.WriteString(c, "GET /v1/status HTTP/1.1\r\nHost: d\r\n\r\n")
		c.SetReadDeadline(time.Now().Add(hangGuard))
		br := bufio.NewReader(c)
		resp, err := http.ReadResponse(br, nil)
		if err != nil || resp.StatusCode != http.StatusOK || resp.Close {
			t.Fatalf("status on connection %d: %v %+v", i, err, resp)
		}
		io.Copy(io.Discard, resp.Body)
		conns[i] = c
	}
	for i, c := range conns {
		awaitClosed(t, c, fmt.Sprint("idle connection ", i))
	}
}

// Connections beyond the limit wait unaccepted: the daemon's descriptors
// stay within the limit plus a margin while clients open many more, and
// the waiting ones are served as earlier ones close.
func TestConnectionLimit(t *testing.T) {
	const limit, extra, margin = 8, 120, 16
	d := startDaemonWith(t, func(c *Config) { c.MaxConnections = limit })
	d.client.Close()
	base := openFDs(t)
	// Fill the limit with kept-alive connections, each served once.
	held := make([]net.Conn, limit)
	for i := range held {
		held[i] = dialRaw(t, d)
		io.WriteString(held[i], "GET /v1/status HTTP/1.1\r\nHost: d\r\n\r\n")
		held[i].SetReadDeadline(time.Now().Add(hangGuard))
		resp, err := http.ReadResponse(bufio.NewReader(held[i]), nil)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
	}
	// Many more, each sending a request that must wait for a slot.
	answered := make(chan int, extra)
	var wg sync.WaitGroup
	var waiting []net.Conn
	for i := range extra {
		c := dialRaw(t, d)
		waiting = append(waiting, c)
		io.WriteString(c, "GET /v1/status HTTP/1.1\r\nHost: d\r\n\r\n")
		wg.Go(func() {
			c.SetReadDeadline(time.Now().Add(hangGuard))
			if resp, err := http.ReadResponse(bufio.NewReader(c), nil); err == nil {
				io.Copy(io.Discard, resp.Body)
				answered <- i
			}
		})
	}
	// Free the slots one by one; as many waiting connections are served.
	for i, c := range held {
		c.Close()
		select {
		case <-answered:
		case <-time.After(hangGuard):
			t.Fatalf("no waiting connection served after %d closed", i+1)
		}
	}
	// This process holds every client end (limit closed, extra open) and
	// the daemon's ends: at most limit of those, plus its own few.
	if n, most := openFDs(t), base+extra+limit+margin; n > most {
		t.Fatalf("%d descriptors open with %d clients connected and a limit of %d; want at most %d (%d before)", n, extra, limit, most, base)
	}
	for _, c := range waiting {
		c.Close()
	}
	wg.Wait()
}

func openFDs(t *testing.T) int {
	t.Helper()
	es, err := os.ReadDir("/proc/self/fd")
	if errors.Is(err, os.ErrNotExist) {
		t.Skip("no /proc/self/fd to count descriptors")
	}
	if err != nil {
		t.Fatal(err)
	}
	return len(es)
}
