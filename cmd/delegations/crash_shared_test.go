package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/delegations/delegations/cmd/delegations/api"
	"github.com/delegations/delegations/eventlog/etcdlog/etcdtest"
	"github.com/delegations/delegations/fsm"
	"github.com/delegations/delegations/projection"
)

// The soak: go test ./cmd/delegations -run TestSharedCrash -sharedcrash.kills 50 -timeout 1h -v
// (-crash.seed replays the choices of a run, whose seed is printed; the
// interleaving of the daemons is not replayed).
var sharedCrashKills = flag.Int("sharedcrash.kills", 2, "SIGKILLs of a daemon in TestSharedCrash (a soak runs 50 or more)")

// TestSharedCrash is TestCrash on a log shared through etcd: an embedded
// etcd cluster of three members, three `serve --etcd` daemons with leases
// of two seconds, each on its own data directory (a daemon locks its
// data directory, so two daemons cannot share one: checked here too), and
// crashWorkers sending each command through a daemon picked at random.
// A command's answer reflects its commit, and another daemon's replica,
// once it holds that version of the stream, shows the same record.
//
// Each round SIGKILLs a random daemon while the workers drive them all;
// the workers go on through the others. Once its lease has expired the
// survivors take over its delegations that still need an owner (an owned
// event each, awaited in the log); it is restarted under its id
// sometimes (always when fewer than two daemons are left) and takes back
// those it registered. After each round every acknowledged command is
// there through every daemon and the log verifies. The first round also
// stops one etcd member mid-run, and the workers' commands go on being
// acknowledged. A last round stops two of the three members: a
// registration and a completion through a daemon are refused within a
// bound with an error saying etcd is unavailable and what to check, and
// reads go on from the replica; once the members are back, each refused
// command is wholly in the log or wholly absent (the registration, retried
// with its idempotency key, is recorded once) and the log verifies.
//
// At the end every daemon runs again: every deadline passes, every
// notification is delivered by its delegation's owner alone, each
// delegation has exactly one acknowledged terminal notification, nothing
// acknowledged is lost, and replay finds nothing wrong through any daemon.
func TestSharedCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("starts an etcd cluster and three daemons")
	}
	seed := *crashSeed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	t.Logf("seed %d (rerun with -crash.seed %d)", seed, seed)
	rng := rand.New(rand.NewPCG(seed, 1))
	cc := newCrashCluster(t)
	workers := make([]*crashWorker, crashWorkers)
	for i := range workers {
		workers[i] = newCrashWorker(i, rng.Uint64())
		workers[i].unsure = map[string]bool{}
	}

	// A second daemon on a data directory in use fails, and leaves the
	// first serving.
	out := runBin(t, "", "--data", cc.dirs[0], "serve", "--etcd", strings.Join(cc.etcd.Endpoints(), ","), "--etcd-prefix", "/shared/")
	if out.code == 0 {
		t.Fatalf("a second daemon on daemon 0's data directory started: %+v", out)
	}
	t.Logf("a second daemon on a data directory in use: exit %d: %s", out.code, strings.TrimSpace(out.stderr))
	cc.syncBarrier(cc.ds[0])

	var kills, acked, unknown int
	for round := range *sharedCrashKills {
		stopMember := -1
		if round == 0 {
			stopMember = rng.IntN(3)
		}
		victim, killed, n, u := cc.killRound(t, rng, workers, round, stopMember)
		kills++
		acked += n
		unknown += u
		cc.awaitTakeOver(t, workers, victim, killed)
		for i, d := range cc.ds {
			if d == nil && (cc.live() < 2 || rng.IntN(2) == 0) {
				cc.restart(t, workers, i)
			}
		}
		cc.checkAll(t, workers, fmt.Sprintf("round %d", round))
	}
	cc.quorumRound(t, rng, workers)
	cc.checkAll(t, workers, "after etcd regained its quorum")

	for i, d := range cc.ds {
		if d == nil {
			cc.restart(t, workers, i)
		}
	}
	cc.finish(t, workers)
	t.Logf("%d kills; %d commands acknowledged, %d with an unknown outcome, %d read back through another daemon; %d delegations",
		kills, acked, unknown, cc.crossReads.Load(), countDelegations(workers))
}

// crashCluster is TestSharedCrash's etcd cluster and daemons.
type crashCluster struct {
	t    *testing.T
	etcd *etcdtest.Cluster
	dirs []string // daemon i's data directory
	ids  []string // daemon i's id

	mu sync.Mutex
	ds []*daemon // nil while daemon i is down
	// registrants caches the daemon each delegation was registered
	// through (it never changes).
	registrants map[string]string
	crossReads  atomic.Int64 // records checked through another daemon
	// retried counts, per daemon, the failed artifact writes its clock
	// was moved on for (awaitPersisted).
	retried map[*daemon]int
}

func newCrashCluster(t *testing.T) *crashCluster {
	cc := &crashCluster{
		t: t, etcd: etcdtest.Start(t, 3), dirs: []string{t.TempDir(), t.TempDir(), t.TempDir()},
		ds: make([]*daemon, 3), registrants: map[string]string{}, retried: map[*daemon]int{},
	}
	for i := range cc.ds {
		cc.ds[i] = cc.start(i)
		cc.ids = append(cc.ids, daemonIDOf(t, cc.dirs[i]))
	}
	return cc
}

// sharedCrashTimeout is the daemons' --etcd-timeout: a command without a
// quorum is refused after it. refusalBound bounds how long that takes
// through the daemon; past it the test fails rather than hang.
const (
	sharedCrashTimeout = 2 * time.Second
	refusalBound       = 30 * time.Second
)

// start runs daemon i on its data directory with a lease of two seconds.
func (cc *crashCluster) start(i int) *daemon {
	cc.t.Helper()
	return sharedDaemon(cc.t, cc.etcd, cc.dirs[i], "--etcd-lease-ttl", "2s", "--etcd-timeout", sharedCrashTimeout.String())
}

// live counts the daemons running.
func (cc *crashCluster) live() int {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	n := 0
	for _, d := range cc.ds {
		if d != nil {
			n++
		}
	}
	return n
}

// pick returns a running daemon other than not (-1: any), at random; nil
// when there is none.
func (cc *crashCluster) pick(rng *rand.Rand, not int) (int, *daemon) {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	var up []int
	for i, d := range cc.ds {
		if d != nil && i != not {
			up = append(up, i)
		}
	}
	if len(up) == 0 {
		return -1, nil
	}
	i := up[rng.IntN(len(up))]
	return i, cc.ds[i]
}

// running returns the daemons that run, by index.
func (cc *crashCluster) running() map[int]*daemon {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	m := map[int]*daemon{}
	for i, d := range cc.ds {
		if d != nil {
			m[i] = d
		}
	}
	return m
}

// killRound lets the workers drive every running daemon, stops etcd
// member stopMember (unless -1) mid-run, SIGKILLs a random daemon mid-run
// and lets the workers go on through the others. It returns the victim,
// the last record of the log once the victim was dead (its records are
// all before), and how many commands were acknowledged and how many had an
// unknown outcome.
func (cc *crashCluster) killRound(t *testing.T, rng *rand.Rand, workers []*crashWorker, round, stopMember int) (victim int, killed uint64, acked, unknown int) {
	t.Helper()
	acks := make(chan struct{}, 1<<16)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, w := range workers {
		wg.Go(func() { w.runShared(cc, stop, acks) })
	}
	stopped := make(chan struct{})
	go func() { wg.Wait(); close(stopped) }()
	await := func(n int, what string) {
		t.Helper()
		guard := time.NewTimer(hangGuard)
		defer guard.Stop()
		for range n {
			select {
			case <-acks:
				acked++
			case <-stopped: // every worker failed: reported below
				return
			case <-guard.C:
				close(stop)
				wg.Wait()
				t.Fatalf("round %d: %d commands acknowledged %s in %s (hang guard), want %d", round, acked, what, hangGuard, n)
			}
		}
	}
	await(5+rng.IntN(40), "before the kill")
	if stopMember >= 0 {
		cc.etcd.Stop(stopMember)
		t.Logf("round %d: etcd member %d stopped", round, stopMember)
		await(20, "with one etcd member of three stopped")
	}
	victim, d := cc.pick(rng, -1)
	cc.mu.Lock()
	cc.ds[victim] = nil // the workers pick the others from now on
	cc.mu.Unlock()
	if code := d.stop(syscall.SIGKILL); code != -int(syscall.SIGKILL) {
		t.Fatalf("round %d: daemon %d exited %d, not by SIGKILL", round, victim, code)
	}
	_, s := cc.pick(rng, victim)
	cc.syncBarrier(s)
	killed = s.lastSeq()
	t.Logf("round %d: daemon %d (%s) killed after record %d", round, victim, cc.ids[victim], killed)
	await(10, "after the kill, through the others")
	close(stop)
	wg.Wait()
	for _, w := range workers {
		if w.err != nil {
			t.Fatalf("round %d: worker %d: %v", round, w.n, w.err)
		}
		unknown += w.unknown
		w.unknown = 0
	}
	if stopMember >= 0 {
		cc.etcd.Start(stopMember)
	}
	return victim, killed, acked, unknown
}

// runShared drives the running daemons, each command through one picked
// at random, until stop is closed, reporting each acknowledged command on
// acks. A command whose outcome is unknown (its daemon died, etcd did not
// answer) leaves its delegation alone until check adopts the record, or
// its registration to be retried under the same idempotency key.
func (w *crashWorker) runShared(cc *crashCluster, stop <-chan struct{}, acks chan<- struct{}) {
	ctx := context.Background()
	for {
		select {
		case <-stop:
			return
		default:
		}
		i, d := cc.pick(w.rng, -1)
		if d == nil {
			w.err = errors.New("no daemon runs")
			return
		}
		err := w.step(ctx, d.client)
		switch {
		case err == nil:
			select {
			case acks <- struct{}{}:
			default: // nobody counts any more
			}
			if w.sent != "" && w.rng.IntN(4) == 0 {
				if err := w.seenThrough(cc, i, w.sent); err != nil {
					w.err = err
					return
				}
			}
		case errors.Is(err, errInvariant):
			// Due again through a daemon whose replica may not hold the
			// acknowledgement yet (it went through another, which owned the
			// delegation until this one took it back): due again once the
			// replica holds everything is the broken invariant.
			if err := w.dueAgain(ctx, d); err != nil {
				w.err = fmt.Errorf("daemon %d: %w", i, err)
				return
			}
		case outcomeUnknown(err):
			w.unknown++
			if w.sent != "" {
				w.unsure[w.sent] = true
			}
		default:
			w.err = fmt.Errorf("daemon %d refused a command the worker's record allows: %w", i, err)
			return
		}
	}
}

// outcomeUnknown reports whether err leaves a command's outcome unknown:
// the daemon went away, is stopping, or etcd did not answer in time.
func outcomeUnknown(err error) bool {
	var ae *api.Error
	if !errors.As(err, &ae) {
		return true // no answer: the daemon died
	}
	return ae.Code == "unavailable"
}

// errSeen ends a stream once it has shown what was looked for.
var errSeen = errors.New("seen")

// seenThrough checks that another running daemon, once its replica holds
// version v of delegation id (the version the worker was acknowledged),
// shows the record the worker was told. A daemon that goes away meanwhile
// checks nothing.
func (w *crashWorker) seenThrough(cc *crashCluster, i int, id string) error {
	j, d := cc.pick(w.rng, i)
	if d == nil {
		return nil
	}
	want := w.recs[id]
	ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
	defer cancel()
	var n uint64
	err := d.client.Events(ctx, api.EventsRequest{Delegation: id, Follow: true}, func(api.Event) error {
		if n++; n >= want.Version {
			return errSeen
		}
		return nil
	})
	switch {
	case errors.Is(err, errSeen):
	case ctx.Err() != nil:
		return fmt.Errorf("%s: daemon %d's replica holds %d events after %s (hang guard), daemon %d acknowledged version %d", id, j, n, hangGuard, i, want.Version)
	default:
		return nil
	}
	var got fsm.Delegation
	if err := d.client.Call(ctx, "show", api.IDRequest{ID: id}, &got); err != nil {
		return nil
	}
	cc.crossReads.Add(1)
	if got.Version < want.Version || got.State != want.State {
		return fmt.Errorf("%s: daemon %d acknowledged %s at version %d; daemon %d, holding the stream that far, shows %s at version %d", id, i, want.State, want.Version, j, got.State, got.Version)
	}
	return nil
}

// dueAgain reports a notification the worker acknowledged that d still
// serves once its replica holds all that the shared log held before.
func (w *crashWorker) dueAgain(ctx context.Context, d *daemon) error {
	probe := api.IDRequest{ID: syncProbeID}
	if err := d.client.Call(ctx, "show", probe, &fsm.Delegation{}); !isSynced(err) {
		return nil // unknown: the daemon went away, or etcd did not answer
	}
	var ns api.Notifications
	if err := d.client.Call(ctx, "notifications", api.NotificationsRequest{ParentSessionID: w.parent}, &ns); err != nil {
		return nil
	}
	for _, n := range ns.Notifications {
		if w.acked[n.ID] {
			return fmt.Errorf("%s is due again after it was acknowledged, with the replica caught up", n.ID)
		}
	}
	return nil
}

// syncProbeID is a valid delegation id that is never registered: a
// replica that does not hold a delegation looks it up again once it holds
// what the shared log holds, so showing this one is a barrier that
// records nothing (barrier registers a delegation).
const syncProbeID = "never-registered-probe"

// isSynced reports whether err is the answer to showing syncProbeID once
// the replica caught up: not found, and not because etcd was out of reach.
func isSynced(err error) bool {
	var ae *api.Error
	return errors.As(err, &ae) && ae.Code == "not_found" && !strings.Contains(ae.Message, "could not be asked")
}

// syncBarrier returns once d holds every record committed to the shared
// log before it was called.
func (cc *crashCluster) syncBarrier(d *daemon) {
	cc.t.Helper()
	err := d.client.Call(context.Background(), "show", api.IDRequest{ID: syncProbeID}, &fsm.Delegation{})
	if !isSynced(err) {
		cc.t.Fatalf("show %s as a barrier: %v, want not found once the replica caught up", syncProbeID, err)
	}
}

// needsOwner reports whether d is one that a gone owner's survivors take
// over (fsm.DecideTakeOver, projection.Store.TakeOver): still active, its
// artifact not written, or its terminal notification not acknowledged.
func needsOwner(d fsm.Delegation) bool {
	return d.State.Active() || d.PersistedAt.IsZero() || d.NotifiedAt.IsZero()
}

// awaitTakeOver waits until the survivors have taken over every
// delegation of the workers that daemon victim owned when it was killed
// (the log up to record killed holds all it wrote) and that still needs
// an owner.
func (cc *crashCluster) awaitTakeOver(t *testing.T, workers []*crashWorker, victim int, killed uint64) {
	t.Helper()
	_, s := cc.pick(rand.New(rand.NewPCG(0, 0)), victim)
	cc.syncBarrier(s)
	owned, taken := 0, 0
	for _, w := range workers {
		for _, id := range w.order {
			if cc.ownerAt(t, s, id, killed) != cc.ids[victim] {
				continue
			}
			owned++
			var got fsm.Delegation
			s.call("show", api.IDRequest{ID: id}, &got)
			if !needsOwner(got) {
				continue
			}
			e := awaitEvent(t, s.follow(killed+1, id), "the takeover of "+id+" from "+cc.ids[victim], func(e api.Event) bool {
				return e.Kind == "owned"
			})
			if !slices.Contains(cc.ids, e.Owner) || e.Owner == cc.ids[victim] {
				t.Fatalf("%s taken over by %q, not by a survivor of %s", id, e.Owner, cc.ids[victim])
			}
			taken++
		}
	}
	t.Logf("daemon %d's lease expired: %d of the %d delegations of the workers it owned taken over", victim, taken, owned)
}

// ownerAt returns the daemon that owned delegation id as of record seq,
// from its events through d.
func (cc *crashCluster) ownerAt(t *testing.T, d *daemon, id string, seq uint64) string {
	t.Helper()
	owner := ""
	err := d.client.Events(context.Background(), api.EventsRequest{Delegation: id}, func(e api.Event) error {
		if e.Seq > seq {
			return errSeen
		}
		if e.Kind == "registered" || e.Kind == "owned" {
			owner = e.Owner
		}
		return nil
	})
	if err != nil && !errors.Is(err, errSeen) {
		t.Fatalf("the events of %s: %v", id, err)
	}
	return owner
}

// restart starts daemon i again under its id and waits until it has taken
// back the workers' delegations it registered that still need an owner.
func (cc *crashCluster) restart(t *testing.T, workers []*crashWorker, i int) {
	t.Helper()
	_, s := cc.pick(rand.New(rand.NewPCG(0, 0)), i)
	cc.syncBarrier(s)
	from := s.lastSeq() + 1
	var back []string
	for _, w := range workers {
		for _, id := range w.order {
			var got fsm.Delegation
			s.call("show", api.IDRequest{ID: id}, &got)
			if got.Owner != cc.ids[i] && needsOwner(got) && cc.registrant(t, s, id) == cc.ids[i] {
				back = append(back, id)
			}
		}
	}
	d := cc.start(i)
	if got := daemonIDOf(t, cc.dirs[i]); got != cc.ids[i] {
		t.Fatalf("daemon %d's id changed from %s to %s", i, cc.ids[i], got)
	}
	for _, id := range back {
		awaitEvent(t, s.follow(from, id), "daemon "+cc.ids[i]+" taking back "+id, func(e api.Event) bool {
			return e.Kind == "owned" && e.Owner == cc.ids[i]
		})
	}
	cc.mu.Lock()
	cc.ds[i] = d
	cc.mu.Unlock()
	t.Logf("daemon %d restarted; it took back %d of the workers' delegations", i, len(back))
}

// registrant returns the daemon delegation id was registered through, as
// its first event, read through d, names it.
func (cc *crashCluster) registrant(t *testing.T, d *daemon, id string) string {
	t.Helper()
	if r, ok := cc.registrants[id]; ok {
		return r
	}
	err := d.client.Events(context.Background(), api.EventsRequest{Delegation: id}, func(e api.Event) error {
		if e.Kind != "registered" {
			return fmt.Errorf("%s begins with %s, not registered", id, e.Kind)
		}
		cc.registrants[id] = e.Owner
		return errSeen
	})
	if !errors.Is(err, errSeen) {
		t.Fatalf("the registration of %s: %v", id, err)
	}
	return cc.registrants[id]
}

// checkAll waits for the artifacts the owners are to write, then checks
// through every running daemon, once its replica has caught up, that
// every acknowledged command is there, and verifies the log through one.
func (cc *crashCluster) checkAll(t *testing.T, workers []*crashWorker, when string) {
	t.Helper()
	ds := cc.running()
	_, s := cc.pick(rand.New(rand.NewPCG(0, 0)), -1)
	cc.syncBarrier(s)
	for _, w := range workers {
		for _, id := range w.order {
			var got fsm.Delegation
			s.call("show", api.IDRequest{ID: id}, &got)
			if got.State.Terminal() && got.PersistedAt.IsZero() {
				cc.awaitPersisted(t, s, got)
			}
		}
	}
	for _, d := range ds {
		cc.syncBarrier(d)
		for _, w := range workers {
			w.check(t, d)
		}
	}
	if res := verifyThrough(t, s); res.Failed {
		t.Fatalf("%s: verify:\n%s", when, res.Text)
	}
}

// awaitPersisted waits, through s, for the persisted event of d, which
// its owner writes. An owner whose write failed (etcd out of reach)
// retries it on its clock, which stands still here: each failure it logs
// moves that clock on by a minute, the longest wait between retries.
func (cc *crashCluster) awaitPersisted(t *testing.T, s *daemon, d fsm.Delegation) {
	t.Helper()
	i := slices.Index(cc.ids, d.Owner)
	o := cc.running()[i]
	if o == nil {
		t.Fatalf("%s is %s, its artifact not written, and owned by %q, which does not run", d.ID, d.State, d.Owner)
	}
	ch := s.follow(0, d.ID)
	guard := time.NewTimer(hangGuard)
	defer guard.Stop()
	for {
		text, changed := o.log.state()
		if n := strings.Count(text, "writing artifacts failed; retrying"); n > cc.retried[o] {
			cc.retried[o] = n
			o.advance(time.Minute.Milliseconds())
		}
		select {
		case e, ok := <-ch:
			if !ok {
				t.Fatalf("the events of %s ended before its persisted event", d.ID)
			}
			if e.Kind == "persisted" {
				return
			}
		case <-changed:
		case <-guard.C:
			t.Fatalf("no persisted event of %s (owned by daemon %d) after %s (hang guard)", d.ID, i, hangGuard)
		}
	}
}

// quorumRound stops two of the three etcd members and sends a
// registration and a completion through a daemon: each is refused within
// refusalBound, saying that etcd is unavailable and what to check, while
// reads go on. Once the members are back, each is wholly in the log or
// wholly absent, and the registration retried with its key is recorded
// once.
func (cc *crashCluster) quorumRound(t *testing.T, rng *rand.Rand, workers []*crashWorker) {
	t.Helper()
	up := rng.IntN(3)
	down := []int{(up + 1) % 3, (up + 2) % 3}
	i, d := cc.pick(rng, -1)
	reg, done := workers[0], workers[1]
	var target string
	if active := done.active(); len(active) > 0 {
		target = active[rng.IntN(len(active))]
	}
	for _, m := range down {
		cc.etcd.Stop(m)
	}
	t.Logf("etcd members %v stopped; daemon %d is asked", down, i)

	refused := func(what string, call func(ctx context.Context) error) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), refusalBound)
		defer cancel()
		err := call(ctx)
		var ae *api.Error
		switch {
		case ctx.Err() != nil:
			t.Fatalf("%s without an etcd quorum: no answer within %s: %v", what, refusalBound, err)
		case !errors.As(err, &ae):
			t.Fatalf("%s without an etcd quorum: %v, want the daemon's error", what, err)
		case ae.Code != "unavailable":
			t.Fatalf("%s without an etcd quorum: code %s (%s), want unavailable: a bridge retries only that", what, ae.Code, ae.Message)
		}
		for _, want := range []string{"etcd unavailable", "quorum", "etcdctl endpoint health"} {
			if !strings.Contains(ae.Message, want) {
				t.Fatalf("%s without an etcd quorum: %q (code %s), want it to say %q", what, ae.Message, ae.Code, want)
			}
		}
		t.Logf("%s without an etcd quorum: code %s: %s", what, ae.Code, ae.Message)
	}
	if reg.key == "" { // else the registration whose outcome is unknown is the one refused
		reg.nextKey()
	}
	key := reg.key
	refused("register", func(ctx context.Context) error { return reg.step(ctx, d.client) })
	if reg.key != key {
		t.Fatalf("a refused registration is no longer retried: key %q, was %q", reg.key, key)
	}
	if target != "" {
		done.unsure[target] = true
		refused("complete", func(ctx context.Context) error {
			return d.client.Call(ctx, "complete", api.CompleteRequest{ID: target, Result: "completed without a quorum"}, &fsm.Delegation{})
		})
	}
	// Reads are the replica's.
	if len(reg.order) > 0 {
		var got fsm.Delegation
		d.call("show", api.IDRequest{ID: reg.order[0]}, &got)
	}

	cc.etcd.Start(down...)
	t.Logf("etcd members %v started", down)
	cc.syncBarrier(d)
	var written []string
	err := d.client.Events(context.Background(), api.EventsRequest{}, func(e api.Event) error {
		if e.Key == key && e.Kind == "registered" {
			written = append(written, e.ID)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(written) > 1 {
		t.Fatalf("the refused registration %s is in the log %d times: %v", key, len(written), written)
	}
	_, other := cc.pick(rng, i)
	if err := reg.step(context.Background(), other.client); err != nil {
		t.Fatalf("the refused registration, retried with its key once etcd has its quorum: %v", err)
	}
	id := reg.order[len(reg.order)-1]
	if len(written) == 1 && written[0] != id {
		t.Fatalf("the registration %s written without an answer is %s; retried, it answered %s", key, written[0], id)
	}
	cc.syncBarrier(other)
	if n := countEvents(t, other, id)["registered"]; n != 1 {
		t.Fatalf("%s (key %s): %d registered events, want 1", id, key, n)
	}
	t.Logf("the refused registration %s was written before the retry: %v", key, len(written) == 1)

	if target != "" {
		var got fsm.Delegation
		other.call("show", api.IDRequest{ID: target}, &got)
		completed := countEvents(t, other, target)["completed"]
		if completed > 1 || (completed == 1) != (got.State == fsm.Complete) {
			t.Fatalf("the refused completion of %s: %d completed events, state %s", target, completed, got.State)
		}
		t.Logf("the refused completion of %s was written: %v", target, completed == 1)
	}
}

// finish lets every deadline pass through every daemon and delivers every
// notification through its owner's daemon, then checks how everything
// ended through each daemon.
func (cc *crashCluster) finish(t *testing.T, workers []*crashWorker) {
	t.Helper()
	ds := cc.running()
	byID := map[string]*daemon{}
	for i, d := range ds {
		byID[cc.ids[i]] = d
	}
	// Registrations whose outcome is still unknown: retried with their
	// keys, they tell.
	for _, w := range workers {
		if w.key != "" {
			if err := w.step(context.Background(), cc.ds[0].client); err != nil {
				t.Fatalf("worker %d's registration %s, retried: %v", w.n, w.key, err)
			}
		}
	}
	for _, d := range ds {
		d.advance((3 * time.Hour).Milliseconds()) // every deadline is within two hours
	}
	for _, w := range workers {
		for _, id := range w.order {
			var got fsm.Delegation
			cc.ds[0].call("show", api.IDRequest{ID: id}, &got)
			owner := byID[got.Owner]
			if owner == nil {
				t.Fatalf("%s is owned by %q, not a running daemon", id, got.Owner)
			}
			var res projection.ReadResult
			// A blocking read returns once the owner's sweeper has timed it
			// out. Its artifact may still be on its way: an owner that was
			// not sure of its lease (etcd without a quorum a moment ago)
			// records the terminal event alone and writes the file once it
			// holds a lease again.
			owner.call("read", api.ReadRequest{RootSessionID: "ses_root", ID: id, WaitMs: hangGuard.Milliseconds()}, &res)
			if res.Delegation.State.Terminal() && !res.Artifact {
				cc.awaitPersisted(t, owner, res.Delegation)
				owner.call("read", api.ReadRequest{RootSessionID: "ses_root", ID: id}, &res)
			}
			if !res.Artifact || res.Delegation.State.Active() {
				t.Fatalf("%s after every deadline: %s, artifact %v", id, res.Delegation.State, res.Artifact)
			}
		}
	}
	// Deliver everything, each notification through the one daemon that
	// serves it; all-completes come due after their quiet period.
	quiet := false // nothing was due the last time: the clocks moved on
	for range 10 {
		served := map[string]int{} // notification → the daemon serving it
		due := map[int][]projection.Notification{}
		for i, d := range ds {
			cc.syncBarrier(d)
			var ns api.Notifications
			d.call("notifications", api.NotificationsRequest{}, &ns)
			due[i] = ns.Notifications
		}
		if total := len(slices.Concat(slices.Collect(maps.Values(due))...)); total == 0 {
			if quiet {
				break
			}
			quiet = true
			for _, d := range ds {
				d.advance(time.Second.Milliseconds())
			}
			continue
		}
		quiet = false
		for i, d := range ds {
			for _, n := range due[i] {
				if j, ok := served[n.ID]; ok {
					t.Fatalf("%s is served by daemons %d and %d", n.ID, j, i)
				}
				served[n.ID] = i
				if n.Kind == projection.KindTerminal {
					var got fsm.Delegation
					d.call("show", api.IDRequest{ID: n.Delegation}, &got)
					if got.Owner != cc.ids[i] {
						t.Fatalf("daemon %d (%s) serves %s, whose delegation is owned by %s", i, cc.ids[i], n.ID, got.Owner)
					}
				}
				var res projection.AckResult
				d.call("ack", api.AckRequest{ID: n.ID}, &res)
				if res.Already {
					t.Fatalf("%s, due through daemon %d, was acknowledged already", n.ID, i)
				}
			}
		}
	}
	for i, d := range ds {
		cc.syncBarrier(d)
		var ns api.Notifications
		d.call("notifications", api.NotificationsRequest{}, &ns)
		if len(ns.Notifications) != 0 {
			t.Fatalf("daemon %d still serves %d notifications after ten rounds of delivery", i, len(ns.Notifications))
		}
		var active api.Delegations
		d.call("active", api.ActiveRequest{}, &active)
		if len(active.Delegations) != 0 {
			t.Fatalf("daemon %d: %d delegations still active after every deadline", i, len(active.Delegations))
		}
		for _, w := range workers {
			w.check(t, d)
		}
		checkEnded(t, d, workers)
		if res := verifyThrough(t, d); res.Failed {
			t.Fatalf("daemon %d: verify at the end:\n%s", i, res.Text)
		}
	}
}

// TestSharedVerifyArtifactsElsewhere: on a shared log an artifact is a
// file on the machine of the daemon that owns its delegation. Verify and
// replay through another daemon, which does not have the file until a
// read there writes it from the record, find nothing wrong; through the
// owner, a missing artifact is still an error. Once the other daemon
// takes the delegation over (its owner gone), the artifact is its own:
// the file missing there is an error through it.
func TestSharedVerifyArtifactsElsewhere(t *testing.T) {
	if testing.Short() {
		t.Skip("starts an etcd cluster and two daemons")
	}
	c := etcdtest.Start(t, 1)
	dirs := []string{t.TempDir(), t.TempDir()}
	owner := sharedDaemon(t, c, dirs[0], "--etcd-lease-ttl", "2s")
	other := sharedDaemon(t, c, dirs[1], "--etcd-lease-ttl", "2s")
	var rec fsm.Delegation
	owner.call("register", registration("ses_root", "ses_root", "elsewhere"), &rec)
	owner.call("complete", api.CompleteRequest{ID: rec.ID, Result: "done"}, &rec)
	if rec.PersistedAt.IsZero() {
		t.Fatal("the owner did not write its artifact")
	}
	barrier(t, other)
	for _, verb := range []string{"verify", "replay"} {
		var res api.Rendered
		other.call(verb, struct{}{}, &res)
		if res.Failed {
			t.Fatalf("%s through a daemon that does not own the artifact:\n%s", verb, res.Text)
		}
	}
	var res projection.ReadResult
	other.call("read", api.ReadRequest{RootSessionID: "ses_root", ID: rec.ID}, &res)
	if !res.Artifact {
		t.Fatal("a read through the other daemon returned no artifact")
	}
	if v := verifyThrough(t, other); v.Failed {
		t.Fatalf("verify once a read wrote the artifact there:\n%s", v.Text)
	}
	// A copy that differs (left by a terminal command that lost the race
	// to another daemon's) is no finding either: a read writes it again.
	copyPath := filepath.Join(dirs[1], rec.ArtifactPath)
	if err := os.WriteFile(copyPath, []byte("a stale copy"), 0o600); err != nil {
		t.Fatal(err)
	}
	if v := verifyThrough(t, other); v.Failed {
		t.Fatalf("verify with a stale copy of another daemon's artifact:\n%s", v.Text)
	}
	other.call("read", api.ReadRequest{RootSessionID: "ses_root", ID: rec.ID}, &res)
	if b, err := os.ReadFile(copyPath); err != nil || string(b) != res.Text {
		t.Fatalf("the copy after a read: %v, %q; the read returned %q", err, b, res.Text)
	}
	if err := os.Remove(filepath.Join(dirs[0], rec.ArtifactPath)); err != nil {
		t.Fatal(err)
	}
	if v := verifyThrough(t, owner); !v.Failed || !strings.Contains(v.Text, "artifact_missing") {
		t.Fatalf("verify through the owner, its artifact removed: failed %v:\n%s", v.Failed, v.Text)
	}

	// The owner dies; the other daemon takes the delegation over (its
	// notification is not acknowledged) and serves the notification,
	// which names the file in its own data directory.
	from := other.lastSeq() + 1
	if code := owner.stop(syscall.SIGKILL); code != -int(syscall.SIGKILL) {
		t.Fatalf("the owner exited %d, not by SIGKILL", code)
	}
	awaitEvent(t, other.follow(from, rec.ID), "the takeover of "+rec.ID, func(e api.Event) bool { return e.Kind == "owned" })
	other.advance(time.Minute.Milliseconds())
	var ns api.Notifications
	other.call("notifications", api.NotificationsRequest{ParentSessionID: "ses_root"}, &ns)
	if len(ns.Notifications) != 1 || !strings.Contains(ns.Notifications[0].Text, "<artifact>"+copyPath+"</artifact>") {
		t.Fatalf("the other daemon serves %+v, want the notification naming %s", ns.Notifications, copyPath)
	}
	if err := os.Remove(copyPath); err != nil {
		t.Fatal(err)
	}
	for _, verb := range []string{"verify", "replay"} {
		var res api.Rendered
		other.call(verb, struct{}{}, &res)
		if !res.Failed || !strings.Contains(res.Text, "artifact_missing") {
			t.Fatalf("%s through the daemon that took the delegation over, its artifact removed: failed %v:\n%s", verb, res.Failed, res.Text)
		}
	}
}

// TestSharedTakeOverWritesArtifact: a daemon that takes over a delegation
// whose artifact its gone owner wrote, and whose notification is not
// acknowledged, serves that notification, which names the artifact in
// its own data directory: the file is there, with the bytes the log
// recorded, before the notification is served.
func TestSharedTakeOverWritesArtifact(t *testing.T) {
	if testing.Short() {
		t.Skip("starts an etcd cluster and two daemons")
	}
	c := etcdtest.Start(t, 1)
	dirs := []string{t.TempDir(), t.TempDir()}
	a := sharedDaemon(t, c, dirs[0], "--etcd-lease-ttl", "2s")
	b := sharedDaemon(t, c, dirs[1], "--etcd-lease-ttl", "2s")
	var rec fsm.Delegation
	a.call("register", registration("ses_root", "ses_root", "taken over"), &rec)
	a.call("complete", api.CompleteRequest{ID: rec.ID, Result: "done before A died"}, &rec)
	written, err := os.ReadFile(filepath.Join(dirs[0], rec.ArtifactPath))
	if err != nil {
		t.Fatalf("A's artifact: %v", err)
	}
	from := b.lastSeq() + 1
	if code := a.stop(syscall.SIGKILL); code != -int(syscall.SIGKILL) {
		t.Fatalf("A exited %d, not by SIGKILL", code)
	}
	e := awaitEvent(t, b.follow(from, rec.ID), "the takeover of "+rec.ID, func(e api.Event) bool { return e.Kind == "owned" })
	if want := daemonIDOf(t, dirs[1]); e.Owner != want {
		t.Fatalf("taken over by %q, not B (%s)", e.Owner, want)
	}
	b.advance(time.Minute.Milliseconds()) // past the completion on B's clock
	var ns api.Notifications
	b.call("notifications", api.NotificationsRequest{ParentSessionID: "ses_root"}, &ns)
	path := filepath.Join(dirs[1], rec.ArtifactPath)
	if len(ns.Notifications) != 1 || !strings.Contains(ns.Notifications[0].Text, "<artifact>"+path+"</artifact>") {
		t.Fatalf("B serves %+v, want the notification naming %s", ns.Notifications, path)
	}
	if got, err := os.ReadFile(path); err != nil || string(got) != string(written) {
		t.Fatalf("the artifact B's notification names: %v, %q; A wrote %q", err, got, written)
	}
}
