package main

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"path/filepath"

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
		if err := c.Call(ctx, "page", struct{}{}, &st); err != nil {
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
		if out, err := exec.CommandContext(ctx, "xdg-open", st.UI).CombinedOutput(); err != nil {
			return fmt.Errorf("xdg-open could not open the page (%v); open the address above in a browser yourself\n%s", err, bytes.TrimSpace(out))
		}
	}
	return nil
}
