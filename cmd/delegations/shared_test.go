package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/delegations/delegations/cmd/delegations/api"
	"github.com/delegations/delegations/eventlog/etcdlog/etcdtest"
	"github.com/delegations/delegations/fsm"
	"github.com/delegations/delegations/projection"
)

// go test ./cmd/delegations -run TestSharedLog -shared.kills 20 kills more.
var sharedKills = flag.Int("shared.kills", 2, "rounds of TestSharedLog that kill a daemon with SIGKILL")

// sharedDaemon starts `delegations serve --etcd` (the test build, for
// --manual-clock) on data against the cluster's shared log, with serve's
// further options args.
func sharedDaemon(t *testing.T, c *etcdtest.Cluster, data string, args ...string) *daemon {
	t.Helper()
	return startDaemon(t, data, append([]string{"--manual-clock", "--etcd", strings.Join(c.Endpoints(), ","), "--etcd-prefix", "/shared/"}, args...)...)
}

// barrier returns once d holds every record committed to the shared log
// before it was called: d's own write returns only once d has applied it,
// and it comes after all of those.
func barrier(t *testing.T, d *daemon) {
	t.Helper()
	var rec fsm.Delegation
	d.call("register", api.RegisterRequest{
		RootSessionID: "ses_barrier", ParentSessionID: "ses_barrier", Agent: "explore", ProjectID: "0123456789abcdef",
		Prompt: "barrier", TimeoutMs: int64(24 * time.Hour / time.Millisecond),
	}, &rec)
}

// daemonIDOf reads the id under which the daemon of data directory dir
// owns delegations.
func daemonIDOf(t *testing.T, dir string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, DaemonIDFile))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// awaitKind returns the first event of kind in delegation id's stream
// through d, waiting for it to be appended (by any daemon).
func awaitKind(t *testing.T, d *daemon, id, kind string) api.Event {
	t.Helper()
	return awaitEvent(t, d.follow(0, id), kind+" of "+id, func(e api.Event) bool { return e.Kind == kind })
}

// countEvents counts the events of each kind of delegation id in d's log.
func countEvents(t *testing.T, d *daemon, id string) map[string]int {
	t.Helper()
	n := map[string]int{}
	if err := d.client.Events(context.Background(), api.EventsRequest{Delegation: id}, func(e api.Event) error {
		n[e.Kind]++
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestSharedLog runs three daemons, each with its own data directory (a
// daemon locks its directory), on one embedded etcd cluster of three
// members: a delegation registered through one (which owns it) is
// completed through another, its artifact written by the owner, and read
// through the third, which writes the artifact from the record; its
// notification is served by the owner alone; an acknowledgement (before
// the read, which would make the notification moot) and a deadline raced
// through several daemons are recorded once; a daemon killed with SIGKILL
// while clients drive it loses nothing acknowledged, and after it restarts
// its replica holds it all (-shared.kills rounds).
func TestSharedLog(t *testing.T) {
	if testing.Short() {
		t.Skip("starts an etcd cluster and three daemons")
	}
	c := etcdtest.Start(t, 3)
	dirs := []string{t.TempDir(), t.TempDir(), t.TempDir()}
	ds := []*daemon{sharedDaemon(t, c, dirs[0]), sharedDaemon(t, c, dirs[1]), sharedDaemon(t, c, dirs[2])}

	// Register through 0, complete through 1, read through 2.
	var reg, done fsm.Delegation
	ds[0].call("register", api.RegisterRequest{
		RootSessionID: "ses_root", ParentSessionID: "ses_parent", Agent: "explore", ProjectID: "0123456789abcdef",
		Prompt: "find the answer", TimeoutMs: int64(time.Hour / time.Millisecond),
	}, &reg)
	if owner := daemonIDOf(t, dirs[0]); reg.Owner != owner {
		t.Fatalf("registered through daemon 0 (%s), owned by %q", owner, reg.Owner)
	}
	ds[1].call("complete", api.CompleteRequest{ID: reg.ID, Result: "the answer is 42"}, &done)
	if done.State != fsm.Complete || !done.PersistedAt.IsZero() {
		t.Fatalf("complete through daemon 1: %s, persisted %v (the artifact is its owner's to write)", done.State, done.PersistedAt)
	}
	persisted := awaitKind(t, ds[0], reg.ID, "persisted")
	written, err := os.ReadFile(filepath.Join(dirs[0], persisted.ArtifactPath))
	if err != nil {
		t.Fatalf("the owner's artifact: %v", err)
	}
	for _, dir := range dirs[1:] {
		if _, err := os.Stat(filepath.Join(dir, persisted.ArtifactPath)); !os.IsNotExist(err) {
			t.Fatalf("%s has the artifact before reading it: %v", dir, err)
		}
	}
	var res projection.ReadResult
	// The terminal notification, acknowledged through all three at once:
	// one notified event, one answer that changed something.
	// Each daemon's manual clock started when it did: move them past the
	// completion, so that the notification is due through every one.
	for _, d := range ds {
		d.advance(time.Minute.Milliseconds())
	}
	barrier(t, ds[0])
	var ns api.Notifications
	ds[0].call("notifications", api.NotificationsRequest{ParentSessionID: "ses_parent"}, &ns)
	if len(ns.Notifications) != 1 {
		t.Fatalf("notifications due through daemon 0: %+v", ns.Notifications)
	}
	for i, d := range ds[1:] { // the owner's to deliver
		var others api.Notifications
		barrier(t, d)
		d.call("notifications", api.NotificationsRequest{ParentSessionID: "ses_parent"}, &others)
		if len(others.Notifications) != 0 {
			t.Fatalf("daemon %d serves daemon 0's notifications: %+v", i+1, others.Notifications)
		}
	}
	acks := make([]projection.AckResult, len(ds))
	var wg sync.WaitGroup
	for i, d := range ds {
		wg.Go(func() { d.call("ack", api.AckRequest{ID: ns.Notifications[0].ID}, &acks[i]) })
	}
	wg.Wait()
	if n := 3 - countTrue(acks[0].Already, acks[1].Already, acks[2].Already); n != 1 {
		t.Fatalf("%d acknowledgements changed something, want 1: %+v", n, acks)
	}
	for i, d := range ds {
		barrier(t, d)
		if n := countEvents(t, d, reg.ID)["notified"]; n != 1 {
			t.Fatalf("daemon %d's log holds %d notified events, want 1", i, n)
		}
		var again api.Notifications
		d.call("notifications", api.NotificationsRequest{ParentSessionID: "ses_parent"}, &again)
		for _, n := range again.Notifications {
			if n.ID == ns.Notifications[0].ID {
				t.Fatalf("due again through daemon %d after the acknowledgement: %+v", i, n)
			}
		}
	}

	barrier(t, ds[2])
	ds[2].call("read", api.ReadRequest{RootSessionID: "ses_root", ID: reg.ID}, &res)
	if !res.Artifact || !strings.Contains(res.Text, "the answer is 42") || res.Text != string(written) {
		t.Fatalf("read through daemon 2: artifact %v, text %q; daemon 1 wrote %q", res.Artifact, res.Text, written)
	}
	if got, err := os.ReadFile(filepath.Join(dirs[2], persisted.ArtifactPath)); err != nil || !bytes.Equal(got, written) {
		t.Fatalf("daemon 2's artifact, written from the record: %v, %q", err, got)
	}

	// A deadline two daemons' sweepers both enforce: one timed_out event.
	var short fsm.Delegation
	ds[0].call("register", api.RegisterRequest{
		RootSessionID: "ses_root", ParentSessionID: "ses_parent", Agent: "explore", ProjectID: "0123456789abcdef",
		Prompt: "too slow", TimeoutMs: 60_000,
	}, &short)
	barrier(t, ds[1])
	wg.Go(func() { ds[0].advance(10 * time.Minute.Milliseconds()) })
	wg.Go(func() { ds[1].advance(10 * time.Minute.Milliseconds()) })
	wg.Wait()
	for _, d := range ds[:2] {
		// A blocking read returns once that daemon sees the deadline enforced.
		d.call("read", api.ReadRequest{RootSessionID: "ses_root", ID: short.ID, WaitMs: hangGuard.Milliseconds()}, &res)
		if res.Delegation.State != fsm.Timeout {
			t.Fatalf("after the deadline: %s", res.Delegation.State)
		}
	}
	if n := countEvents(t, ds[1], short.ID)["timed_out"]; n != 1 {
		t.Fatalf("%d timed_out events, want 1", n)
	}

	// Rounds: clients drive two daemons; one is killed with SIGKILL
	// mid-run, the other's clients go on, then it stops; both restart on
	// their data directories (catching up, persisting what the kill left
	// unwritten), and every acknowledged command must be there, through
	// every daemon.
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 0))
	workers := make([]*crashWorker, 4)
	for i := range workers {
		workers[i] = newCrashWorker(i, rng.Uint64())
	}
	for round := range *sharedKills {
		victim := rng.IntN(3)
		other := (victim + 1 + rng.IntN(2)) % 3
		third := 3 - victim - other
		acked := make(chan struct{}, 4096)
		var running sync.WaitGroup
		for i, w := range workers {
			target := ds[victim]
			if i%2 == 1 {
				target = ds[other]
			}
			running.Go(func() { w.run(target.socket, acked) })
		}
		stopped := make(chan struct{})
		go func() { running.Wait(); close(stopped) }()
		await := func(n int) {
			for range n {
				select {
				case <-acked:
				case <-stopped: // every worker failed: reported below
					return
				}
			}
		}
		await(20 + rng.IntN(40))
		if code := ds[victim].stop(syscall.SIGKILL); code != -int(syscall.SIGKILL) {
			t.Fatalf("round %d: daemon %d exited %d, not by SIGKILL", round, victim, code)
		}
		await(10) // the other daemon's clients go on
		ds[other].stop(syscall.SIGTERM)
		running.Wait()
		for _, w := range workers {
			if w.err != nil {
				t.Fatalf("round %d: worker %d: %v", round, w.n, w.err)
			}
		}
		ds[victim] = sharedDaemon(t, c, dirs[victim])
		ds[other] = sharedDaemon(t, c, dirs[other])
		barrier(t, ds[third])
		// An artifact is its owner's to write, once it has seen the
		// terminal event another daemon recorded: wait for it.
		for _, w := range workers {
			for _, id := range w.order {
				var got fsm.Delegation
				ds[third].call("show", api.IDRequest{ID: id}, &got)
				if got.State.Terminal() && got.PersistedAt.IsZero() {
					awaitKind(t, ds[third], id, "persisted")
				}
			}
		}
		for _, d := range ds {
			barrier(t, d)
			for _, w := range workers {
				w.check(t, d)
			}
		}
		// The replicas hold the same records, in the same order: of any
		// two, one is a prefix of the other (a daemon may have appended
		// since, by itself: an artifact retried, say).
		want := allEvents(t, ds[third])
		for i, d := range ds {
			got := allEvents(t, d)
			n := min(len(got), len(want))
			if !slices.Equal(got[:n], want[:n]) {
				t.Fatalf("round %d: daemon %d's replica (%d events) and daemon %d's (%d) differ", round, i, len(got), third, len(want))
			}
		}
	}
	t.Logf("%d kills, %d delegations, %d records", *sharedKills, countDelegations(workers), ds[0].lastSeq())
}

// allEvents lists d's log as "seq kind id" lines.
func allEvents(t *testing.T, d *daemon) []string {
	t.Helper()
	var out []string
	if err := d.client.Events(context.Background(), api.EventsRequest{}, func(e api.Event) error {
		out = append(out, fmt.Sprint(e.Seq, " ", e.Kind, " ", e.ID, " ", e.Time))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

func countTrue(bs ...bool) int {
	n := 0
	for _, b := range bs {
		if b {
			n++
		}
	}
	return n
}

// TestSharedLogRefusesEmbeddedWrites: a command run without the daemon
// must not write a replica's data directory (only the daemon keeps it in
// step with the shared log); it says what to do, and reading works.
func TestSharedLogRefusesEmbeddedWrites(t *testing.T) {
	if testing.Short() {
		t.Skip("starts an etcd cluster and a daemon")
	}
	c := etcdtest.Start(t, 1)
	data := t.TempDir()
	d := sharedDaemon(t, c, data)
	var rec fsm.Delegation
	d.call("register", api.RegisterRequest{
		RootSessionID: "ses_root", ParentSessionID: "ses_parent", Agent: "explore", ProjectID: "0123456789abcdef",
		Prompt: "shared", TimeoutMs: int64(time.Hour / time.Millisecond),
	}, &rec)
	d.stop(syscall.SIGTERM)

	out := runBin(t, "", "--data", data, "complete", "--result", "done", rec.ID)
	if out.code == 0 || !strings.Contains(out.stderr, "delegations serve --etcd") {
		t.Fatalf("complete without the daemon: exit %d, stderr %q", out.code, out.stderr)
	}
	out = runBin(t, "", "--data", data, "show", rec.ID)
	if out.code != 0 || !strings.Contains(out.stdout, rec.ID) {
		t.Fatalf("show without the daemon: exit %d, %q %q", out.code, out.stdout, out.stderr)
	}
}

// TestServeEtcdFlags: serve's etcd options are checked before anything
// starts, and an etcd that does not answer is a clear error.
func TestServeEtcdFlags(t *testing.T) {
	data := t.TempDir()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--etcd-cacert", "ca.pem"}, "need --etcd"},
		{[]string{"--etcd", " , "}, "names no endpoint"},
		{[]string{"--etcd", "http://127.0.0.1:1", "--etcd-cert", "c.pem"}, "go together"},
		{[]string{"--etcd", "http://127.0.0.1:1", "--etcd-prefix", "delegations"}, "must end with /"},
		{[]string{"--etcd", "http://127.0.0.1:1", "--etcd-cacert", filepath.Join(data, "missing.pem")}, "etcd TLS"},
		{[]string{"--etcd", "http://127.0.0.1:1", "--etcd-timeout", "300ms", "--etcd-dial-timeout", "300ms"}, "etcd unavailable"},
		{[]string{"--etcd-timeout", "300ms", "--etcd-dial-timeout", "300ms"}, "etcd unavailable"}, // $DELEGATIONS_ETCD, below
	} {
		if !slices.Contains(tc.args, "--etcd") && !slices.Contains(tc.args, "--etcd-cacert") {
			t.Setenv("DELEGATIONS_ETCD", "http://127.0.0.1:1")
		}
		var stdout, stderr bytes.Buffer
		args := append([]string{"--data", data, "serve", "--socket", filepath.Join(data, "s.sock")}, tc.args...)
		err := run(context.Background(), args, strings.NewReader(""), &stdout, &stderr)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("serve %s: %v, want an error saying %q", strings.Join(tc.args, " "), err, tc.want)
		}
	}
}
