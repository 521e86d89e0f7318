package hosttest

import (
	"bufio"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// serveGuard bounds the wait for the daemon to serve: a guard against a
// hang, not a timing assertion.
const serveGuard = time.Minute

// Serve starts `delegations serve` with the environment env (its data
// directory from $DELEGATIONS_DATA there) and returns once it logs that
// it serves. It is stopped (SIGTERM) at the end of the test.
func Serve(tb testing.TB, env []string) {
	tb.Helper()
	cmd := exec.Command(Delegations(tb), "serve")
	cmd.Env = env
	stderr, err := cmd.StderrPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		tb.Fatalf("hosttest: start delegations serve: %v", err)
	}
	ready, done := make(chan struct{}), make(chan struct{})
	var log strings.Builder
	go func() {
		sc := bufio.NewScanner(stderr)
		served := false
		for sc.Scan() {
			if !served {
				log.WriteString(sc.Text() + "\n")
			}
			if !served && strings.Contains(sc.Text(), "msg=serving ") {
				served = true
				close(ready)
			}
		}
		cmd.Wait()
		close(done)
	}()
	tb.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		<-done
	})
	select {
	case <-ready:
	case <-done:
		tb.Fatalf("hosttest: delegations serve exited before serving:\n%s", log.String())
	case <-time.After(serveGuard):
		tb.Fatalf("hosttest: delegations serve not serving after %s (hang guard)", serveGuard)
	}
}
