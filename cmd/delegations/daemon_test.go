package main

import (
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/delegations/delegations/fsm"
)

// A stopped daemon (SIGSTOP) does not hang its clients: show, list and
// progress fail at the client's deadline (made short here with
// $DELEGATIONS_DAEMON_TIMEOUT) with exit 1 and a message naming the
// daemon's pid and what to do; continued, the daemon serves again.
func TestStoppedDaemon(t *testing.T) {
	data := t.TempDir()
	d := startDaemon(t, data)
	var rec fsm.Delegation
	d.call("register", registration("ses_root", "ses_root", "stop me"), &rec)
	pid := d.cmd.Process.Pid
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	continued := false
	cont := func() {
		if !continued {
			continued = true
			syscall.Kill(pid, syscall.SIGCONT)
		}
	}
	defer cont()
	want := []string{
		"the daemon (pid " + strconv.Itoa(pid) + ") on " + d.socket + " does not answer",
		"continue it with `kill -CONT " + strconv.Itoa(pid) + "`, or stop it and run the command again",
	}
	for _, args := range [][]string{
		{"show", rec.ID},
		{"list", "--root-session", "ses_root"},
		{"progress", "--message", "still here", rec.ID},
	} {
		type result struct {
			r   cliRun
			err error
		}
		ran := make(chan result, 1)
		go func() {
			r, err := execBinEnv(binary(t), []string{"DELEGATIONS_DAEMON_TIMEOUT=100ms"}, "", append([]string{"--data", data}, args...)...)
			ran <- result{r, err}
		}()
		var res result
		select {
		case res = <-ran:
		case <-time.After(hangGuard):
			cont() // lets the command end
			t.Fatalf("%s still waits for the stopped daemon after %s (hang guard)", args[0], hangGuard)
		}
		r, err := res.r, res.err
		if err != nil {
			t.Fatal(err)
		}
		if r.code != 1 || r.stdout != "" {
			t.Fatalf("%s with the daemon stopped: %+v, want exit 1", args[0], r)
		}
		for _, w := range want {
			if !strings.Contains(r.stderr, w) {
				t.Fatalf("%s with the daemon stopped: stderr %q, want %q", args[0], r.stderr, w)
			}
		}
	}
	cont()
	if r := runBin(t, "", "--data", data, "show", rec.ID); r.code != 0 || !strings.Contains(r.stdout, rec.ID) {
		t.Fatalf("show once continued: %+v", r)
	}
}
