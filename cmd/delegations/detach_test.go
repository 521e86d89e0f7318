package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/delegations/delegations/cmd/delegations/api"
)

// TestServeDetach starts two detached daemons at once on a data directory
// too deep for a socket inside it: exactly one daemon runs, both callers
// print its status, its socket is the short one every client derives, and
// a third --detach finds it running.
func TestServeDetach(t *testing.T) {
	data := filepath.Join(t.TempDir(), strings.Repeat("d", 60), strings.Repeat("e", 50))
	if len(filepath.Join(data, api.SocketName)) <= 103 {
		t.Fatal("the test's data directory is not deep enough")
	}
	want := api.DefaultSocket(data)
	if filepath.Dir(want) != api.ShortSocketDir() {
		t.Fatalf("DefaultSocket(%s) = %s, want a socket in %s", data, want, api.ShortSocketDir())
	}
	var wg sync.WaitGroup
	runs := make([]cliRun, 2)
	for i := range runs {
		wg.Go(func() { runs[i] = runBin(t, "", "--data", data, "--json", "serve", "--detach") })
	}
	wg.Wait()
	var sts []api.Status
	for _, r := range runs {
		if r.code != 0 {
			t.Fatalf("serve --detach: exit %d\n%s%s", r.code, r.stdout, r.stderr)
		}
		var st api.Status
		if err := json.Unmarshal([]byte(r.stdout), &st); err != nil {
			t.Fatalf("serve --detach printed %q: %v", r.stdout, err)
		}
		sts = append(sts, st)
	}
	pid := sts[0].PID
	t.Cleanup(func() {
		if p, err := os.FindProcess(pid); err == nil {
			p.Signal(syscall.SIGTERM)
		}
	})
	if sts[0] != sts[1] {
		t.Fatalf("the two callers saw different daemons: %+v and %+v", sts[0], sts[1])
	}
	if sts[0].Socket != want {
		t.Fatalf("the daemon listens on %s, clients derive %s", sts[0].Socket, want)
	}
	fi, err := os.Lstat(api.ShortSocketDir())
	if err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("%s: mode %v, err %v; want 0700", api.ShortSocketDir(), fi.Mode().Perm(), err)
	}

	// Every verb finds it without being told the socket.
	if r := runBin(t, "", "--data", data, "list", "--root-session", "ses_root"); r.code != 0 || r.stdout != "No delegations found for this session.\n" {
		t.Fatalf("list through the detached daemon: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	r := runBin(t, "", "--data", data, "serve", "--detach")
	if r.code != 0 || !strings.Contains(r.stdout, "already running") || !strings.Contains(r.stdout, want) {
		t.Fatalf("a third serve --detach: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	log, err := os.ReadFile(filepath.Join(data, LogName))
	if err != nil || !strings.Contains(string(log), "msg=serving") {
		t.Fatalf("the daemon's log %s: %v\n%s", LogName, err, log)
	}
}

// TestServeDetachFailure reports why a daemon could not start, from its
// log, instead of waiting.
func TestServeDetachFailure(t *testing.T) {
	data := t.TempDir()
	// A file where the socket must go is refused by serve.
	if err := os.WriteFile(api.DefaultSocket(data), []byte("not a socket"), 0o600); err != nil {
		t.Fatal(err)
	}
	r := runBin(t, "", "--data", data, "serve", "--detach")
	if r.code != 1 || !strings.Contains(r.stderr, "the daemon did not start") || !strings.Contains(r.stderr, "is not a socket") {
		t.Fatalf("serve --detach with a file at the socket path: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
}
