package main

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/delegations/delegations/cmd/delegations/api"
	"github.com/delegations/delegations/eventlog/etcdlog/etcdtest"
	"github.com/delegations/delegations/fsm"
	"github.com/delegations/delegations/projection"
)

// TestSharedLogTakeover: daemon A, one of three on a shared log with
// leases of two seconds, is killed with SIGKILL while it owns a delegation
// with a deadline, a terminal delegation whose artifact is pending (it was
// completed through B while A was stopped) and an unacknowledged
// notification. Once A's lease has expired, B and C race to take them over
// and one owned event each is recorded; the new owner enforces the
// deadline (once, although both clocks are past it), writes the artifact
// in its own data directory (once), and serves the notification, which is
// acknowledged once. A restarted under its old id takes back the ones that
// still need an owner, serves their notifications and enforces the
// deadline of the one still running.
func TestSharedLogTakeover(t *testing.T) {
	if testing.Short() {
		t.Skip("starts an etcd cluster and three daemons")
	}
	c := etcdtest.Start(t, 1)
	dirs := []string{t.TempDir(), t.TempDir(), t.TempDir()}
	start := func(i int) *daemon {
		return startDaemon(t, dirs[i], "--manual-clock", "--etcd", strings.Join(c.Endpoints(), ","),
			"--etcd-prefix", "/takeover/", "--etcd-lease-ttl", "2s")
	}
	ds := []*daemon{start(0), start(1), start(2)}
	ids := []string{daemonIDOf(t, dirs[0]), daemonIDOf(t, dirs[1]), daemonIDOf(t, dirs[2])}
	a := ds[0]
	register := func(d *daemon, prompt string, timeout time.Duration) fsm.Delegation {
		var rec fsm.Delegation
		d.call("register", api.RegisterRequest{
			RootSessionID: "ses_root", ParentSessionID: "ses_parent", Agent: "explore", ProjectID: "0123456789abcdef",
			Prompt: prompt, TimeoutMs: timeout.Milliseconds(),
		}, &rec)
		return rec
	}
	deadline := register(a, "too slow", time.Minute)
	pending := register(a, "pending artifact", time.Hour)
	notified := register(a, "unacknowledged", time.Hour)
	later := register(a, "taken over, still running", 2*time.Hour)
	for _, d := range []fsm.Delegation{deadline, pending, notified, later} {
		if d.Owner != ids[0] {
			t.Fatalf("%s registered through A (%s) is owned by %q", d.ID, ids[0], d.Owner)
		}
	}
	var done fsm.Delegation
	a.call("complete", api.CompleteRequest{ID: notified.ID, Result: "done"}, &done)
	if done.PersistedAt.IsZero() {
		t.Fatal("the owner did not write its artifact")
	}
	nid := projection.TerminalNotificationID(notified.ID)
	due := func(d *daemon) []string {
		var ns api.Notifications
		d.call("notifications", api.NotificationsRequest{ParentSessionID: "ses_parent"}, &ns)
		var out []string
		for _, n := range ns.Notifications {
			out = append(out, n.ID)
		}
		return out
	}
	if got := due(a); !slices.Equal(got, []string{nid}) {
		t.Fatalf("A serves %v, want [%s]", got, nid)
	}
	for _, d := range ds[1:] {
		barrier(t, d)
		if got := due(d); len(got) != 0 {
			t.Fatalf("a daemon other than the owner serves %v", got)
		}
	}

	// A stops; through B, a delegation of A's ends, its artifact A's to
	// write; then A is killed.
	if err := a.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	ds[1].call("complete", api.CompleteRequest{ID: pending.ID, Result: "finished while A was stopped"}, &done)
	if done.State != fsm.Complete {
		t.Fatalf("complete through B: %s", done.State)
	}
	if code := a.stop(syscall.SIGKILL); code != -int(syscall.SIGKILL) {
		t.Fatalf("A exited %d, not by SIGKILL", code)
	}
	// Both survivors' clocks pass the deadline: whichever takes it over
	// enforces it, once.
	ds[1].advance((10 * time.Minute).Milliseconds())
	ds[2].advance((10 * time.Minute).Milliseconds())

	// A's lease expires; B and C race to take its delegations over.
	took := awaitKind(t, ds[1], deadline.ID, "owned")
	n := slices.Index(ids, took.Owner)
	if n != 1 && n != 2 {
		t.Fatalf("taken over by %q, not B (%s) or C (%s)", took.Owner, ids[1], ids[2])
	}
	owner, bystander := ds[n], ds[3-n]
	for _, d := range []fsm.Delegation{pending, notified, later} {
		if e := awaitKind(t, owner, d.ID, "owned"); e.Owner != took.Owner {
			t.Logf("%s taken over by %s, %s by %s", deadline.ID, took.Owner, d.ID, e.Owner)
		}
	}
	var res projection.ReadResult
	owner.call("read", api.ReadRequest{RootSessionID: "ses_root", ID: deadline.ID, WaitMs: hangGuard.Milliseconds()}, &res)
	if res.Delegation.State != fsm.Timeout {
		t.Fatalf("after the takeover, the overdue delegation is %s", res.Delegation.State)
	}
	p := awaitKind(t, owner, pending.ID, "persisted")
	var rec fsm.Delegation
	owner.call("show", api.IDRequest{ID: pending.ID}, &rec)
	pendingOwner := slices.Index(ids, rec.Owner)
	if pendingOwner < 1 {
		t.Fatalf("the pending artifact's delegation is owned by %q", rec.Owner)
	}
	if _, err := os.Stat(filepath.Join(dirs[pendingOwner], p.ArtifactPath)); err != nil {
		t.Fatalf("the artifact is not in its new owner's data directory: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dirs[0], p.ArtifactPath)); !os.IsNotExist(err) {
		t.Fatalf("A wrote the artifact it was stopped before writing: %v", err)
	}

	// The notification: served by its new owner alone, acknowledged once.
	owner.call("show", api.IDRequest{ID: notified.ID}, &rec)
	noteOwner, noteOther := ds[slices.Index(ids, rec.Owner)], owner
	if noteOwner == owner {
		noteOther = bystander
	}
	barrier(t, noteOther)
	if got := due(noteOwner); !slices.Contains(got, nid) {
		t.Fatalf("the new owner serves %v, not %s", got, nid)
	}
	if got := due(noteOther); slices.Contains(got, nid) {
		t.Fatalf("a daemon that does not own it serves %s", nid)
	}
	var ack projection.AckResult
	noteOwner.call("ack", api.AckRequest{ID: nid}, &ack)
	if ack.Already {
		t.Fatalf("the acknowledgement after the takeover found it acknowledged already")
	}

	// A comes back under its old id and takes back what it registered and
	// what still needs an owner: the running one, and the two whose
	// notifications wait (the bridges that host their parent session talk
	// to A). The acknowledged one stays with its new owner.
	a = start(0)
	ds[0] = a
	if got := daemonIDOf(t, dirs[0]); got != ids[0] {
		t.Fatalf("A's id changed from %s to %s", ids[0], got)
	}
	for _, d := range []fsm.Delegation{later, deadline, pending} {
		awaitEvent(t, a.follow(0, d.ID), "A taking back "+d.ID, func(e api.Event) bool {
			return e.Kind == "owned" && e.Owner == ids[0]
		})
	}
	// A's manual clock starts afresh: bring it to B's and C's, past the
	// time the two notifications became due.
	a.advance((10 * time.Minute).Milliseconds())
	want := []string{projection.TerminalNotificationID(deadline.ID), projection.TerminalNotificationID(pending.ID)}
	slices.Sort(want)
	got := due(a)
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Fatalf("A, back, serves %v, want %v", got, want)
	}
	for _, d := range ds[1:] {
		barrier(t, d)
		if got := due(d); len(got) != 0 {
			t.Fatalf("a daemon other than A serves %v after A took them back", got)
		}
	}
	// A enforces the deadline of the running one it took back: its own new
	// delegation's deadline comes after it, so the sweep that times its
	// own out has passed the other.
	mine := register(a, "A's own", 3*time.Hour)
	a.advance((4 * time.Hour).Milliseconds())
	a.call("read", api.ReadRequest{RootSessionID: "ses_root", ID: mine.ID, WaitMs: hangGuard.Milliseconds()}, &res)
	if res.Delegation.State != fsm.Timeout {
		t.Fatalf("A's own delegation after its deadline: %s", res.Delegation.State)
	}

	for _, d := range ds {
		barrier(t, d)
	}
	for _, d := range []fsm.Delegation{deadline, pending, notified, later} {
		counts := countEvents(t, owner, d.ID)
		want := map[string]int{"owned": 2}
		switch d.ID {
		case deadline.ID:
			want["timed_out"], want["persisted"] = 1, 1
		case pending.ID:
			want["persisted"] = 1
		case notified.ID:
			want["persisted"], want["notified"], want["owned"] = 1, 1, 1
		case later.ID:
			want["timed_out"], want["persisted"] = 1, 1
		}
		for kind, n := range want {
			if counts[kind] != n {
				t.Errorf("%s (%s): %d %s events, want %d: %v", d.ID, d.Prompt, counts[kind], kind, n, counts)
			}
		}
	}
}
