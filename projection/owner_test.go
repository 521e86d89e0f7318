package projection

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/delegations/delegations/fsm"
)

// peers is a test Peers: which daemon the store is, and who is alive;
// present are daemons that hold their lease but that Alive has not heard
// of yet; unsure says the store's daemon is not sure it holds its own.
type peers struct {
	mu      sync.Mutex
	self    string
	alive   map[string]bool
	present map[string]bool
	unsure  bool
	changed chan struct{}
}

func (p *peers) Holds() bool { p.mu.Lock(); defer p.mu.Unlock(); return !p.unsure }

func (p *peers) Changed() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.changed == nil {
		p.changed = make(chan struct{})
	}
	return p.changed
}

// hold says whether the store's daemon is sure it holds its lease; turning
// sure again wakes the waiters of Changed.
func (p *peers) hold(sure bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.unsure = !sure
	if sure && p.changed != nil {
		close(p.changed)
		p.changed = nil
	}
}

func (p *peers) Present(_ context.Context, id string) (bool, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.alive[id] || p.present[id], nil
}

func (p *peers) Self() string { p.mu.Lock(); defer p.mu.Unlock(); return p.self }
func (p *peers) Alive(id string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.alive[id]
}

// be makes the store daemon self among the live daemons.
func (p *peers) be(self string, alive ...string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.self, p.alive = self, map[string]bool{}
	for _, a := range alive {
		p.alive[a] = true
	}
}

// openOwned opens a store in a new data directory as a daemon of peers,
// on a clock that advance moves; the test's end closes it.
func openOwned(t *testing.T, p *peers) (s *Store, dir string, advance func(time.Duration)) {
	t.Helper()
	now := time.Date(2026, 11, 21, 10, 0, 0, 0, time.UTC)
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	dir = t.TempDir()
	s, err := Open(dir, Options{Now: clock, Peers: p})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, dir, func(d time.Duration) { mu.Lock(); defer mu.Unlock(); now = now.Add(d) }
}

func countKind(t *testing.T, s *Store, id, kind string) int {
	t.Helper()
	n := 0
	for _, k := range strings.Fields(kinds(t, s, id)) {
		if k == kind {
			n++
		}
	}
	return n
}

// TestOwnership plays several daemons on one log through one store whose
// Peers say which daemon it is: a delegation is owned by the daemon that
// registered it; another daemon completes it but neither enforces its
// deadline, writes its artifact nor serves its notification; once the
// owner is gone, TakeOver gives every delegation that still needs an owner
// to this daemon, once, and the work is done; the old owner, back, takes
// back what it registered and still needs an owner.
func TestOwnership(t *testing.T) {
	ctx := context.Background()
	p := &peers{}
	p.be("a", "a", "b")
	s, dir, advance := openOwned(t, p)
	reg := registration()
	reg.Timeout = time.Minute
	var ds []fsm.Delegation
	for range 3 {
		d, err := s.Register(ctx, reg)
		if err != nil {
			t.Fatal(err)
		}
		if d.Owner != "a" {
			t.Fatalf("registered through a, owned by %q", d.Owner)
		}
		ds = append(ds, d)
	}
	deadline, pending, notified := ds[0].ID, ds[1].ID, ds[2].ID
	if d, err := s.Complete(ctx, notified, "done", "", ""); err != nil || d.PersistedAt.IsZero() {
		t.Fatalf("the owner completes: persisted %v, %v", d.PersistedAt, err)
	}

	// Daemon b, while a is alive: it completes a's delegation, but the
	// artifact, the deadline and the notification are a's.
	p.be("b", "a", "b")
	if d, err := s.Complete(ctx, pending, "done", "", ""); err != nil || d.State != fsm.Complete || !d.PersistedAt.IsZero() {
		t.Fatalf("complete through b: %s, persisted %v, %v", d.State, d.PersistedAt, err)
	}
	if n, err := s.PersistPending(ctx); n != 0 || err != nil {
		t.Fatalf("b persisted %d of a's artifacts: %v", n, err)
	}
	if res, err := s.Read(ctx, reg.RootSessionID, pending, 0); err != nil || res.Artifact {
		t.Fatalf("a read through b wrote a's artifact: %+v, %v", res, err)
	}
	advance(time.Hour)
	if n, _, err := s.TimeoutOverdue(ctx); n != 0 || err != nil {
		t.Fatalf("b timed out %d of a's delegations: %v", n, err)
	}
	if ns, err := s.Notifications(""); err != nil || len(ns) != 0 {
		t.Fatalf("b serves a's notifications: %+v, %v", ns, err)
	}
	if n, err := s.TakeOver(ctx); n != 0 || err != nil {
		t.Fatalf("b took over %d delegations of a live daemon: %v", n, err)
	}

	// a holds its lease, but b's watch has not heard of it yet: b asks
	// etcd before it takes anything.
	p.be("b", "b")
	p.mu.Lock()
	p.present = map[string]bool{"a": true}
	p.mu.Unlock()
	if n, err := s.TakeOver(ctx); n != 0 || err != nil {
		t.Fatalf("b took over %d delegations of a daemon its watch lags behind: %v", n, err)
	}

	// a is gone: b takes over the three, once, and does their work.
	p.be("b", "b")
	p.mu.Lock()
	p.present = nil
	p.mu.Unlock()
	if n, err := s.TakeOver(ctx); n != 3 || err != nil {
		t.Fatalf("b took over %d delegations, want 3: %v", n, err)
	}
	if n, err := s.TakeOver(ctx); n != 0 || err != nil {
		t.Fatalf("taken over again: %d, %v", n, err)
	}
	for _, id := range []string{deadline, pending, notified} {
		if n := countKind(t, s, id, "owned"); n != 1 {
			t.Fatalf("%s: %d owned events (%s)", id, n, kinds(t, s, id))
		}
		if d, err := s.Get(id); err != nil || d.Owner != "b" {
			t.Fatalf("%s owned by %q after the takeover: %v", id, d.Owner, err)
		}
	}
	if n, _, err := s.TimeoutOverdue(ctx); n != 1 || err != nil {
		t.Fatalf("b timed out %d, want 1: %v", n, err)
	}
	if n, err := s.PersistPending(ctx); n != 1 || err != nil { // the timeout wrote its own
		t.Fatalf("b persisted %d artifacts, want 1: %v", n, err)
	}
	if d, _ := s.Get(pending); d.PersistedAt.IsZero() {
		t.Fatal("the pending artifact is not persisted")
	} else if _, err := os.Stat(filepath.Join(dir, d.ArtifactPath)); err != nil {
		t.Fatal(err)
	}
	ns, err := s.Notifications("")
	if err != nil || len(ns) != 3 {
		t.Fatalf("b serves %d notifications, want 3: %+v, %v", len(ns), ns, err)
	}

	// a is back, under its id: until it takes them back, it owns none of
	// them; then it takes back the three it registered, whose
	// notifications wait for the bridges that talk to a, once.
	p.be("a", "a", "b")
	if ns, err := s.Notifications(""); err != nil || len(ns) != 0 {
		t.Fatalf("a serves notifications it does not own: %+v, %v", ns, err)
	}
	if n, err := s.TakeOver(ctx); n != 3 || err != nil {
		t.Fatalf("a took back %d delegations, want 3: %v", n, err)
	}
	if n, err := s.TakeOver(ctx); n != 0 || err != nil {
		t.Fatalf("taken back again: %d, %v", n, err)
	}
	for _, id := range []string{deadline, pending, notified} {
		if d, err := s.Get(id); err != nil || d.Owner != "a" || countKind(t, s, id, "owned") != 2 {
			t.Fatalf("%s owned by %q after a took it back: %s, %v", id, d.Owner, kinds(t, s, id), err)
		}
	}
	if ns, err := s.Notifications(""); err != nil || len(ns) != 3 {
		t.Fatalf("a serves %d notifications, want 3: %+v, %v", len(ns), ns, err)
	}
	// b takes nothing from a, alive, and registered none of them.
	p.be("b", "a", "b")
	if n, err := s.TakeOver(ctx); n != 0 || err != nil {
		t.Fatalf("b took %d back from a live daemon: %v", n, err)
	}
	p.be("a", "a", "b")
	d, err := s.Register(ctx, reg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Complete(ctx, d.ID, "done", "", ""); err != nil {
		t.Fatal(err)
	}
	ns, err = s.Notifications("")
	if err != nil || len(ns) != 4 || !slices.ContainsFunc(ns, func(n Notification) bool { return n.Delegation == d.ID }) {
		t.Fatalf("a serves %+v, want its new delegation's beside the three: %v", ns, err)
	}
	for _, id := range []string{deadline, pending, notified} {
		if countKind(t, s, id, "persisted") != 1 || id == deadline && countKind(t, s, id, "timed_out") != 1 {
			t.Fatalf("%s: %s", id, kinds(t, s, id))
		}
	}
}

// TestOwnershipAllComplete: the all-complete notification of a parent is
// served by the owner of the delegation whose notification ended its
// cycle, and taken over with it.
func TestOwnershipAllComplete(t *testing.T) {
	ctx := context.Background()
	p := &peers{}
	p.be("a", "a", "b")
	now := time.Date(2026, 11, 21, 10, 0, 0, 0, time.UTC)
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	s, err := Open(t.TempDir(), Options{Now: clock, Peers: p})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	d := register(t, s)
	if _, err := s.Complete(ctx, d.ID, "done", "", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Ack(ctx, TerminalNotificationID(d.ID)); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	now = now.Add(time.Second) // past the quiet period
	mu.Unlock()
	ns, err := s.Notifications("")
	if err != nil || len(ns) != 1 || ns[0].Kind != KindAllComplete {
		t.Fatalf("a: %+v, %v", ns, err)
	}
	p.be("b", "a", "b")
	if ns, err := s.Notifications(""); err != nil || len(ns) != 0 {
		t.Fatalf("b serves a's all-complete: %+v, %v", ns, err)
	}
	p.be("b", "b")
	if n, err := s.TakeOver(ctx); n != 1 || err != nil {
		t.Fatalf("took over %d, want 1: %v", n, err)
	}
	if ns, err := s.Notifications(""); err != nil || len(ns) != 1 || ns[0].Kind != KindAllComplete {
		t.Fatalf("b after the takeover: %+v, %v", ns, err)
	}
}

// TestOwnerFenced: a daemon whose Peers say it is no longer sure it holds
// its lease (its keep-alives went unanswered: another daemon may be taking
// its delegations over) acts as no delegation's owner: it enforces no
// deadline, writes no artifact, serves no notification and takes nothing
// over, while commands through it are still recorded. Once it holds a
// lease again, its waits end and it does what it left.
func TestOwnerFenced(t *testing.T) {
	ctx := context.Background()
	p := &peers{}
	p.be("b", "a", "b")
	s, dir, advance := openOwned(t, p)
	reg := registration()
	reg.Timeout = time.Minute
	bs, err := s.Register(ctx, reg) // b's, for a to take over once b is gone
	if err != nil {
		t.Fatal(err)
	}
	p.be("a", "a", "b")
	var ds []fsm.Delegation
	for range 3 {
		d, err := s.Register(ctx, reg)
		if err != nil {
			t.Fatal(err)
		}
		ds = append(ds, d)
	}
	deadline, pending, notified := ds[0].ID, ds[1].ID, ds[2].ID
	if d, err := s.Complete(ctx, notified, "done", "", ""); err != nil || d.PersistedAt.IsZero() {
		t.Fatalf("a completes while it holds its lease: persisted %v, %v", d.PersistedAt, err)
	}
	if ns, err := s.Notifications(""); err != nil || len(ns) != 1 {
		t.Fatalf("a serves %d notifications, want 1: %v", len(ns), err)
	}

	p.hold(false)
	p.be("a", "a") // and b is gone
	if ns, err := s.Notifications(""); err != nil || len(ns) != 0 {
		t.Fatalf("a serves notifications unsure of its lease: %+v, %v", ns, err)
	}
	if ns, _, err := s.Due(ds[0].ParentSessionID); err != nil || len(ns) != 0 {
		t.Fatalf("a pushes notifications unsure of its lease: %+v, %v", ns, err)
	}
	if d, err := s.Complete(ctx, pending, "done", "", ""); err != nil || d.State != fsm.Complete || !d.PersistedAt.IsZero() {
		t.Fatalf("complete, unsure of the lease: %s, persisted %v, %v", d.State, d.PersistedAt, err)
	}
	if n, err := s.PersistPending(ctx); n != 0 || err != nil {
		t.Fatalf("a persisted %d artifacts unsure of its lease: %v", n, err)
	}
	advance(time.Hour)
	if n, _, err := s.TimeoutOverdue(ctx); n != 0 || err != nil {
		t.Fatalf("a timed out %d delegations unsure of its lease: %v", n, err)
	}
	if n, err := s.TakeOver(ctx); n != 0 || err != nil {
		t.Fatalf("a took over %d delegations unsure of its lease: %v", n, err)
	}
	if d, _ := s.Get(pending); !d.PersistedAt.IsZero() {
		t.Fatal("the artifact was persisted")
	}
	if entries, err := os.ReadDir(filepath.Dir(filepath.Join(dir, ds[2].ArtifactPath))); err != nil {
		t.Fatal(err)
	} else if len(entries) != 1 {
		t.Fatalf("artifact files written unsure of the lease: %d, want the one written before", len(entries))
	}

	// Sure again (a new lease) while a background pass runs: the wait
	// after the pass, on the mark taken before it, ends at once, and a
	// does what it left. A wait that asked Peers.Changed only once it
	// began would miss the change and sleep until the next record.
	mark := s.Mark()
	p.hold(true)
	woke := make(chan error, 1)
	go func() { woke <- s.Wait(ctx, mark, time.Time{}) }()
	select {
	case err := <-woke:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Wait did not return once the daemon held its lease again")
	}
	if n, err := s.TakeOver(ctx); n != 1 || err != nil {
		t.Fatalf("a took over %d of gone b's delegations, want 1: %v", n, err)
	}
	if n, _, err := s.TimeoutOverdue(ctx); n != 2 || err != nil { // its own, and b's
		t.Fatalf("a timed out %d, want 2: %v", n, err)
	}
	if n, err := s.PersistPending(ctx); n != 1 || err != nil {
		t.Fatalf("a persisted %d, want 1: %v", n, err)
	}
	if ns, err := s.Notifications(""); err != nil || len(ns) != 4 {
		t.Fatalf("a serves %d notifications, want 4: %v", len(ns), err)
	}
	for _, id := range []string{deadline, pending, notified, bs.ID} {
		if countKind(t, s, id, "persisted") != 1 {
			t.Fatalf("%s: %s", id, kinds(t, s, id))
		}
	}
}
