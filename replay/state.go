package replay

import (
	"strings"
	"time"

	"github.com/delegations/delegations/eventlog"
	"github.com/delegations/delegations/fsm"
	"github.com/delegations/delegations/projection"
)

// parentStream prefixes the stream of a parent session's cycle events
// (all-complete acknowledgements), as the store writes them.
const parentStream = "parent/"

// delegation is one delegation's replayed state and the sequence numbers
// of its steps.
type delegation struct {
	rec fsm.Delegation

	first, last                         uint64 // seqs of its first and last events
	terminal, persisted, notified, read uint64 // seqs of the steps; 0: did not happen
	indexed                             bool   // registered or imported first: the views index it
	imported                            bool   // adopted from a legacy file
	pending                             bool   // went terminal from active, not persisted since
	cycle                               uint64 // the cycle it joined (registered)
	joined                              bool
	damaged                             bool // the log lost some of its records: its replayed state is incomplete

	parent *cycleState // its parent's cycle, once registered (the parent never changes)

	// note is its terminal notification while the outbox must hold it.
	note    projection.Notification
	noteDue bool

	failures   []uint64 // notification_failed seqs while the notification waited
	lastError  string
	rejections []rejection // refused commands, at most maxRejections
}

// rejection is one refused command.
type rejection struct {
	seq    uint64
	at     time.Time
	kind   fsm.Kind
	state  fsm.State
	result string // a refused completion's result
}

const maxRejections = 64

// cycleState is a parent session's current cycle, and its all-complete
// notification while the outbox must hold it. The outbox holds at most one
// per parent: a new cycle drops the older one's.
type cycleState struct {
	projection.CycleView
	written bool // the cycles view holds it (the store writes it on registration, termination and notification)

	all    projection.Notification
	allDue bool
}

// state is the fold of the log: every delegation, the parents' cycles and
// the notifications the outbox must hold.
type state struct {
	ds      map[string]*delegation
	order   []string // ids in order of their first event
	cycles  map[string]*cycleState
	unknown map[fsm.Kind][]uint64 // kinds this build does not know
	slab    []delegation          // delegations are allocated in chunks

	applied uint64 // records applied
	through uint64 // the last sequence number applied
	lastAt  time.Time

	bad []Finding // bad payloads

	outbox map[string]*projection.Notification // filled by finish
}

func newState() *state {
	return &state{
		ds:      make(map[string]*delegation),
		cycles:  make(map[string]*cycleState),
		unknown: make(map[fsm.Kind][]uint64),
	}
}

// slabSize is how many delegations one allocation holds.
const slabSize = 1024

func (s *state) newDelegation(seq uint64) *delegation {
	if len(s.slab) == cap(s.slab) {
		s.slab = make([]delegation, 0, slabSize)
	}
	s.slab = append(s.slab, delegation{first: seq})
	return &s.slab[len(s.slab)-1]
}

// apply folds one record into the state. The bookkeeping of views and
// outbox follows the store's rules (projection's views), step by step, so
// that what they should hold after the whole log can be compared.
func (s *state) apply(r *eventlog.Record) {
	s.applied++
	s.through = r.Seq
	if r.Time.After(s.lastAt) {
		s.lastAt = r.Time
	}
	kind := fsm.Kind(r.Kind)
	e, err := fsm.UnmarshalPayload(kind, r.Stream, r.Time, r.Payload)
	if err != nil {
		s.bad = append(s.bad, Finding{
			Code: CodeBadPayload, Severity: SeverityError, Seqs: []uint64{r.Seq},
			Delegation: r.Stream,
			Diagnosis: "record " + itoa(r.Seq) + " (" + kind.String() + " of " + quote(r.Stream) + ") passes its checksum but its payload does not decode: " +
				err.Error() + ". Replay counts it and applies nothing from it, as the store could not have projected it.",
			Next: "delegations verify; a newer build may read it (upgrade), otherwise restore the log file from a backup",
		})
		e = fsm.Event{ID: r.Stream, At: r.Time} // kind 0: only the version moves
	}
	if !kind.Known() {
		s.unknown[kind] = append(s.unknown[kind], r.Seq)
	}
	if parent, ok := strings.CutPrefix(r.Stream, parentStream); ok {
		c := s.cycles[parent]
		if c == nil || !c.allDue || c.all.Cycle != e.Cycle {
			return // not in the outbox: nothing to change
		}
		switch e.Kind {
		case fsm.KindAllCompleteNotified:
			c.allDue = false
		case fsm.KindNotificationFailed:
			c.all.Failures++
			c.all.LastError = e.Error
		}
		return
	}

	d := s.ds[r.Stream]
	if d == nil {
		d = s.newDelegation(r.Seq)
		s.ds[r.Stream] = d
		s.order = append(s.order, r.Stream)
	}
	d.last = r.Seq
	// What the transitions below need of the record before the event.
	prevVersion, prevState := d.rec.Version, d.rec.State
	prevPersisted, prevNotified := !d.rec.PersistedAt.IsZero(), !d.rec.NotifiedAt.IsZero()
	d.rec = fsm.Evolve(d.rec, e)
	next := &d.rec
	persisted, notified := !next.PersistedAt.IsZero(), !next.NotifiedAt.IsZero()

	if !prevState.Terminal() && next.State.Terminal() {
		d.terminal = r.Seq
	}
	if !prevPersisted && persisted {
		d.persisted = r.Seq
	}
	if !prevNotified && notified {
		d.notified = r.Seq
	}
	switch e.Kind {
	case fsm.KindRead:
		d.read = r.Seq
	case fsm.KindRejected:
		if len(d.rejections) < maxRejections {
			rj := rejection{seq: r.Seq, at: r.Time, kind: e.Refused, state: e.RefusedState}
			if e.Refused == fsm.KindCompleted {
				rj.result = e.Result
			}
			d.rejections = append(d.rejections, rj)
		}
	}

	// The views' transitions: exactly one per event, in the store's order.
	switch {
	case projection.Unregistered(next):
		// Its registration is not in the log (a recovery lost it): the
		// views keep its record and index nothing else.
	case prevVersion == 0 && e.Kind == fsm.KindRegistered:
		d.indexed = true
		c := s.cycle(next.ParentSessionID)
		d.parent = c
		if c.Active == 0 {
			c.allDue = false // a new cycle: the older one's all-complete is never sent
			c.CycleView = projection.CycleView{Cycle: c.Cycle + 1}
		}
		c.Active++
		c.Members++
		c.written = true
		d.cycle, d.joined = c.Cycle, true
	case prevVersion == 0 && e.Kind == fsm.KindImported:
		d.indexed, d.imported = true, true
	case prevState.Active() && next.State.Terminal():
		d.pending = true
		c := s.parentOf(d)
		c.Active--
		c.written = true
	case !prevPersisted && persisted:
		d.pending = false
		d.note = projection.Notification{
			Kind: projection.KindTerminal, Parent: next.ParentSessionID,
			Remaining: s.parentOf(d).Active, DueAt: e.At, Seq: r.Seq,
		}
		d.noteDue = true
		d.failures, d.lastError = nil, ""
	case !prevNotified && notified:
		d.noteDue = false
		c := s.parentOf(d)
		if !d.joined || d.cycle != c.Cycle {
			break // an older cycle's delegation: that cycle is over
		}
		c.Notified++
		c.written = true
		if c.Active > 0 || c.Notified < c.Members {
			break
		}
		c.all = projection.Notification{
			Kind: projection.KindAllComplete, Parent: next.ParentSessionID, Cycle: c.Cycle,
			DueAt: next.NotifiedAt.Add(projection.AllCompleteQuiet), Seq: r.Seq,
		}
		c.allDue = true
	case e.Kind == fsm.KindNotificationFailed:
		if d.noteDue {
			d.failures = append(d.failures, r.Seq)
			d.lastError = e.Error
			d.note.Failures++
			d.note.LastError = e.Error
		}
	}
}

// parentOf returns the cycle of d's parent session.
func (s *state) parentOf(d *delegation) *cycleState {
	if d.parent == nil {
		d.parent = s.cycle(d.rec.ParentSessionID)
	}
	return d.parent
}

func (s *state) cycle(parent string) *cycleState {
	c := s.cycles[parent]
	if c == nil {
		c = &cycleState{}
		s.cycles[parent] = c
	}
	return c
}

// finish builds the outbox the views must hold, by notification id.
func (s *state) finish() {
	s.outbox = map[string]*projection.Notification{}
	for _, id := range s.order {
		if d := s.ds[id]; d.noteDue {
			n := d.note
			n.ID, n.Delegation = projection.TerminalNotificationID(id), id
			s.outbox[n.ID] = &n
		}
	}
	for parent, c := range s.cycles {
		if c.allDue {
			n := c.all
			n.ID = projection.AllCompleteNotificationID(parent, c.all.Cycle)
			s.outbox[n.ID] = &n
		}
	}
}
