package projection

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cespare/xxhash/v2"

	"github.com/delegations/delegations/eventlog"
	"github.com/delegations/delegations/fsm"
)

// The model-based test drives a real Store on a real bbolt file with random
// interleavings of commands (register, start, progress, complete, fail,
// cancel, timeout, late and duplicate commands, two terminal commands or
// two acks racing, notifications, acks, failed deliveries, reads, clock
// steps, deadline sweeps, restarts with and without a rebuild, and artifact
// directories that cannot be written for a while) and checks every outcome
// against a reference model written here from COMPAT.md and DESIGN.md, with
// plain maps and none of the store's code. Invariants, and where they are
// checked:
//
//   - Terminal is final: a command on a terminal delegation other than the
//     one that ended it fails with an error wrapping fsm.ErrTerminal and
//     changes nothing but the rejected count; the same command again is a
//     no-op (command, raceTerminal). The state the store returns or
//     stores always equals the model's (compare), and in the log a stream
//     has at most one terminal event and no started or progressed event
//     after it (checkLog).
//   - Persist before notify: a terminal notification is due only once
//     the delegation is persisted (due, checkDue); the event that made it
//     due is the persisted event, after the terminal event, and the
//     artifact is on disk with the size and hash it records
//     (checkNotificationSeq, checkArtifact); an ack before that is refused
//     (ackBogus); in the log, notified and read events follow persisted
//     (checkLog). With the artifact directory blocked nothing is due until
//     a retry (PersistPending, a restart, a read, the same terminal command
//     again) persists it (tryPersist).
//   - Exactly one terminal notification per delegation: it is due, with its
//     failed deliveries counted, until acknowledged and never after; acks
//     are idempotent (Already) and of two racing acks exactly one is first
//     (ackID, raceAck, checkDue); the stream holds one notified event
//     exactly when the model acknowledged (checkLog).
//   - One all-complete per (parent, cycle): due 50 ms after the last member
//     of the parent's current cycle was notified, never for an older
//     cycle; a newer cycle suppresses an unacknowledged one, whose ack is
//     then refused (register, cycleNotified, ackID, checkDue); the parent's
//     stream holds one all_complete_notified per acknowledged cycle and
//     none for others (checkLog).
//   - Unread is terminal AND notified AND (never read OR last read before
//     completion): List with Unread and the unread view of Carried match
//     the model's modelUnread, as does every record's Unread (checkRoot,
//     compare).
//   - Everything survives restarts: after each restart, and a rebuild of
//     the views from the log, every record, list, view and outbox entry is
//     checked in full (restart, checkAll). At the end the log verifies.
//
// A short run is part of `go test`. A long one:
//
//	go test ./projection -run TestModel -model.steps=20000 -model.runs=4 -timeout=60m -v
//
// A failure prints the seed and the last commands; rerun it with
// -model.seed=N -model.runs=1 -model.steps=M. A rerun takes the same path
// up to the first race (raceTerminal) whose winner differs.
var (
	modelSeed  = flag.Uint64("model.seed", 0, "model-based test: seed of the first run (0: a random one, printed); run i uses seed+i")
	modelSteps = flag.Int("model.steps", 400, "model-based test: commands per run")
	modelRuns  = flag.Int("model.runs", 2, "model-based test: independent runs, each with its own seed and data directory")
)

// modelClock is the store's clock: it moves only when told to, in whole
// milliseconds (what the store records), so the model knows every time.
type modelClock struct {
	mu sync.Mutex
	t  time.Time
}

func newModelClock() *modelClock {
	return &modelClock{t: time.Date(2026, 11, 21, 10, 0, 0, 0, time.UTC)}
}

func (c *modelClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *modelClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// The model's constants, from COMPAT.md.
const (
	modelDefaultTimeout = 15 * time.Minute
	modelReadGrace      = 10 * time.Second // a blocking read times out a delegation at its deadline plus 10 s
	modelQuiet          = 50 * time.Millisecond
	modelAgent          = "researcher"
)

// mDel is the model of one delegation.
type mDel struct {
	id, project, root, parent string
	reg                       Registration
	state                     fsm.State
	createdAt, timeoutAt      time.Time
	timeout                   time.Duration
	completedAt               time.Time
	progress                  string
	endKind                   fsm.Kind  // the terminal command that won
	endText                   string    // its result, error or reason
	persistedAt               time.Time // zero while terminal and pending: the artifact is not written yet
	remaining                 int       // active delegations of the parent when the notification became due
	notifiedAt                time.Time
	readAt                    time.Time
	failures                  int // failed deliveries of the terminal notification
	rejected                  int // late commands refused
	version                   uint64
	cycle                     uint64 // the parent's cycle it joined
	pending                   bool   // a write of its artifact failed once
	// Ownership (owner.go), "" for a store without peers: the daemon that
	// registered it and the one that owns it now, which alone writes its
	// artifact, enforces its deadline and serves its notifications.
	registrant, owner string
	artifactDir       string // the data directory its owner persisted it in
}

// mParent is the model of a parent session and its cycles.
type mParent struct {
	name, root, project string
	cycle               uint64  // current cycle; 0 before the first registration
	members             []*mDel // the current cycle's delegations
	all                 []*mDel
}

// mAllComplete is an all-complete notification that became due.
type mAllComplete struct {
	id, parent string
	cycle      uint64
	by         string // the delegation whose notification ended the cycle: its owner serves this one
	dueAt      time.Time
	acked      bool
	suppressed bool // a newer cycle started before it was acknowledged: never sent
	failures   int
}

// mNote is a notification the model expects to be due.
type mNote struct {
	id, kind, delegation, parent string
	cycle                        uint64
	dueAt                        time.Time
	remaining, failures          int
}

type modelRun struct {
	t     *testing.T
	seed  uint64
	rng   *rand.Rand
	dir   string
	clock *modelClock
	ids   *fsm.IDGenerator
	s     *Store
	self  string // the daemon s is among those sharing a log (Peers.Self); "" without peers
	ctx   context.Context

	dels        map[string]*mDel
	order       []string // registration order
	parents     map[string]*mParent
	parentOrder []string
	roots       []string
	allc        map[string]*mAllComplete
	keys        map[string]*mDel // idempotency key → the delegation it registered
	keyOrder    []string
	seen        []string // notification ids the bridge was given, for stale and duplicate acks
	seenSet     map[string]bool
	lastDue     []string

	blocked map[[2]string]bool // (project, root) session directories that cannot be written

	epoch    int
	step     int
	touched  map[string]bool // roots whose lists to check after this step
	checked  map[string]uint64
	counts   map[string]int
	restarts int
	rebuilds int
	trace    []string
}

func TestModel(t *testing.T) {
	seed := *modelSeed
	if seed == 0 {
		seed = rand.Uint64() >> 1
	}
	for i := range *modelRuns {
		s := seed + uint64(i)
		t.Run(fmt.Sprintf("seed=%d", s), func(t *testing.T) {
			t.Parallel()
			runModel(t, s, *modelSteps)
		})
	}
}

func runModel(t *testing.T, seed uint64, steps int) {
	start := time.Now()
	m := newModelRun(t, seed, "TestModel", fmt.Sprintf("-model.runs=1 -model.steps=%d", steps))
	m.open(false)
	t.Cleanup(func() {
		if m.s != nil {
			m.s.Close()
		}
	})
	m.newEpoch()
	m.run(steps, m.ops(), func() {
		m.checkDue("")
		for root := range m.touched {
			m.checkRoot(root)
		}
		if m.step%100 == 0 {
			m.checkAll()
		}
	})
	m.checkAll()
	for k := range m.blocked {
		m.unblockDir(k)
	}
	m.restart()
	m.checkLog()
	t.Logf("seed %d: %d steps in %v; %d restarts (%d rebuilds); %d records; %s",
		seed, steps, time.Since(start).Round(time.Millisecond), m.restarts, m.rebuilds, m.s.Log().Last(), m.stats())
}

// newModelRun returns an empty model for a run of test with seed; test and
// the flags that repeat the run name it in the command that reproduces a
// failure. The caller opens the system under test.
func newModelRun(t *testing.T, seed uint64, test, flags string) *modelRun {
	var key [32]byte
	for i := range 4 {
		key[i] = byte(seed >> (8 * i))
	}
	m := &modelRun{
		t:       t,
		seed:    seed,
		rng:     rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		dir:     t.TempDir(),
		clock:   newModelClock(),
		ids:     fsm.NewIDGenerator(rand.NewChaCha8(key)),
		ctx:     context.Background(),
		dels:    map[string]*mDel{},
		parents: map[string]*mParent{},
		allc:    map[string]*mAllComplete{},
		keys:    map[string]*mDel{},
		seenSet: map[string]bool{},
		checked: map[string]uint64{},
		blocked: map[[2]string]bool{},
		counts:  map[string]int{},
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("last commands:\n%s", strings.Join(m.trace, "\n"))
			t.Logf("reproduce: go test ./projection -run '%s/seed=%d$' -model.seed=%d %s", test, seed, seed, flags)
		}
	})
	return m
}

// modelOp is one kind of step, drawn with probability weight/total.
type modelOp struct {
	name   string
	weight int
	run    func()
}

// ops are the steps of a run on one store.
func (m *modelRun) ops() []modelOp {
	return []modelOp{
		{"register", 12, m.register},
		{"register-again", 2, m.registerAgain},
		{"start", 6, func() { m.lifecycle(fsm.KindStarted) }},
		{"progress", 8, func() { m.lifecycle(fsm.KindProgressed) }},
		{"complete", 7, func() { m.lifecycle(fsm.KindCompleted) }},
		{"fail", 4, func() { m.lifecycle(fsm.KindFailed) }},
		{"cancel", 4, func() { m.lifecycle(fsm.KindCancelled) }},
		{"timeout", 3, func() { m.lifecycle(fsm.KindTimedOut) }},
		{"late", 5, m.late},
		{"duplicate-terminal", 4, m.duplicateTerminal},
		{"notifications", 10, m.notifications},
		{"ack", 12, func() { m.ack(false) }},
		{"ack-failed", 4, func() { m.ack(true) }},
		{"ack-bogus", 1, m.ackBogus},
		{"deliver", 6, m.deliver},
		{"read", 8, m.read},
		{"advance", 8, m.advance},
		{"sweep", 2, m.sweep},
		{"restart", 1, m.restart},
		{"block", 2, m.block},
		{"unblock", 3, m.unblock},
		{"persist-pending", 2, m.persistPending},
		{"race-terminal", 2, m.raceTerminal},
		{"race-ack", 2, m.raceAck},
	}
}

// run takes steps random steps drawn from ops, with fresh session names
// every 400, and calls check after each.
func (m *modelRun) run(steps int, ops []modelOp, check func()) {
	total := 0
	for _, op := range ops {
		total += op.weight
	}
	for m.step = 1; m.step <= steps; m.step++ {
		if m.step%400 == 0 {
			m.newEpoch()
		}
		m.touched = map[string]bool{}
		r := m.rng.IntN(total)
		for _, op := range ops {
			if r -= op.weight; r < 0 {
				op.run()
				break
			}
		}
		check()
	}
}

// stats sums up what a run did, for its last log line.
func (m *modelRun) stats() string {
	var kinds []string
	for k, n := range m.counts {
		kinds = append(kinds, fmt.Sprintf("%s=%d", k, n))
	}
	slices.Sort(kinds)
	terminal, notified, unread := 0, 0, 0
	for _, d := range m.dels {
		if d.state.Terminal() {
			terminal++
		}
		if !d.notifiedAt.IsZero() {
			notified++
		}
		if modelUnread(d) {
			unread++
		}
	}
	acked, suppressed := 0, 0
	for _, ac := range m.allc {
		if ac.acked {
			acked++
		}
		if ac.suppressed {
			suppressed++
		}
	}
	return fmt.Sprintf("%d delegations (%d terminal, %d notified, %d unread); %d all-complete due (%d acknowledged, %d suppressed by a newer cycle); commands: %s",
		len(m.dels), terminal, notified, unread, len(m.allc), acked, suppressed, strings.Join(kinds, " "))
}

func (m *modelRun) fatalf(format string, args ...any) {
	m.t.Helper()
	m.t.Fatalf("step %d: %s", m.step, fmt.Sprintf(format, args...))
}

func (m *modelRun) logStep(format string, args ...any) {
	m.trace = append(m.trace, fmt.Sprintf("%5d %s", m.step, fmt.Sprintf(format, args...)))
	if len(m.trace) > 60 {
		m.trace = m.trace[1:]
	}
}

// now is the time the store stamps on the next command.
func (m *modelRun) now() time.Time { return m.clock.Now() }

func (m *modelRun) open(rebuild bool) {
	s, err := Open(m.dir, Options{Now: m.clock.Now, IDs: m.ids, Rebuild: rebuild, LockTimeout: 5 * time.Second})
	if err != nil {
		m.fatalf("open: %v", err)
	}
	m.s = s
}

// newEpoch starts fresh session names so that lists stay short in long
// runs; older sessions stay in the model and are checked in full checks.
// Each epoch has two roots; one root is itself a parent, and a parent may
// write to another project than its sibling.
func (m *modelRun) newEpoch() {
	m.epoch++
	rootA, rootB := fmt.Sprintf("ses_e%d_rootA", m.epoch), fmt.Sprintf("ses_e%d_rootB", m.epoch)
	m.roots = append(m.roots, rootA, rootB)
	for _, p := range []mParent{
		{name: rootA, root: rootA, project: "0123456789abcdef"},
		{name: fmt.Sprintf("ses_e%d_pA1", m.epoch), root: rootA, project: "0123456789abcdef"},
		{name: fmt.Sprintf("ses_e%d_pA2", m.epoch), root: rootA, project: "fedcba9876543210"},
		{name: fmt.Sprintf("ses_e%d_pB1", m.epoch), root: rootB, project: "0123456789abcdef"},
	} {
		m.parents[p.name] = &p
		m.parentOrder = append(m.parentOrder, p.name)
	}
}

func (m *modelRun) currentParents() []string { return m.parentOrder[len(m.parentOrder)-4:] }

// pick returns a delegation matching ok, mostly among the latest ones.
func (m *modelRun) pick(ok func(*mDel) bool) *mDel {
	lo := max(0, len(m.order)-40)
	if m.rng.IntN(10) == 0 {
		lo = 0
	}
	for _, from := range []int{lo, 0} {
		var c []*mDel
		for _, id := range m.order[from:] {
			if d := m.dels[id]; ok == nil || ok(d) {
				c = append(c, d)
			}
		}
		if len(c) > 0 {
			return c[m.rng.IntN(len(c))]
		}
	}
	return nil
}

func (m *modelRun) activeOf(parent string) int {
	n := 0
	for _, d := range m.parents[parent].all {
		if d.state.Active() {
			n++
		}
	}
	return n
}

func (m *modelRun) touch(d *mDel) { m.touched[d.root] = true }

func modelAllCompleteID(parent string, cycle uint64) string {
	return fmt.Sprintf("all-complete:%s:%d", parent, cycle)
}

// modelUnread is COMPAT's definition: terminal AND notified AND (never read
// OR last read before completion).
func modelUnread(d *mDel) bool {
	return d.state.Terminal() && !d.notifiedAt.IsZero() && (d.readAt.IsZero() || d.readAt.Before(d.completedAt))
}

// wantErr checks an error against the model's expectation: nil, or one
// wrapping want.
func (m *modelRun) wantErr(op string, err, want error) {
	m.t.Helper()
	switch {
	case want == nil && err != nil:
		m.fatalf("%s: unexpected error %v", op, err)
	case want != nil && !errors.Is(err, want):
		m.fatalf("%s: error %v, want one wrapping %q", op, err, want)
	}
}

// ---- commands ----

func (m *modelRun) register() {
	m.counts["register"]++
	ps := m.currentParents()
	p := m.parents[ps[m.rng.IntN(len(ps))]]
	timeouts := []time.Duration{0, 0, 2 * time.Minute, 10 * time.Minute, time.Hour}
	reg := Registration{
		ProjectID: p.project, RootSessionID: p.root, ParentSessionID: p.name,
		Agent: modelAgent, Prompt: fmt.Sprintf("task of step %d", m.step),
		Timeout: timeouts[m.rng.IntN(len(timeouts))],
	}
	if m.rng.IntN(3) == 0 {
		reg.IdempotencyKey = fmt.Sprintf("reg-%d", m.step)
	}
	now := m.now()
	d, err := m.s.Register(m.ctx, reg)
	m.logStep("register parent=%s timeout=%v key=%q -> %s %v", p.name, reg.Timeout, reg.IdempotencyKey, d.ID, err)
	m.wantErr("register", err, nil)
	if m.dels[d.ID] != nil {
		m.fatalf("register returned %s, which already exists", d.ID)
	}
	eff := reg.Timeout
	if eff == 0 {
		eff = modelDefaultTimeout
	}
	md := &mDel{
		id: d.ID, project: p.project, root: p.root, parent: p.name, reg: reg,
		state: fsm.Registered, createdAt: now, timeoutAt: now.Add(eff), timeout: eff, version: 1,
		registrant: m.self, owner: m.self,
	}
	// COMPAT: registering when the parent has no active delegation starts
	// a new cycle, and an older cycle's all-complete not sent by then is
	// never sent.
	if m.activeOf(p.name) == 0 {
		if ac := m.allc[modelAllCompleteID(p.name, p.cycle)]; ac != nil && !ac.acked {
			ac.suppressed = true
		}
		p.cycle++
		p.members = nil
	}
	md.cycle = p.cycle
	p.members = append(p.members, md)
	p.all = append(p.all, md)
	m.dels[md.id] = md
	m.order = append(m.order, md.id)
	if reg.IdempotencyKey != "" {
		m.keys[reg.IdempotencyKey] = md
		m.keyOrder = append(m.keyOrder, reg.IdempotencyKey)
	}
	m.compare("register", md, d)
	m.touch(md)
}

// registerAgain retries a registration with its idempotency key: it
// returns the delegation the first attempt created and changes nothing.
func (m *modelRun) registerAgain() {
	if len(m.keyOrder) == 0 {
		m.register()
		return
	}
	m.counts["register-again"]++
	key := m.keyOrder[m.rng.IntN(len(m.keyOrder))]
	md := m.keys[key]
	d, err := m.s.Register(m.ctx, md.reg)
	m.logStep("register again key=%q -> %s %v", key, d.ID, err)
	m.wantErr("register again", err, nil)
	if d.ID != md.id {
		m.fatalf("retried registration %q returned %s, want %s", key, d.ID, md.id)
	}
	m.compare("register again", md, d)
	m.touch(md)
}

func modelTerminalState(k fsm.Kind) fsm.State {
	switch k {
	case fsm.KindCompleted:
		return fsm.Complete
	case fsm.KindFailed:
		return fsm.Error
	case fsm.KindCancelled:
		return fsm.Cancelled
	case fsm.KindTimedOut:
		return fsm.Timeout
	}
	return ""
}

// text draws the free text a command carries.
func (m *modelRun) text(k fsm.Kind) string {
	var choices []string
	switch k {
	case fsm.KindStarted:
		return fmt.Sprintf("ses_child%d", m.step)
	case fsm.KindProgressed:
		choices = []string{fmt.Sprintf("progress at step %d", m.step), "", "partial\nsecond line"}
	case fsm.KindCompleted:
		choices = []string{fmt.Sprintf("result of step %d", m.step), "", "The answer.\n\nDetails <b>&</b> more.", strings.Repeat("long result ", 30)}
	case fsm.KindFailed:
		choices = []string{fmt.Sprintf("failure %d", m.step), ""}
	case fsm.KindCancelled:
		choices = []string{"", "user asked"}
	case fsm.KindTimedOut:
		return ""
	}
	return choices[m.rng.IntN(len(choices))]
}

// do runs one lifecycle command on store s.
func (m *modelRun) do(s *Store, k fsm.Kind, id, text string) (fsm.Delegation, error) {
	switch k {
	case fsm.KindStarted:
		return s.Start(m.ctx, id, text)
	case fsm.KindProgressed:
		return s.Progress(m.ctx, id, text)
	case fsm.KindCompleted:
		return s.Complete(m.ctx, id, text, "", "")
	case fsm.KindFailed:
		return s.Fail(m.ctx, id, text)
	case fsm.KindCancelled:
		return s.Cancel(m.ctx, id, text)
	case fsm.KindTimedOut:
		return s.Timeout(m.ctx, id)
	}
	panic("not a command: " + k.String())
}

// lifecycle runs command k on a random delegation, active or not.
func (m *modelRun) lifecycle(k fsm.Kind) {
	d := m.pick(nil)
	if d == nil {
		m.register()
		return
	}
	m.command(k, d, m.text(k))
}

// late runs a command on a terminal delegation that differs from the one
// that ended it.
func (m *modelRun) late() {
	d := m.pick(func(d *mDel) bool { return d.state.Terminal() })
	if d == nil {
		m.lifecycle(fsm.KindCompleted)
		return
	}
	for {
		k := []fsm.Kind{fsm.KindStarted, fsm.KindProgressed, fsm.KindCompleted, fsm.KindFailed, fsm.KindCancelled, fsm.KindTimedOut}[m.rng.IntN(6)]
		text := m.text(k)
		if k != d.endKind || (k != fsm.KindTimedOut && text != d.endText) {
			m.counts["late"]++
			m.command(k, d, text)
			return
		}
	}
}

// duplicateTerminal repeats the very command that ended a delegation.
func (m *modelRun) duplicateTerminal() {
	d := m.pick(func(d *mDel) bool { return d.state.Terminal() })
	if d == nil {
		m.lifecycle(fsm.KindFailed)
		return
	}
	m.counts["duplicate-terminal"]++
	m.command(d.endKind, d, d.endText)
}

// command runs k on d and checks the outcome against the model.
func (m *modelRun) command(k fsm.Kind, d *mDel, text string) {
	m.counts[k.String()]++
	now := m.now()
	got, err := m.do(m.s, k, d.id, text)
	m.logStep("%s %s %q (was %s) -> %s %v", k, d.id, text, d.state, got.State, err)
	var want error
	switch {
	case d.state.Terminal():
		// Terminal is final: the same terminal command again changes
		// nothing (but, like the first, it gets the artifact written if
		// that is still pending); any other command is refused with
		// ErrTerminal and recorded as rejected.
		if modelTerminalState(k) == d.state && (k == fsm.KindTimedOut || text == d.endText) {
			m.tryPersist(d, now)
			break
		}
		want = fsm.ErrTerminal
		d.rejected++
		d.version++
	case k == fsm.KindStarted:
		if d.state == fsm.Registered {
			d.state = fsm.Running
			d.version++
		}
	case k == fsm.KindProgressed:
		if d.state == fsm.Registered {
			d.version++ // started
		}
		d.state = fsm.Running
		d.progress = text
		d.version++
	default:
		m.terminate(d, k, text, now)
	}
	m.wantErr(k.String()+" "+d.id, err, want)
	m.compare(k.String(), d, got)
	m.touch(d)
}

// terminate applies a terminal transition to the model, then writes the
// artifact unless its directory is blocked.
func (m *modelRun) terminate(d *mDel, k fsm.Kind, text string, now time.Time) {
	d.state = modelTerminalState(k)
	d.endKind, d.endText = k, text
	d.completedAt = now
	d.version++
	m.tryPersist(d, now)
}

// tryPersist persists a terminal delegation whose artifact is pending, if
// its directory can be written: the persisted event makes its terminal
// notification due, with the parent's active delegations of that moment
// as <remaining>. It reports whether the delegation is persisted.
func (m *modelRun) tryPersist(d *mDel, now time.Time) bool {
	switch {
	case !d.state.Terminal():
		return false
	case !d.persistedAt.IsZero():
		return true
	case d.owner != m.self:
		return false // its owner writes it (owner.go)
	case m.blocked[[2]string{d.project, d.root}]:
		if !d.pending {
			d.pending = true
			m.counts["left-pending"]++
		}
		return false
	}
	if d.pending {
		m.counts["persisted-on-retry"]++
	}
	d.persistedAt = now
	d.artifactDir = m.dir
	d.version++
	d.remaining = m.activeOf(d.parent)
	return true
}

func (m *modelRun) notifications() {
	m.counts["notifications"]++
	parent := ""
	if m.rng.IntN(4) == 0 {
		ps := m.currentParents()
		parent = ps[m.rng.IntN(len(ps))]
	}
	got := m.checkDue(parent)
	m.lastDue = m.lastDue[:0]
	for _, n := range got {
		m.lastDue = append(m.lastDue, n.ID)
		if !m.seenSet[n.ID] {
			m.seenSet[n.ID] = true
			m.seen = append(m.seen, n.ID)
		}
	}
	m.logStep("notifications %q -> %v", parent, m.lastDue)
}

// deliver is what the bridge does: fetch what is due and acknowledge each
// notification, or report that its delivery failed.
func (m *modelRun) deliver() {
	m.counts["deliver"]++
	m.notifications()
	for _, nid := range slices.Clone(m.lastDue) {
		m.ackID(nid, m.rng.IntN(8) == 0)
		m.checkDue("")
	}
}

// ack acknowledges (or reports a failed delivery of) a notification the
// bridge was given: mostly one due now, sometimes an older one (a
// duplicate ack, or one a newer cycle suppressed).
func (m *modelRun) ack(failed bool) {
	var nid string
	switch {
	case len(m.lastDue) > 0 && m.rng.IntN(10) < 7:
		nid = m.lastDue[m.rng.IntN(len(m.lastDue))]
	case len(m.seen) > 0:
		nid = m.seen[m.rng.IntN(len(m.seen))]
	default:
		m.notifications()
		return
	}
	m.ackID(nid, failed)
}

func (m *modelRun) ackID(nid string, failed bool) {
	name := "ack"
	if failed {
		name = "ack-failed"
	}
	m.counts[name]++
	now := m.now()
	var res AckResult
	var err error
	if failed {
		res, err = m.s.AckFailed(m.ctx, nid, "")
	} else {
		res, err = m.s.Ack(m.ctx, nid)
	}
	m.logStep("%s %s -> %+v %v", name, nid, res, err)
	var want error
	already := false
	if id, ok := strings.CutPrefix(nid, "terminal:"); ok {
		d := m.dels[id]
		switch {
		case d.persistedAt.IsZero():
			m.fatalf("the bridge was given %s before %s was persisted", nid, id)
		case !d.notifiedAt.IsZero():
			// Acknowledgements are idempotent: after the ack it never
			// comes back, and a second one changes nothing.
			already = true
		case failed:
			d.failures++
			d.version++
		default:
			d.notifiedAt = now
			d.version++
			m.cycleNotified(d, now)
		}
		m.checkDel(d)
		m.touch(d)
	} else {
		ac := m.allc[nid]
		switch {
		case ac == nil:
			m.fatalf("the bridge was given %s, which the model never made due", nid)
		case ac.acked:
			already = true
		case ac.suppressed:
			want = fsm.ErrNotFound
		case failed:
			ac.failures++
		default:
			ac.acked = true
		}
	}
	m.wantErr(name+" "+nid, err, want)
	if err == nil && res.Already != already {
		m.fatalf("%s %s: already=%v, want %v", name, nid, res.Already, already)
	}
}

// cycleNotified makes the all-complete of d's cycle due when d was the
// last of its cycle to be notified (COMPAT: due after a 50 ms quiet
// period; only the parent's current cycle).
func (m *modelRun) cycleNotified(d *mDel, now time.Time) {
	p := m.parents[d.parent]
	if d.cycle != p.cycle {
		return
	}
	for _, x := range p.members {
		if x.notifiedAt.IsZero() {
			return
		}
	}
	id := modelAllCompleteID(p.name, p.cycle)
	if m.allc[id] != nil {
		m.fatalf("model: %s became due twice", id)
	}
	m.allc[id] = &mAllComplete{id: id, parent: p.name, cycle: p.cycle, by: d.id, dueAt: now.Add(modelQuiet)}
}

// ackBogus acknowledges notifications that were never due.
func (m *modelRun) ackBogus() {
	m.counts["ack-bogus"]++
	ps := m.currentParents()
	p := m.parents[ps[m.rng.IntN(len(ps))]]
	cases := []struct {
		nid  string
		want error
	}{
		{"terminal:nobody-knows-this", fsm.ErrNotFound},
		{modelAllCompleteID(p.name, p.cycle+3), fsm.ErrNotFound},
		{"all-complete:" + p.name + ":0", fsm.ErrInvalid},
		{"task-notification", fsm.ErrInvalid},
	}
	if d := m.pick(func(d *mDel) bool { return d.persistedAt.IsZero() }); d != nil {
		cases = append(cases, struct {
			nid  string
			want error
		}{"terminal:" + d.id, fsm.ErrInvalid}) // not due: active, or its artifact is not written yet
	}
	c := cases[m.rng.IntN(len(cases))]
	_, err := m.s.Ack(m.ctx, c.nid)
	m.logStep("ack bogus %s -> %v", c.nid, err)
	m.wantErr("ack "+c.nid, err, c.want)
}

func (m *modelRun) read() {
	d := m.pick(nil)
	if d == nil {
		m.register()
		return
	}
	m.counts["read"]++
	root, id := d.root, d.id
	switch r := m.rng.IntN(20); {
	case r == 0:
		id = "nobody-knows-this"
	case r <= 2:
		root = m.roots[m.rng.IntN(len(m.roots))]
	}
	now := m.now()
	res, err := m.s.Read(m.ctx, root, id, 0)
	m.logStep("read root=%s %s (was %s) -> artifact=%v %s %v", root, id, d.state, res.Artifact, res.Delegation.State, err)
	if id != d.id || root != d.root {
		// Only the caller's root session sees a delegation.
		var nf *ReadNotFoundError
		if !errors.As(err, &nf) {
			m.fatalf("read of %s from root %s: %v, want not found", id, root, err)
		}
		return
	}
	if d.state.Active() && !now.Before(d.timeoutAt.Add(modelReadGrace)) {
		// Past its deadline plus the grace period the read times it out.
		m.counts["read-timeout"]++
		m.terminate(d, fsm.KindTimedOut, "", now)
	}
	if d.state.Terminal() && !d.persistedAt.IsZero() && m.blocked[[2]string{d.project, d.root}] {
		// Persisted, but the artifact cannot be reached: an error, and
		// no read recorded.
		if err == nil {
			m.fatalf("read of %s whose artifact directory is blocked: %+v, want an error", id, res)
		}
		m.checkDel(d)
		return
	}
	m.wantErr("read "+id, err, nil)
	if !m.tryPersist(d, now) {
		// Active, or terminal with the artifact still unwritable: the
		// deterministic pending text, no read recorded.
		if res.Artifact || !strings.Contains(res.Text, "Status: "+string(d.state)+"\n") {
			m.fatalf("read of %s %s (persisted=%v): %+v", d.state, id, !d.persistedAt.IsZero(), res)
		}
	} else {
		file, ferr := os.ReadFile(m.artifactPath(d))
		if !res.Artifact || ferr != nil || res.Text != string(file) {
			m.fatalf("read of terminal %s: artifact=%v text %q, file %q (%v)", id, res.Artifact, res.Text, file, ferr)
		}
		d.readAt = now
		d.version++
	}
	m.compare("read", d, res.Delegation)
	m.touch(d)
}

// advance moves the clock; 49 ms and 1 ms steps probe the quiet period's
// edge.
func (m *modelRun) advance() {
	m.counts["advance"]++
	steps := []time.Duration{time.Millisecond, 49 * time.Millisecond, modelQuiet, time.Second, 10 * time.Second, time.Minute, 10 * time.Minute, 16 * time.Minute}
	d := steps[m.rng.IntN(len(steps))]
	m.clock.Advance(d)
	m.logStep("advance %v -> %s", d, m.now().Format(time.RFC3339Nano))
}

// sweep times out every active delegation past its deadline, as the
// daemon does.
func (m *modelRun) sweep() {
	m.counts["sweep"]++
	now := m.now()
	for _, id := range m.order {
		if d := m.dels[id]; d.state.Active() && !now.Before(d.timeoutAt) {
			m.command(fsm.KindTimedOut, d, "")
		}
	}
}

// restart closes the store and opens it again (sometimes rebuilding every
// view from the log), then checks everything: state, outbox, unread and
// cycles all survive, and opening retried the pending artifacts. The
// daemon sweeps deadlines before it stops, so the restart finds nothing
// overdue.
func (m *modelRun) restart() {
	m.sweep()
	m.counts["restart"]++
	m.restarts++
	rebuild := m.rng.IntN(4) == 0
	if err := m.s.Close(); err != nil {
		m.fatalf("close: %v", err)
	}
	m.s = nil
	if rebuild && len(m.blocked) > 0 {
		// A rebuild rewrites every artifact and fails, saying which,
		// when one cannot be written; the views it rebuilt are kept.
		m.counts["rebuild-blocked"]++
		s, err := Open(m.dir, Options{Now: m.clock.Now, IDs: m.ids, Rebuild: true, LockTimeout: 5 * time.Second})
		if err == nil {
			s.Close()
			persisted := false
			for _, d := range m.dels {
				persisted = persisted || !d.persistedAt.IsZero() && m.blocked[[2]string{d.project, d.root}]
			}
			if persisted {
				m.fatalf("rebuild with a blocked artifact directory opened")
			}
		}
		rebuild = false
	}
	if rebuild {
		m.rebuilds++
	}
	m.open(rebuild)
	for _, id := range m.order {
		m.tryPersist(m.dels[id], m.now())
	}
	m.logStep("restart rebuild=%v", rebuild)
	m.checkAll()
}

// block makes a session directory of the current epoch unwritable, in a
// way that holds for root too: the directory moves aside and a file takes
// its place.
func (m *modelRun) block() {
	ps := m.currentParents()
	p := m.parents[ps[m.rng.IntN(len(ps))]]
	k := [2]string{p.project, p.root}
	if m.blocked[k] {
		return
	}
	m.counts["block"]++
	sess := filepath.Join(m.dir, p.project, p.root)
	if _, err := os.Stat(sess); err == nil {
		if err := os.Rename(sess, filepath.Join(m.dir, p.project, ".away-"+p.root)); err != nil {
			m.fatalf("block: %v", err)
		}
	}
	if err := os.MkdirAll(filepath.Dir(sess), 0o700); err != nil {
		m.fatalf("block: %v", err)
	}
	if err := os.WriteFile(sess, []byte("not a directory"), 0o600); err != nil {
		m.fatalf("block: %v", err)
	}
	m.blocked[k] = true
	m.logStep("block %s/%s", p.project, p.root)
}

func (m *modelRun) unblock() {
	var ks [][2]string
	for k := range m.blocked {
		ks = append(ks, k)
	}
	if len(ks) == 0 {
		return
	}
	m.counts["unblock"]++
	slices.SortFunc(ks, func(a, b [2]string) int { return strings.Compare(a[0]+"/"+a[1], b[0]+"/"+b[1]) })
	m.unblockDir(ks[m.rng.IntN(len(ks))])
}

func (m *modelRun) unblockDir(k [2]string) {
	sess := filepath.Join(m.dir, k[0], k[1])
	if err := os.Remove(sess); err != nil {
		m.fatalf("unblock: %v", err)
	}
	away := filepath.Join(m.dir, k[0], ".away-"+k[1])
	if _, err := os.Stat(away); err == nil {
		if err := os.Rename(away, sess); err != nil {
			m.fatalf("unblock: %v", err)
		}
	}
	delete(m.blocked, k)
	m.logStep("unblock %s/%s", k[0], k[1])
}

// persistPending retries every pending artifact, as the daemon does: it
// persists those whose directory can be written again and reports an
// error for the others.
func (m *modelRun) persistPending() {
	m.counts["persist-pending"]++
	now := m.now()
	n, err := m.s.PersistPending(m.ctx)
	m.logStep("persist pending -> %d %v", n, err)
	want, stuck := 0, 0
	for _, id := range m.order {
		d := m.dels[id]
		if !d.state.Terminal() || !d.persistedAt.IsZero() || d.owner != m.self {
			continue // or another daemon's to write (owner.go)
		}
		if m.tryPersist(d, now) {
			want++
		} else {
			stuck++
		}
		m.touch(d)
	}
	if n != want || (err != nil) != (stuck > 0) {
		m.fatalf("PersistPending: %d, %v; model says %d persisted and %d still blocked", n, err, want, stuck)
	}
}

// raceTerminal sends two different terminal commands for one active
// delegation at the same time, as a child that fails while its parent
// cancels it. The first terminal transition wins; the other command is
// refused with ErrTerminal and recorded, whichever order they ran in.
func (m *modelRun) raceTerminal() { m.raceTerminalThrough(func(int) {}) }

// raceTerminalThrough is raceTerminal with command n (0 or 1) sent through
// the store that use(n) makes the current one (m.s): one store, or two
// daemons sharing a log.
func (m *modelRun) raceTerminalThrough(use func(n int)) {
	d := m.pick(func(d *mDel) bool { return d.state.Active() })
	if d == nil {
		m.register()
		return
	}
	m.counts["race-terminal"]++
	kinds := []fsm.Kind{fsm.KindCompleted, fsm.KindFailed, fsm.KindCancelled, fsm.KindTimedOut}
	i := m.rng.IntN(len(kinds))
	j := (i + 1 + m.rng.IntN(len(kinds)-1)) % len(kinds)
	ks := [2]fsm.Kind{kinds[i], kinds[j]}
	texts := [2]string{m.text(ks[0]), m.text(ks[1])}
	var errs [2]error
	var through [2]*Store
	for n := range 2 {
		use(n)
		through[n] = m.s
	}
	var wg sync.WaitGroup
	for n := range 2 {
		wg.Go(func() { _, errs[n] = m.do(through[n], ks[n], d.id, texts[n]) })
	}
	wg.Wait()
	use(1)
	now := m.now()
	got, err := m.s.Get(d.id)
	if err != nil {
		m.fatalf("get %s: %v", d.id, err)
	}
	m.logStep("race %s %q and %s %q on %s -> %s (%v, %v)", ks[0], texts[0], ks[1], texts[1], d.id, got.State, errs[0], errs[1])
	w := -1
	for n := range 2 {
		if modelTerminalState(ks[n]) == got.State {
			w = n
		}
	}
	if w < 0 || errs[w] != nil || !errors.Is(errs[1-w], fsm.ErrTerminal) {
		m.fatalf("race on %s: state %s after %s (%v) and %s (%v): want one winner and one ErrTerminal", d.id, got.State, ks[0], errs[0], ks[1], errs[1])
	}
	m.counts[ks[w].String()]++
	use(w) // the winner's store writes the artifact if it may
	m.terminate(d, ks[w], texts[w], now)
	d.rejected++
	d.version++
	m.compare("race", d, got)
	m.touch(d)
}

// raceAck acknowledges one due notification twice at the same time: both
// succeed and exactly one says it was the first.
func (m *modelRun) raceAck() { m.raceAckThrough(func(int) {}) }

// raceAckThrough is raceAck with ack n (0 or 1) sent through the store
// that use(n) makes the current one (m.s), after the due notifications are
// read through the current store.
func (m *modelRun) raceAckThrough(use func(n int)) {
	due := m.checkDue("")
	if len(due) == 0 {
		m.notifications()
		return
	}
	m.counts["race-ack"]++
	nid := due[m.rng.IntN(len(due))].ID
	var res [2]AckResult
	var errs [2]error
	var through [2]*Store
	for n := range 2 {
		use(n)
		through[n] = m.s
	}
	var wg sync.WaitGroup
	for n := range 2 {
		wg.Go(func() { res[n], errs[n] = through[n].Ack(m.ctx, nid) })
	}
	wg.Wait()
	m.logStep("race ack %s -> %+v %v, %+v %v", nid, res[0], errs[0], res[1], errs[1])
	if errs[0] != nil || errs[1] != nil || res[0].Already == res[1].Already {
		m.fatalf("two acks of %s at once: %+v %v, %+v %v; want both to succeed and exactly one first", nid, res[0], errs[0], res[1], errs[1])
	}
	now := m.now()
	if id, ok := strings.CutPrefix(nid, "terminal:"); ok {
		d := m.dels[id]
		d.notifiedAt = now
		d.version++
		m.cycleNotified(d, now)
		m.checkDel(d)
		m.touch(d)
	} else {
		m.allc[nid].acked = true
	}
}

// ---- checks ----

func (m *modelRun) artifactPath(d *mDel) string {
	return filepath.Join(d.artifactDir, d.project, d.root, d.id+".md")
}

// compare checks a record the store returned against the model.
func (m *modelRun) compare(op string, d *mDel, got fsm.Delegation) {
	m.t.Helper()
	type field struct {
		name      string
		got, want any
	}
	for _, f := range []field{
		{"id", got.ID, d.id},
		{"state", got.State, d.state},
		{"root", got.RootSessionID, d.root},
		{"parent", got.ParentSessionID, d.parent},
		{"createdAt", got.CreatedAt, d.createdAt},
		{"timeoutAt", got.TimeoutAt, d.timeoutAt},
		{"completedAt", got.CompletedAt, d.completedAt},
		{"progress", got.Progress, d.progress},
		{"persistedAt", got.PersistedAt, d.persistedAt},
		{"notifiedAt", got.NotifiedAt, d.notifiedAt},
		{"readAt", got.ReadAt, d.readAt},
		{"rejected", got.Rejected, d.rejected},
		{"version", got.Version, d.version},
		{"owner", got.Owner, d.owner},
		{"unread", got.Unread(), modelUnread(d)},
	} {
		if f.got != f.want {
			m.fatalf("%s: %s %s = %v, model says %v", op, d.id, f.name, f.got, f.want)
		}
	}
	if d.state == fsm.Timeout && got.Error != fmt.Sprintf("Delegation timed out after %ds", int64(d.timeout/time.Second)) {
		m.fatalf("%s: timed out %s has error %q", op, d.id, got.Error)
	}
}

// checkDel reads a delegation back and compares it.
func (m *modelRun) checkDel(d *mDel) {
	m.t.Helper()
	got, err := m.s.Get(d.id)
	if err != nil {
		m.fatalf("get %s: %v", d.id, err)
	}
	m.compare("get", d, got)
}

// checkArtifact checks the file of a persisted delegation: where COMPAT
// puts it, the size and hash the persisted event recorded, and the
// result text by status at its end.
func (m *modelRun) checkArtifact(d *mDel, got fsm.Delegation) {
	m.t.Helper()
	if m.blocked[[2]string{d.project, d.root}] {
		return // moved aside for now
	}
	if want := filepath.Join(d.project, d.root, d.id+".md"); got.ArtifactPath != want {
		m.fatalf("%s artifact path %q, want %q", d.id, got.ArtifactPath, want)
	}
	file, err := os.ReadFile(m.artifactPath(d))
	if err != nil {
		m.fatalf("%s is persisted but its artifact is not there: %v", d.id, err)
	}
	if int64(len(file)) != got.ArtifactSize || xxhash.Sum64(file) != got.ArtifactHash {
		m.fatalf("%s artifact is %d bytes (hash %x), the persisted event says %d (%x)", d.id, len(file), xxhash.Sum64(file), got.ArtifactSize, got.ArtifactHash)
	}
	var result string
	switch d.state {
	case fsm.Complete:
		result = d.endText
	case fsm.Error:
		result = "Error: " + d.endText
		if strings.TrimSpace(d.endText) == "" {
			result = "Error: Delegation failed."
		}
	case fsm.Cancelled:
		result = "Delegation was cancelled before completion."
	case fsm.Timeout:
		result = d.progress + "\n\n[TIMEOUT REACHED]"
	}
	content := string(file)
	for _, want := range []string{"**ID:** " + d.id + "\n", "**Agent:** " + modelAgent + "\n", "**Status:** " + string(d.state) + "\n"} {
		if !strings.Contains(content, want) {
			m.fatalf("%s artifact lacks %q:\n%s", d.id, want, content)
		}
	}
	if !strings.HasSuffix(content, "---\n\n"+result) {
		m.fatalf("%s artifact does not end with its result text %q:\n%s", d.id, result, content)
	}
}

// due is what the model says Notifications(parent) returns now: terminal
// notifications of persisted, unacknowledged delegations (never before the
// artifact is persisted), and all-complete notifications past their quiet
// period, neither acknowledged nor suppressed; of those, the ones this
// daemon serves (owner.go).
func (m *modelRun) due(parent string) map[string]mNote {
	now := m.now()
	out := map[string]mNote{}
	for _, d := range m.dels {
		if parent != "" && d.parent != parent || d.owner != m.self {
			continue
		}
		if d.state.Terminal() && !d.persistedAt.IsZero() && d.notifiedAt.IsZero() && !d.persistedAt.After(now) {
			id := "terminal:" + d.id
			out[id] = mNote{id: id, kind: KindTerminal, delegation: d.id, parent: d.parent, dueAt: d.persistedAt, remaining: d.remaining, failures: d.failures}
		}
	}
	for _, ac := range m.allc {
		if (parent == "" || ac.parent == parent) && !ac.acked && !ac.suppressed && !ac.dueAt.After(now) && m.dels[ac.by].owner == m.self {
			out[ac.id] = mNote{id: ac.id, kind: KindAllComplete, parent: ac.parent, cycle: ac.cycle, dueAt: ac.dueAt, failures: ac.failures}
		}
	}
	return out
}

// checkDue compares Notifications with the model and checks persist
// before notify in the log: a terminal notification's Seq is the
// delegation's persisted event, after its terminal event, and the artifact
// is on disk.
func (m *modelRun) checkDue(parent string) []Notification {
	m.t.Helper()
	got, err := m.s.Notifications(parent)
	if err != nil {
		m.fatalf("notifications %q: %v", parent, err)
	}
	want := m.due(parent)
	if len(got) != len(want) {
		var ids []string
		for _, n := range got {
			ids = append(ids, n.ID)
		}
		var wids []string
		for id := range want {
			wids = append(wids, id)
		}
		slices.Sort(wids)
		m.fatalf("notifications %q: %v, model says %v", parent, ids, wids)
	}
	for i, n := range got {
		w, ok := want[n.ID]
		if !ok {
			m.fatalf("notification %s is due, model says it is not (acknowledged, suppressed, not persisted or not yet due)", n.ID)
		}
		if n.Kind != w.kind || n.Delegation != w.delegation || n.Parent != w.parent || n.Cycle != w.cycle ||
			!n.DueAt.Equal(w.dueAt) || n.Remaining != w.remaining || n.Failures != w.failures {
			m.fatalf("notification %+v, model says %+v", n, w)
		}
		if i > 0 && (n.DueAt.Before(got[i-1].DueAt) || n.DueAt.Equal(got[i-1].DueAt) && n.Seq < got[i-1].Seq) {
			m.fatalf("notifications out of order: %s after %s", n.ID, got[i-1].ID)
		}
		if n.Kind == KindTerminal {
			d := m.dels[n.Delegation]
			for _, s := range []string{"<task-id>" + d.id + "</task-id>", "<status>" + string(d.state) + "</status>"} {
				if !strings.Contains(n.Text, s) {
					m.fatalf("notification %s lacks %q: %s", n.ID, s, n.Text)
				}
			}
			if hasRem := strings.Contains(n.Text, "<remaining>"); hasRem != (w.remaining > 0) ||
				hasRem && !strings.Contains(n.Text, fmt.Sprintf("<remaining>%d</remaining>", w.remaining)) {
				m.fatalf("notification %s remaining line, want %d: %s", n.ID, w.remaining, n.Text)
			}
		} else if !strings.Contains(n.Text, fmt.Sprintf("<cycle>%d</cycle>", w.cycle)) ||
			!strings.Contains(n.Text, "<parent-session-id>"+w.parent+"</parent-session-id>") {
			m.fatalf("notification %s text: %s", n.ID, n.Text)
		}
		m.checkNotificationSeq(n)
	}
	return got
}

// checkNotificationSeq checks, once per entry, the event that made it due.
func (m *modelRun) checkNotificationSeq(n Notification) {
	m.t.Helper()
	if m.checked[n.ID] == n.Seq {
		return
	}
	err := m.s.Log().View(func(tx *eventlog.Tx) error {
		rec, err := tx.Record(n.Seq)
		if err != nil {
			return err
		}
		if n.Kind == KindAllComplete {
			// Due after the last member of the cycle was notified.
			d := m.dels[rec.Stream]
			if fsm.Kind(rec.Kind) != fsm.KindNotified || d == nil || d.parent != n.Parent || d.cycle != n.Cycle {
				return fmt.Errorf("%s: event %d is %s of %s, want the notified event of a member of the cycle", n.ID, n.Seq, fsm.Kind(rec.Kind), rec.Stream)
			}
			return nil
		}
		// Persist before notify: due from the persisted event on, which
		// follows the terminal event.
		if fsm.Kind(rec.Kind) != fsm.KindPersisted || rec.Stream != n.Delegation {
			return fmt.Errorf("%s: event %d is %s of %s, want the persisted event", n.ID, n.Seq, fsm.Kind(rec.Kind), rec.Stream)
		}
		recs, err := tx.Stream(n.Delegation)
		if err != nil {
			return err
		}
		for _, r := range recs {
			if k := fsm.Kind(r.Kind); k >= fsm.KindCompleted && k <= fsm.KindTimedOut {
				if r.Seq >= n.Seq {
					return fmt.Errorf("%s: terminal event %d is not before persisted %d", n.ID, r.Seq, n.Seq)
				}
				return nil
			}
		}
		return fmt.Errorf("%s: no terminal event before persisted %d", n.ID, n.Seq)
	})
	if err != nil {
		m.fatalf("%v", err)
	}
	if n.Kind == KindTerminal {
		d := m.dels[n.Delegation]
		got, err := m.s.Get(d.id)
		if err != nil {
			m.fatalf("get %s: %v", d.id, err)
		}
		m.checkArtifact(d, got)
	}
	m.checked[n.ID] = n.Seq
}

// checkRoot checks what a root session sees: List (by id) and List with
// Unread against the model's COMPAT unread definition, and Carried's
// running (registration order) and unread (newest completion first) views.
func (m *modelRun) checkRoot(root string) {
	m.t.Helper()
	var all, unread, running, unreadByTime []*mDel
	for _, id := range m.order {
		d := m.dels[id]
		if d.root != root {
			continue
		}
		all = append(all, d)
		if modelUnread(d) {
			unread = append(unread, d)
			unreadByTime = append(unreadByTime, d)
		}
		if d.state.Active() {
			running = append(running, d)
		}
	}
	byID := func(a, b *mDel) int { return strings.Compare(a.id, b.id) }
	slices.SortFunc(all, byID)
	slices.SortFunc(unread, byID)
	slices.SortFunc(running, func(a, b *mDel) int {
		if c := a.createdAt.Compare(b.createdAt); c != 0 {
			return c
		}
		return byID(a, b)
	})
	slices.SortFunc(unreadByTime, func(a, b *mDel) int {
		if c := b.completedAt.Compare(a.completedAt); c != 0 {
			return c
		}
		return byID(b, a)
	})
	ids := func(ds []*mDel) []string {
		out := []string{}
		for _, d := range ds {
			out = append(out, d.id)
		}
		return out
	}
	gotIDs := func(ds []fsm.Delegation) []string {
		out := []string{}
		for _, d := range ds {
			out = append(out, d.ID)
		}
		return out
	}
	list, err := m.s.List(root, ListOptions{})
	if err != nil {
		m.fatalf("list %s: %v", root, err)
	}
	if g, w := gotIDs(list), ids(all); !slices.Equal(g, w) {
		m.fatalf("list %s: %v, model says %v", root, g, w)
	}
	for i := range list {
		m.compare("list", all[i], list[i])
	}
	lu, err := m.s.List(root, ListOptions{Unread: true})
	if err != nil {
		m.fatalf("list unread %s: %v", root, err)
	}
	if g, w := gotIDs(lu), ids(unread); !slices.Equal(g, w) {
		m.fatalf("unread of %s: %v, model says %v", root, g, w)
	}
	cr, cu, err := m.s.Carried(root, 0)
	if err != nil {
		m.fatalf("carried %s: %v", root, err)
	}
	if g, w := gotIDs(cr), ids(running); !slices.Equal(g, w) {
		m.fatalf("running view of %s: %v, model says %v", root, g, w)
	}
	if g, w := gotIDs(cu), ids(unreadByTime); !slices.Equal(g, w) {
		m.fatalf("unread view of %s: %v, model says %v", root, g, w)
	}
}

// checkAll checks every delegation, artifact, root and parent outbox.
func (m *modelRun) checkAll() {
	m.t.Helper()
	for _, id := range m.order {
		d := m.dels[id]
		got, err := m.s.Get(id)
		if err != nil {
			m.fatalf("get %s: %v", id, err)
		}
		m.compare("full check", d, got)
		if !d.persistedAt.IsZero() {
			m.checkArtifact(d, got)
		}
	}
	for _, root := range m.roots {
		m.checkRoot(root)
	}
	m.checkDue("")
	for _, p := range m.parentOrder {
		m.checkDue(p)
	}
}

// checkLog checks the log itself, stream by stream, then verifies it:
//   - terminal is final: at most one terminal event, and no started or
//     progressed event after it (late commands are rejected events);
//   - persist before notify: one persisted event per terminal delegation,
//     after its terminal event; the notified event after it;
//   - one terminal notification per delegation: exactly one notified event
//     when acknowledged, none otherwise;
//   - one all-complete per (parent, cycle): at most one
//     all_complete_notified per cycle in the parent's stream, for exactly
//     the cycles the model acknowledged;
//   - no temporary artifact file is left.
func (m *modelRun) checkLog() {
	m.t.Helper()
	l := m.s.Log()
	for _, id := range m.order {
		d := m.dels[id]
		recs, err := l.Stream(id)
		if err != nil {
			m.fatalf("stream %s: %v", id, err)
		}
		if uint64(len(recs)) != d.version {
			m.fatalf("%s has %d events, model says %d", id, len(recs), d.version)
		}
		count := map[fsm.Kind]int{}
		terminalAt, persistedAt := -1, -1
		for i, r := range recs {
			k := fsm.Kind(r.Kind)
			count[k]++
			switch {
			case i == 0 && k != fsm.KindRegistered:
				m.fatalf("%s starts with %s", id, k)
			case k >= fsm.KindCompleted && k <= fsm.KindTimedOut:
				if terminalAt >= 0 {
					m.fatalf("%s has a second terminal event %s at %d", id, k, r.Seq)
				}
				terminalAt = i
			case (k == fsm.KindStarted || k == fsm.KindProgressed) && terminalAt >= 0:
				m.fatalf("%s: %s at %d after its terminal event", id, k, r.Seq)
			case k == fsm.KindPersisted:
				if terminalAt < 0 || persistedAt >= 0 {
					m.fatalf("%s: persisted at %d without a terminal event before it, or twice", id, r.Seq)
				}
				persistedAt = i
			case k == fsm.KindNotified || k == fsm.KindRead:
				if persistedAt < 0 {
					m.fatalf("%s: %s at %d before the artifact was persisted", id, k, r.Seq)
				}
			}
		}
		wantNotified := 0
		if !d.notifiedAt.IsZero() {
			wantNotified = 1
		}
		if count[fsm.KindNotified] != wantNotified || count[fsm.KindRejected] != d.rejected || count[fsm.KindNotificationFailed] != d.failures {
			m.fatalf("%s: %d notified, %d rejected, %d failed deliveries; model says %d, %d, %d", id,
				count[fsm.KindNotified], count[fsm.KindRejected], count[fsm.KindNotificationFailed], wantNotified, d.rejected, d.failures)
		}
		if (terminalAt >= 0) != d.state.Terminal() || (persistedAt >= 0) != !d.persistedAt.IsZero() {
			m.fatalf("%s is %s but its stream has terminal at %d, persisted at %d", id, d.state, terminalAt, persistedAt)
		}
	}
	for _, p := range m.parentOrder {
		recs, err := l.Stream("parent/" + p)
		if err != nil {
			m.fatalf("stream of parent %s: %v", p, err)
		}
		acked := map[uint64]int{}
		failures := 0
		for _, r := range recs {
			e, err := fsm.UnmarshalPayload(fsm.Kind(r.Kind), r.Stream, r.Time, r.Payload)
			if err != nil {
				m.fatalf("record %d: %v", r.Seq, err)
			}
			switch e.Kind {
			case fsm.KindAllCompleteNotified:
				acked[e.Cycle]++
			case fsm.KindNotificationFailed:
				failures++
			}
		}
		wantFailures := 0
		for _, ac := range m.allc {
			if ac.parent != p {
				continue
			}
			wantFailures += ac.failures
			if ac.acked != (acked[ac.cycle] == 1) {
				m.fatalf("%s: acknowledged=%v, the parent's stream has %d all_complete_notified", ac.id, ac.acked, acked[ac.cycle])
			}
			delete(acked, ac.cycle)
		}
		if len(acked) > 0 || failures != wantFailures {
			m.fatalf("parent %s: all-complete acknowledged for cycles %v the model never made due; %d failed deliveries, model says %d", p, acked, failures, wantFailures)
		}
	}
	if err := l.Verify(m.ctx); err != nil {
		m.fatalf("verify: %v", err)
	}
	err := filepath.WalkDir(m.dir, func(path string, e fs.DirEntry, err error) error {
		if err == nil && strings.Contains(e.Name(), ".md.tmp-") {
			return fmt.Errorf("temporary file left: %s", path)
		}
		return err
	})
	if err != nil {
		m.fatalf("%v", err)
	}
}
