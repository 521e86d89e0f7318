package main

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/delegations/delegations/cmd/delegations/api"
)

// TestStatusPageRefusesNetworkAddresses: serve --http and ui take
// loopback addresses only; anything else is a usage error (exit 2) that
// says why, before a daemon starts.
func TestStatusPageRefusesNetworkAddresses(t *testing.T) {
	data := t.TempDir()
	for _, args := range [][]string{
		{"serve", "--http", "0.0.0.0:7777"},
		{"serve", "--http", ":7777"},
		{"serve", "--http", "192.168.1.10:7777"},
		{"serve", "--detach", "--http", "example.com:80"},
		{"ui", "--http", "0.0.0.0:0"},
	} {
		r := cli(t, data, "", args...)
		if r.code != 2 || !strings.Contains(r.stderr, "not a loopback address") {
			t.Errorf("%v: exit %d, stderr %q; want 2 and 'not a loopback address'", args, r.code, r.stderr)
		}
	}
}

// TestUIOnABridgesDaemon: `ui` on a daemon started without --http (as a
// bridge starts it) asks it for its page, which then answers; asking
// again gives the same page.
func TestUIOnABridgesDaemon(t *testing.T) {
	data := t.TempDir()
	d := startDaemon(t, data)
	r := runBin(t, "", "--data", data, "--json", "ui")
	if r.code != 0 {
		t.Fatalf("ui: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	var out struct {
		URL string `json:"url"`
		PID int    `json:"pid"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &out); err != nil || !strings.HasPrefix(out.URL, "http://127.0.0.1:") || !strings.Contains(out.URL, "token=") {
		t.Fatalf("ui printed %q: %v", r.stdout, err)
	}
	if out.PID != d.cmd.Process.Pid {
		t.Errorf("ui names pid %d, the daemon is %d", out.PID, d.cmd.Process.Pid)
	}
	// The token logs in (a redirect setting the cookie), and the board answers.
	hc := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := hc.Get(out.URL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther || len(resp.Cookies()) == 0 {
		t.Fatalf("GET %s: %s, cookies %v", out.URL, resp.Status, resp.Cookies())
	}
	again := runBin(t, "", "--data", data, "--json", "ui")
	if again.code != 0 || !strings.Contains(again.stdout, out.URL) {
		t.Errorf("a second ui: exit %d, %q; want the same page %s", again.code, again.stdout, out.URL)
	}
}

// TestOpenPageHidesTheToken: ui --open hands the opener a private file
// that redirects to the page, never the URL with its token (a command
// line is readable by every local user).
func TestOpenPageHidesTheToken(t *testing.T) {
	for _, runtime := range []string{t.TempDir(), ""} {
		t.Setenv("XDG_RUNTIME_DIR", runtime)
		t.Setenv("TMPDIR", t.TempDir())
		openFileLife = 10 * time.Millisecond
		const u = "http://127.0.0.1:4242/?token=s3cret&x=<1>"
		var got string
		err := openPage(context.Background(), u, func(_ context.Context, path string) error {
			got = path
			if strings.Contains(path, "s3cret") || strings.Contains(path, "http") {
				t.Errorf("the opener got %q", path)
			}
			fi, err := os.Stat(path)
			if err != nil || fi.Mode().Perm() != 0o600 {
				t.Errorf("the file %s: %v %v, want mode 0600", path, fi.Mode(), err)
			}
			if di, err := os.Stat(filepath.Dir(path)); err != nil || di.Mode().Perm() != 0o700 {
				t.Errorf("its directory: %v %v, want mode 0700", di.Mode(), err)
			}
			b, _ := os.ReadFile(path)
			if !strings.Contains(string(b), `url=http://127.0.0.1:4242/?token=s3cret&amp;x=&lt;1&gt;"`) {
				t.Errorf("the file does not redirect to the page:\n%s", b)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		_, err = os.Stat(got)
		if runtime != "" && err != nil {
			t.Errorf("in the runtime directory, the file was removed: %v", err)
		}
		if runtime == "" && err == nil {
			t.Errorf("outside the runtime directory, %s was left behind", got)
		}
	}
}

// TestUIAddrOnABridgesDaemon: `ui --http ADDR` on a daemon started without
// a page serves it on ADDR; the daemon itself refuses a network address.
func TestUIAddrOnABridgesDaemon(t *testing.T) {
	data := t.TempDir()
	d := startDaemon(t, data)
	<-d.ready
	c, err := api.Dial(context.Background(), d.socket)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var st api.Status
	if err := c.Call(context.Background(), "page", api.PageRequest{Addr: "0.0.0.0:0"}, &st); api.Code(err) != "invalid" {
		t.Errorf("page on 0.0.0.0: %v, want invalid", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	r := runBin(t, "", "--data", data, "--json", "ui", "--http", addr)
	if r.code != 0 || !strings.Contains(r.stdout, `"http://`+addr+`/?token=`) {
		t.Fatalf("ui --http %s: exit %d, %s%s", addr, r.code, r.stdout, r.stderr)
	}
}
