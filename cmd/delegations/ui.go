package main

import (
	"bytes"
	"context"
	"fmt"
	"html"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/delegations/delegations/cmd/delegations/api"
	"github.com/delegations/delegations/cmd/delegations/ui"
)

var uiVerb = verb{
	name:     "ui",
	synopsis: "[--open] [--http 127.0.0.1:0]",
	summary:  "print the status page's address (with its token), starting a daemon that serves it if none runs",
	example:  "delegations ui --open   # the board in your browser; or open the printed address",
	run:      runUI,
}

// DefaultUIAddr is where `delegations ui` asks a daemon it starts to serve
// the page: loopback, on a port the kernel picks.
const DefaultUIAddr = "127.0.0.1:0"

func runUI(ctx context.Context, e *env, args []string) error {
	fs := newFlags(e)
	open := fs.Bool("open", false, "also open the page with xdg-open")
	addr := fs.String("http", DefaultUIAddr, "the loopback address a daemon started here serves the page on (port 0 picks a free one)")
	if _, err := parse(e, fs, args, 0); err != nil {
		return err
	}
	if _, err := ui.CheckAddr(*addr); err != nil {
		return usagef("--http %v", err)
	}
	dir, err := dataDir(e.data)
	if err != nil {
		return err
	}
	if dir, err = filepath.Abs(dir); err != nil {
		return err
	}
	socket := socketPath(e.socket, dir)
	st, _, err := startDetached(ctx, dir, socket, []string{"--http=" + *addr})
	if err != nil {
		return err
	}
	if st.UI == "" {
		// A daemon started without the page (a bridge's): ask it to serve one.
		c, err := api.Dial(ctx, st.Socket)
		if err != nil {
			return err
		}
		defer c.Close()
		if err := c.Call(ctx, "page", api.PageRequest{Addr: *addr}, &st); err != nil {
			return fmt.Errorf("the daemon (pid %d) on %s could not start its status page: %w", st.PID, st.Socket, err)
		}
	}
	if e.json {
		if err := writeJSON(e.stdout, map[string]any{"url": st.UI, "pid": st.PID, "socket": st.Socket}); err != nil {
			return err
		}
	} else if _, err := fmt.Fprintln(e.stdout, st.UI); err != nil {
		return err
	}
	if *open {
		return openPage(ctx, st.UI, xdgOpen)
	}
	return nil
}

// xdgOpen opens path with the desktop's handler.
func xdgOpen(ctx context.Context, path string) error {
	if out, err := exec.CommandContext(ctx, "xdg-open", path).CombinedOutput(); err != nil {
		return fmt.Errorf("xdg-open could not open the page (%v); open the address above in a browser yourself\n%s", err, bytes.TrimSpace(out))
	}
	return nil
}

// openPage opens the page's URL through a file that redirects to it (as
// Jupyter does): the URL carries the token, and a command line is readable
// by every local user (/proc/PID/cmdline), a 0600 file in a 0700
// directory is not. The file stays in the user's runtime directory
// ($XDG_RUNTIME_DIR, private and cleared at logout); elsewhere it is
// removed once the browser had time to read it.
func openPage(ctx context.Context, pageURL string, open func(ctx context.Context, path string) error) error {
	base, keep := os.Getenv("XDG_RUNTIME_DIR"), true
	if base == "" {
		base, keep = os.TempDir(), false
	}
	dir, err := os.MkdirTemp(base, "delegations-ui-") // 0700
	if err != nil {
		return fmt.Errorf("open the page: %w", err)
	}
	path := filepath.Join(dir, "open.html")
	var b bytes.Buffer
	esc := html.EscapeString(pageURL)
	fmt.Fprintf(&b, "<!doctype html>\n<meta charset=\"utf-8\">\n<meta http-equiv=\"refresh\" content=\"0;url=%s\">\n<title>Delegations</title>\n<p><a href=\"%s\">Open the status page</a></p>\n", esc, esc)
	if err := os.WriteFile(path, b.Bytes(), 0o600); err != nil {
		os.RemoveAll(dir)
		return fmt.Errorf("open the page: %w", err)
	}
	err = open(ctx, path)
	if err != nil || !keep {
		if err == nil {
			// xdg-open returns before the browser reads the file.
			select {
			case <-ctx.Done():
			case <-time.After(openFileLife):
			}
		}
		os.RemoveAll(dir)
	}
	return err
}

// openFileLife is how long the redirecting file outlives xdg-open outside
// the runtime directory.
var openFileLife = 5 * time.Second
