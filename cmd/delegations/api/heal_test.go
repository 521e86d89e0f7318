//go:build linux

package api

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/delegations/delegations/fsm"
	"github.com/delegations/delegations/projection"
)

// After a failed write (the log's descriptor swapped for /dev/full, as in
// eventlog's fault tests) the daemon refuses writes with a code and a
// message saying it mends itself, and shows it in its status; once the
// cause is gone it reopens the log on its clock's backoff, without a
// restart: every acknowledged record is there, a register retried with
// its idempotency key is recorded once, and writes resume.
func TestReopenAfterWriteFailure(t *testing.T) {
	logs := newLogWatch()
	d := startDaemonWith(t, func(c *Config) {
		c.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	})
	ctx := context.Background()
	var acked []fsm.Delegation
	for range 3 {
		acked = append(acked, d.register(t, "ses_root", 0))
	}
	d.call(t, "complete", CompleteRequest{ID: acked[0].ID, Result: "done before the fault"}, &acked[0])
	before, err := d.client.Status(ctx)
	if err != nil || before.State != "ok" {
		t.Fatalf("status before the fault: %+v %v", before, err)
	}

	// A blocking read waits across the reopening.
	read := make(chan error, 1)
	go func() {
		var res projection.ReadResult
		err := d.client.Call(ctx, "read", ReadRequest{RootSessionID: "ses_root", ID: acked[2].ID, WaitMs: 600_000}, &res)
		if err == nil && (!res.Artifact || !strings.HasSuffix(res.Text, "awaited")) {
			err = fmt.Errorf("blocking read: %+v", res)
		}
		read <- err
	}()
	guard, cancel := context.WithTimeout(ctx, hangGuard)
	defer cancel()
	if err := d.clock.AwaitTimer(guard, t0.Add(600*time.Second)); err != nil {
		t.Fatal(err)
	}

	fd := logDescriptor(t, filepath.Join(d.dir, projection.LogFile))
	fd.inject(t, "/dev/full")
	retry := RegisterRequest{RootSessionID: "ses_root", ParentSessionID: "ses_root", Agent: "explore", ProjectID: "proj", IdempotencyKey: "tool-call-7"}
	var rec fsm.Delegation
	err = d.client.Call(ctx, "register", retry, &rec)
	if Code(err) != "broken" || !strings.Contains(err.Error(), "the daemon reopens the log by itself") {
		t.Fatalf("register on a full disk: %v (code %s)", err, Code(err))
	}
	st, err := d.client.Status(ctx)
	if err != nil || st.State != "broken" || !strings.Contains(st.Error, "no space left on device") && !strings.Contains(st.Error, "commit") || st.Attempts != 0 || st.NextAttempt == "" {
		t.Fatalf("status while broken: %+v %v", st, err)
	}
	// Reads go on meanwhile.
	d.call(t, "show", IDRequest{ID: acked[1].ID}, &rec)

	fd.heal(t)
	if err := d.clock.AwaitTimer(guard, t0.Add(retryFirst)); err != nil {
		t.Fatalf("no reopen scheduled: %v", err)
	}
	d.clock.Advance(retryFirst)
	logs.await(t, "reopened the log; writes resume")
	if !strings.Contains(logs.String(), "reopening the log after a failed write") {
		t.Fatalf("the attempt was not logged:\n%s", logs)
	}

	st, err = d.client.Status(ctx)
	if err != nil || st.State != "ok" || st.Error != "" || st.LastSeq < before.LastSeq {
		t.Fatalf("status after reopening: %+v %v (before: %+v)", st, err, before)
	}
	for _, a := range acked {
		var got fsm.Delegation
		d.call(t, "show", IDRequest{ID: a.ID}, &got)
		if got.State != a.State || got.Version != a.Version {
			t.Fatalf("acknowledged %s: %s v%d, now %s v%d", a.ID, a.State, a.Version, got.State, got.Version)
		}
	}
	var first, again fsm.Delegation
	d.call(t, "register", retry, &first)
	d.call(t, "register", retry, &again)
	if first.ID == "" || again.ID != first.ID {
		t.Fatalf("retried register: %s then %s, want one delegation", first.ID, again.ID)
	}
	d.call(t, "complete", CompleteRequest{ID: acked[1].ID, Result: "done after"}, &rec)
	if rec.State != fsm.Complete || rec.PersistedAt.IsZero() {
		t.Fatalf("complete after reopening: %+v", rec)
	}
	d.call(t, "complete", CompleteRequest{ID: acked[2].ID, Result: "awaited"}, &rec)
	if err := <-read; err != nil {
		t.Fatalf("the read that waited across the reopening: %v", err)
	}
	var v Rendered
	d.call(t, "verify", VerifyRequest{}, &v)
	if v.Failed {
		t.Fatalf("verify after reopening:\n%s", v.Text)
	}
}

// logFD is the log's descriptor inside the daemon (this process), with a
// duplicate of the healthy file to restore it.
type logFD struct{ fd, healthy int }

// logDescriptor finds the descriptor open on path.
func logDescriptor(t *testing.T, path string) *logFD {
	t.Helper()
	want, err := filepath.EvalSymlinks(path)
	if err != nil {
		t.Fatal(err)
	}
	es, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("no /proc/self/fd: %v", err)
	}
	for _, e := range es {
		if target, err := os.Readlink("/proc/self/fd/" + e.Name()); err == nil && target == want {
			fd, _ := strconv.Atoi(e.Name())
			h, _, errno := syscall.Syscall(syscall.SYS_FCNTL, uintptr(fd), syscall.F_DUPFD_CLOEXEC, 0)
			if errno != 0 {
				t.Fatal(errno)
			}
			l := &logFD{fd: fd, healthy: int(h)}
			t.Cleanup(func() { syscall.Close(l.healthy) })
			return l
		}
	}
	t.Fatalf("no descriptor open on %s", path)
	return nil
}

// inject points the descriptor at device.
func (l *logFD) inject(t *testing.T, device string) {
	t.Helper()
	dev, err := os.OpenFile(device, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	if err := syscall.Dup3(int(dev.Fd()), l.fd, syscall.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
}

// heal points the descriptor back at the log file.
func (l *logFD) heal(t *testing.T) {
	t.Helper()
	if err := syscall.Dup3(l.healthy, l.fd, syscall.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
}

// logWatch collects a daemon's log and lets a test wait for a line.
type logWatch struct {
	mu      sync.Mutex
	b       strings.Builder
	changed chan struct{}
}

func newLogWatch() *logWatch { return &logWatch{changed: make(chan struct{})} }

func (w *logWatch) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.b.Write(p)
	close(w.changed)
	w.changed = make(chan struct{})
	return len(p), nil
}

func (w *logWatch) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}

// await waits until the log holds text.
func (w *logWatch) await(t *testing.T, text string) {
	t.Helper()
	guard := time.NewTimer(hangGuard)
	defer guard.Stop()
	for {
		w.mu.Lock()
		found, changed := strings.Contains(w.b.String(), text), w.changed
		w.mu.Unlock()
		if found {
			return
		}
		select {
		case <-changed:
		case <-guard.C:
			t.Fatalf("the daemon did not log %q (hang guard):\n%s", text, w)
		}
	}
}
