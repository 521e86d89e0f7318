package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/delegations/delegations/cmd/delegations/api"
	"github.com/delegations/delegations/fsm"
	"github.com/delegations/delegations/projection"
)

// The soak: go test ./cmd/delegations -run TestCrash -crash.kills 200 -timeout 1h
var (
	crashKills = flag.Int("crash.kills", 4, "SIGKILLs of the daemon in TestCrash (the soak runs 200 or more)")
	crashSeed  = flag.Uint64("crash.seed", 0, "seed of TestCrash's choices (0: from the clock; printed)")
)

// crashWorkers drive the daemon at once; each owns its delegations and
// one parent session, so what it was told is what must be there.
const crashWorkers = 4

// TestCrash kills the daemon with SIGKILL at random moments while clients
// drive it, restarts it each time, and checks after every restart that
// every acknowledged command is there and the log verifies. At the end it
// lets every deadline pass and delivers every notification, then checks
// that every delegation ended with its artifact and exactly one
// acknowledged terminal notification, at most one all-complete per cycle,
// nothing stayed active, and replay finds nothing wrong.
func TestCrash(t *testing.T) {
	seed := *crashSeed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	t.Logf("seed %d (rerun with -crash.seed %d)", seed, seed)
	rng := rand.New(rand.NewPCG(seed, 0))
	data := t.TempDir()
	workers := make([]*crashWorker, crashWorkers)
	for i := range workers {
		workers[i] = newCrashWorker(i, rng.Uint64())
	}

	var killed, acked int
	for round := range *crashKills + 1 {
		d := startDaemon(t, data, "--manual-clock")
		for _, w := range workers {
			w.check(t, d)
		}
		if res := verifyThrough(t, d); res.Failed {
			t.Fatalf("round %d: verify after the restart:\n%s", round, res.Text)
		}
		if round == *crashKills {
			finish(t, d, workers)
			t.Logf("%d kills; %d commands acknowledged; %d delegations", killed, acked, countDelegations(workers))
			return
		}
		// Kill after a random number of acknowledged commands, while the
		// workers are in the middle of others.
		target := 5 + rng.IntN(40)
		acks := make(chan struct{}, 1024)
		var wg sync.WaitGroup
		for _, w := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				w.run(d.socket, acks)
			}()
		}
		stopped := make(chan struct{})
		go func() { wg.Wait(); close(stopped) }()
	wait:
		for range target {
			select {
			case <-acks:
			case <-stopped: // every worker failed: reported below
				break wait
			}
		}
		if code := d.stop(syscall.SIGKILL); code != -int(syscall.SIGKILL) {
			t.Fatalf("round %d: the daemon exited %d, not by SIGKILL", round, code)
		}
		wg.Wait()
		for _, w := range workers {
			if w.err != nil {
				t.Fatalf("round %d: worker %d: %v", round, w.n, w.err)
			}
		}
		killed++
		acked += target
	}
}

// crashWorker is one client: it remembers the last record each of its
// commands was acknowledged with, and the notifications it acknowledged.
type crashWorker struct {
	n      int
	rng    *rand.Rand
	parent string
	recs   map[string]fsm.Delegation // id → the last acknowledged record
	order  []string                  // ids in registration order
	acked  map[string]bool           // acknowledged notification ids
	key    string                    // a registration whose outcome is unknown: retried first
	nextID int
	err    error // a broken invariant seen while running
	// sent is the delegation the last step's command named ("" for a
	// registration or notifications); unsure holds those whose last
	// command's outcome is unknown, left alone until check adopts their
	// records. TestCrash stops a worker at its first unknown outcome and
	// needs neither; TestSharedCrash's workers go on through another daemon.
	sent    string
	unsure  map[string]bool
	unknown int // commands whose outcome is unknown, in TestSharedCrash
}

func newCrashWorker(n int, seed uint64) *crashWorker {
	return &crashWorker{
		n: n, rng: rand.New(rand.NewPCG(seed, uint64(n))), parent: fmt.Sprintf("ses_parent%d", n),
		recs: map[string]fsm.Delegation{}, acked: map[string]bool{},
	}
}

// run drives the daemon until it dies, reporting each acknowledged
// command on acks.
func (w *crashWorker) run(socket string, acks chan<- struct{}) {
	c, err := api.Dial(context.Background(), socket)
	if err != nil {
		return // already killed
	}
	defer c.Close()
	ctx := context.Background()
	for {
		err := w.step(ctx, c)
		var ae *api.Error
		switch {
		case err == nil:
			acks <- struct{}{}
		case errors.As(err, &ae):
			w.err = fmt.Errorf("the daemon refused a command the worker's record allows: %w", err)
			return
		default:
			return // the daemon died: the outcome of this command is unknown
		}
	}
}

// step sends one command chosen at random.
func (w *crashWorker) step(ctx context.Context, c *api.Client) error {
	active := w.active()
	w.sent = ""
	switch r := w.rng.IntN(10); {
	case w.key != "" || len(active) < 2 || r < 2:
		if w.key == "" {
			w.nextKey()
		}
		req := api.RegisterRequest{
			RootSessionID: "ses_root", ParentSessionID: w.parent, Agent: "explore", ProjectID: "0123456789abcdef",
			Prompt: "task " + w.key, TimeoutMs: int64(time.Hour/time.Millisecond) + w.rng.Int64N(int64(time.Hour/time.Millisecond)),
			IdempotencyKey: w.key,
		}
		var d fsm.Delegation
		if err := c.Call(ctx, "register", req, &d); err != nil {
			return err
		}
		if _, known := w.recs[d.ID]; !known {
			w.order = append(w.order, d.ID)
		}
		w.recs[d.ID], w.key = d, ""
		return nil
	case r < 4:
		return w.notifications(ctx, c)
	}
	id := active[w.rng.IntN(len(active))]
	var verb string
	var req any
	switch r := w.rng.IntN(10); {
	case r < 4:
		verb, req = "progress", api.ProgressRequest{ID: id, Message: fmt.Sprintf("progress %d", w.rng.IntN(1000))}
	case r < 7:
		verb, req = "complete", api.CompleteRequest{ID: id, Result: "result of " + id}
	case r < 8:
		verb, req = "fail", api.FailRequest{ID: id, Error: "failed"}
	case r < 9:
		verb, req = "cancel", api.CancelRequest{ID: id}
	default:
		verb, req = "start", api.StartRequest{ID: id, SessionID: "ses_child_" + strings.ReplaceAll(id, "-", "_")}
	}
	w.sent = id
	var d fsm.Delegation
	if err := c.Call(ctx, verb, req, &d); err != nil {
		return err
	}
	w.recs[id] = d
	return nil
}

// notifications acknowledges what is due for the worker's parent session.
func (w *crashWorker) notifications(ctx context.Context, c *api.Client) error {
	var ns api.Notifications
	if err := c.Call(ctx, "notifications", api.NotificationsRequest{ParentSessionID: w.parent}, &ns); err != nil {
		return err
	}
	for _, n := range ns.Notifications {
		if w.acked[n.ID] {
			return fmt.Errorf("%w: %s is due again after it was acknowledged", errInvariant, n.ID)
		}
		var res projection.AckResult
		if err := c.Call(ctx, "ack", api.AckRequest{ID: n.ID}, &res); err != nil {
			return err
		}
		w.acked[n.ID] = true
	}
	return nil
}

// nextKey sets the idempotency key of the worker's next registration.
func (w *crashWorker) nextKey() {
	w.nextID++
	w.key = fmt.Sprintf("w%d-%d", w.n, w.nextID)
}

var errInvariant = &api.Error{Code: "invariant", Message: "invariant broken"}

func (w *crashWorker) active() []string {
	var ids []string
	for _, id := range w.order {
		if w.recs[id].State.Active() && !w.unsure[id] {
			ids = append(ids, id)
		}
	}
	return ids
}

// check compares what the restarted daemon has with what the worker was
// told, then adopts the daemon's records: commands in flight at the kill
// may or may not have happened, and either is fine.
func (w *crashWorker) check(t *testing.T, d *daemon) {
	t.Helper()
	for _, id := range w.order {
		want := w.recs[id]
		var got fsm.Delegation
		d.call("show", api.IDRequest{ID: id}, &got)
		switch {
		case got.Version < want.Version:
			t.Fatalf("worker %d: %s lost acknowledged events: version %d, acknowledged %d", w.n, id, got.Version, want.Version)
		case want.State.Terminal() && got.State != want.State:
			t.Fatalf("worker %d: %s was acknowledged %s and is now %s", w.n, id, want.State, got.State)
		case got.State.Terminal() && got.PersistedAt.IsZero():
			t.Fatalf("worker %d: %s is %s but its artifact is not written after the restart", w.n, id, got.State)
		}
		for nid := range w.acked {
			if nid == projection.TerminalNotificationID(id) && got.NotifiedAt.IsZero() {
				t.Fatalf("worker %d: %s was acknowledged but the record is not notified", w.n, nid)
			}
		}
		w.recs[id] = got
	}
	clear(w.unsure)
	var ns api.Notifications
	d.call("notifications", api.NotificationsRequest{ParentSessionID: w.parent}, &ns)
	for _, n := range ns.Notifications {
		if w.acked[n.ID] {
			t.Fatalf("worker %d: %s is due again after it was acknowledged", w.n, n.ID)
		}
	}
}

func verifyThrough(t *testing.T, d *daemon) api.Rendered {
	t.Helper()
	var res api.Rendered
	d.call("verify", api.VerifyRequest{}, &res)
	return res
}

// finish lets every deadline pass and delivers every notification, then
// checks how everything ended.
func finish(t *testing.T, d *daemon, workers []*crashWorker) {
	t.Helper()
	d.advance((3 * time.Hour).Milliseconds()) // every deadline is within two hours
	for _, w := range workers {
		for _, id := range w.order {
			var res projection.ReadResult
			// A blocking read returns once the sweeper has timed it out.
			d.call("read", api.ReadRequest{RootSessionID: "ses_root", ID: id, WaitMs: hangGuard.Milliseconds()}, &res)
			if !res.Artifact || res.Delegation.State.Active() {
				t.Fatalf("%s after every deadline: %s, artifact %v", id, res.Delegation.State, res.Artifact)
			}
		}
	}
	// Deliver everything; all-completes come due after their quiet period.
	for range 10 {
		var ns api.Notifications
		d.call("notifications", api.NotificationsRequest{}, &ns)
		if len(ns.Notifications) == 0 {
			d.advance(time.Second.Milliseconds())
			d.call("notifications", api.NotificationsRequest{}, &ns)
			if len(ns.Notifications) == 0 {
				break
			}
		}
		for _, n := range ns.Notifications {
			var res projection.AckResult
			d.call("ack", api.AckRequest{ID: n.ID}, &res)
		}
	}
	var active api.Delegations
	d.call("active", api.ActiveRequest{}, &active)
	if len(active.Delegations) != 0 {
		t.Fatalf("%d delegations still active after every deadline", len(active.Delegations))
	}
	checkEnded(t, d, workers)
}

// checkEnded checks, through d, how the workers' delegations ended once
// every deadline passed and every notification was delivered.
func checkEnded(t *testing.T, d *daemon, workers []*crashWorker) {
	t.Helper()
	// Exactly one acknowledged terminal notification per delegation and
	// at most one all-complete per (parent, cycle), counted in the log.
	notified := map[string]int{}
	cycles := map[string]int{}
	err := d.client.Events(context.Background(), api.EventsRequest{}, func(e api.Event) error {
		switch e.Kind {
		case "notified":
			notified[e.ID]++
		case "all_complete_notified":
			cycles[fmt.Sprintf("%s#%d", e.ID, e.Cycle)]++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range workers {
		for _, id := range w.order {
			var got fsm.Delegation
			d.call("show", api.IDRequest{ID: id}, &got)
			if got.PersistedAt.IsZero() || got.NotifiedAt.IsZero() || notified[id] != 1 {
				t.Errorf("%s ended %s: persisted %v, notified %v, %d notified events", id, got.State, got.PersistedAt, got.NotifiedAt, notified[id])
			}
		}
	}
	for c, n := range cycles {
		if n != 1 {
			t.Errorf("all-complete of %s acknowledged %d times", c, n)
		}
	}
	var rep api.Rendered
	d.call("replay", api.ReplayRequest{}, &rep)
	if rep.Failed {
		t.Fatalf("replay after the crashes:\n%s", rep.Text)
	}
}

func countDelegations(workers []*crashWorker) int {
	n := 0
	for _, w := range workers {
		n += len(w.order)
	}
	return n
}
