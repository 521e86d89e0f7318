package replay

import (
	"errors"
	"slices"
	"strings"
	"time"

	"github.com/delegations/delegations/eventlog"
	"github.com/delegations/delegations/fsm"
	"github.com/delegations/delegations/projection"
	"github.com/delegations/delegations/projection/artifact"
)

// delegation is one delegation's replayed state and the sequence numbers
// of its steps. Only delegations that may still produce a finding are
// kept (see settled): a settled one is dropped, and read back from its
// stream if a later event of it comes.
type delegation struct {
	rec fsm.Delegation // its texts (and the payloads they share) dropped once persisted

	first, last                         uint64 // seqs of its first and last events
	terminal, persisted, notified, read uint64 // seqs of the steps; 0: did not happen
	member                              uint64 // the cycle of its parent it joined (fsm.Cycle.Join); 0: none
	imported                            bool   // adopted from a legacy file
	damaged                             bool   // the log lost some of its records: its replayed state is incomplete
	flagged                             bool   // it has a finding made while replaying (a payload that does not decode)

	*trouble // nil for most
}

// trouble is what only some delegations have: failed deliveries and
// refused commands.
type trouble struct {
	failures  []uint64 // notification_failed seqs while its notification waited, the first maxSeqs
	nfailures int
	lastError string

	rejections []rejection // refused commands, at most maxRejections
}

// rejection is one refused command.
type rejection struct {
	seq    uint64
	at     time.Time
	kind   fsm.Kind
	state  fsm.State
	result string // a refused completion's result, its first line cut for the report
}

const maxRejections = 64

// parent is a parent session's all-complete bookkeeping, folded with
// fsm.Cycle as the store's projection folds it: the current cycle, and
// the all-complete notification waiting for the bridge, if any (a new
// cycle drops the one of the cycle it ends, so there is at most one).
type parent struct {
	cycle   fsm.Cycle
	due     dueAllComplete
	waiting bool // due is waiting for the bridge
}

// dueAllComplete is a waiting all-complete notification.
type dueAllComplete struct {
	projection.Notification
	group uint64 // the first seq of the delegation whose acknowledgement made it due
}

// unknownKind counts the records of a kind this build does not know, and
// keeps the first ones (a finding lists maxSeqs).
type unknownKind struct {
	n    int
	seqs []uint64
}

// state is the fold of the log.
type state struct {
	ds      map[string]*delegation // the delegations kept (unsettled ones)
	parents map[string]*parent
	unknown map[fsm.Kind]*unknownKind // kinds this build does not know

	applied uint64 // records applied
	through uint64 // the last sequence number applied
	lastAt  time.Time

	delegations int               // every delegation seen, dropped ones included
	dropped     map[fsm.State]int // the dropped delegations by status

	bad []Finding // bad payloads

	// arts checks each artifact when its persisted event is applied.
	arts *artifacts
	// stream reads the records of a delegation's stream before seq that
	// the replay applied: to bring back a dropped delegation, or the
	// texts of a persisted one.
	stream func(id string, before uint64) ([]eventlog.Record, error)
	drop   bool // settled delegations are dropped (not when Diagnose folds one stream)

	uncompacted []string // persisted delegations not compacted yet, oldest first
}

func newState(arts *artifacts) *state {
	return &state{
		ds:      make(map[string]*delegation),
		parents: make(map[string]*parent),
		unknown: make(map[fsm.Kind]*unknownKind),
		dropped: make(map[fsm.State]int),
		arts:    arts,
	}
}

// decode returns r's event, without its prompt: a replay never reads a
// prompt (the longest text of most registrations), so it is checked and
// not copied (fsm.UnmarshalPayloadTo). A payload that does not decode is
// an event of kind 0 (only the version moves) and err says why.
func decode(r *eventlog.Record) (fsm.Event, error) {
	var e fsm.Event
	err := decodeTo(&e, r)
	return e, err
}

// decodeTo is decode into *e: the scan decodes straight into its batch,
// one copy of the event fewer (an event is a few hundred bytes).
func decodeTo(e *fsm.Event, r *eventlog.Record) error {
	err := fsm.UnmarshalPayloadTo(e, fsm.Kind(r.Kind), r.Stream, r.Time, r.Payload, false)
	if err != nil {
		*e = fsm.Event{ID: r.Stream, At: r.Time}
	}
	return err
}

// apply folds one record into the state: its event e, or why its
// payload does not decode (decode).
func (s *state) apply(r *eventlog.Record, e *fsm.Event, err error) {
	s.applied++
	s.through = r.Seq
	if r.Time.After(s.lastAt) {
		s.lastAt = r.Time
	}
	kind := fsm.Kind(r.Kind)
	if err != nil {
		s.bad = append(s.bad, Finding{
			Code: CodeBadPayload, Severity: SeverityError, Seqs: []uint64{r.Seq},
			Delegation: r.Stream,
			Diagnosis: "record " + itoa(r.Seq) + " (" + kind.String() + " of " + quote(r.Stream) + ") passes its checksum but its payload does not decode: " +
				err.Error() + ". Replay counts it and applies nothing from it, as the store could not have projected it.",
			Next: "delegations verify; a newer build may read it (upgrade), otherwise restore the log file from a backup",
		})
	}
	if !kind.Known() {
		u := s.unknown[kind]
		if u == nil {
			u = &unknownKind{}
			s.unknown[kind] = u
		}
		if u.n++; len(u.seqs) < maxSeqs {
			u.seqs = append(u.seqs, r.Seq)
		}
	}
	if p, ok := fsm.ParentOfStream(r.Stream); ok {
		s.parentEvent(p, e)
		return
	}
	d := s.ds[r.Stream]
	if d == nil {
		d = s.bringBack(r.Stream, r.Seq, e.Kind)
		s.ds[r.Stream] = d
	}
	d.flagged = d.flagged || err != nil
	s.step(d, r.Seq, e, true)
	if s.drop && d.settled() {
		delete(s.ds, r.Stream)
		s.dropped[d.rec.State]++
	}
}

// bringBack returns the state of delegation id, not kept, before its event
// at seq: a new delegation, or one dropped earlier, folded again from its
// stream. A registration or an import starts a stream (the store never
// appends one to a stream that has events: it refuses the command with a
// rejected event), so only the other kinds read the stream.
func (s *state) bringBack(id string, seq uint64, kind fsm.Kind) *delegation {
	d := &delegation{first: seq}
	if !s.drop || kind == fsm.KindRegistered || kind == fsm.KindImported {
		s.delegations++
		return d
	}
	recs, _ := s.stream(id, seq) // damaged records stepped over, as the scan steps over them
	if len(recs) == 0 {
		s.delegations++ // its registration is not in the log (a recovered log)
		return d
	}
	d.first = recs[0].Seq
	for i := range recs {
		e, _ := decode(&recs[i])
		s.step(d, recs[i].Seq, &e, false)
	}
	s.dropped[d.rec.State]--
	return d
}

// settled reports whether d can produce no more findings from its own
// state: registered (or imported), ended, its artifact written (and
// checked), its notification acknowledged and its result read (or
// imported, which is never notified), no refused command. Only a later
// event can change that, and it brings d back.
func (d *delegation) settled() bool {
	r := &d.rec
	if d.damaged || d.flagged || d.trouble != nil && len(d.rejections) > 0 || r.CreatedAt.IsZero() ||
		!r.State.Terminal() || r.PersistedAt.IsZero() {
		return false
	}
	return d.imported || !r.NotifiedAt.IsZero() && !r.Unread()
}

// step applies one event of d at seq. effects is false when d is being
// folded again (bringBack): its artifact was checked and its parent's
// cycle counted the first time.
func (s *state) step(d *delegation, seq uint64, e *fsm.Event, effects bool) {
	d.last = seq
	prev := steps{version: d.rec.Version, state: d.rec.State, persisted: !d.rec.PersistedAt.IsZero(), notified: !d.rec.NotifiedAt.IsZero()}
	owner := d.rec.Owner
	fsm.EvolveInPlace(&d.rec, e)
	next := &d.rec

	if prev.version == 0 && e.Kind == fsm.KindImported {
		d.imported = true
	}
	if !prev.state.Terminal() && next.State.Terminal() {
		d.terminal = seq
	}
	persisted := !prev.persisted && !next.PersistedAt.IsZero()
	if persisted {
		d.persisted = seq
		if d.trouble != nil {
			d.nfailures, d.failures, d.lastError = 0, nil, ""
		}
		if effects && s.arts != nil {
			s.arts.check(d, next)
		}
	} else if effects && s.arts != nil && (e.Kind == fsm.KindPersisted ||
		e.Kind == fsm.KindOwned && prev.persisted && s.arts.elsewhere(owner) != s.arts.elsewhere(next.Owner)) {
		s.checkAgain(d, next, seq)
	}
	if !prev.notified && !next.NotifiedAt.IsZero() {
		d.notified = seq
	}
	switch e.Kind {
	case fsm.KindRead:
		d.read = seq
	case fsm.KindRejected:
		t := d.troubled()
		if len(t.rejections) < maxRejections {
			rj := rejection{seq: seq, at: e.At, kind: e.Refused, state: e.RefusedState}
			if e.Refused == fsm.KindCompleted {
				rj.result = strings.Clone(cut(firstLine(e.Result), 80))
			}
			t.rejections = append(t.rejections, rj)
		}
	case fsm.KindNotificationFailed:
		// The terminal notification waits from its persisted event to its
		// acknowledgement; a registered delegation's only (an imported or
		// unregistered one is never notified).
		if d.persisted != 0 && d.notified == 0 && !d.imported && !next.CreatedAt.IsZero() {
			t := d.troubled()
			t.nfailures++
			if len(t.failures) < maxSeqs {
				t.failures = append(t.failures, seq)
			}
			t.lastError = strings.Clone(cut(e.Error, 120))
		}
	}
	if effects {
		s.cycles(d, prev, next, seq, e)
	}
	if persisted {
		// Its texts are no longer needed (the artifact check has its own
		// copy); its other strings are copied out of the payloads later,
		// if it is still kept then (most are settled by then).
		next.Progress, next.Result, next.Error = "", "", ""
		if s.drop {
			s.compactLater(next.ID)
		}
	}
}

// checkAgain checks again the artifact of d, persisted earlier, at its
// event at seq: persisted a second time (an older build may have written
// it again otherwise), or owned by another daemon, which moves the file
// into or out of this daemon's care (artifacts.elsewhere). It is checked
// against the size and hash recorded last, and the rendering of the
// record as it was when first persisted, whose texts are read back from
// the stream. The last check made stands: the one with the owner at the
// end of the replay. Takeovers are rare, and only a change of whose care
// the artifact is in is checked again, so a replay through no daemon in
// particular (Options.Self empty) checks nothing more.
func (s *state) checkAgain(d *delegation, next *fsm.Delegation, seq uint64) {
	recs, _ := s.stream(next.ID, seq)
	var first fsm.Delegation
	for i := range recs {
		e, _ := decode(&recs[i])
		prev := first.PersistedAt
		if first = fsm.Evolve(first, e); prev.IsZero() && !first.PersistedAt.IsZero() {
			break
		}
	}
	size, hash := artifact.RenderSum(&first)
	s.arts.again(d, next, seq, size, hash)
}

// steps is what an event's transitions are read against: the record's
// version, status and steps done before it.
type steps struct {
	version             uint64
	state               fsm.State
	persisted, notified bool
}

func (d *delegation) troubled() *trouble {
	if d.trouble == nil {
		d.trouble = &trouble{}
	}
	return d.trouble
}

// cycles counts d's event in its parent's cycle with fsm.Cycle, at the
// same steps as the store's projection: a registration joins the current
// cycle (or starts one, dropping the all-complete of the cycle it ends),
// the terminal event leaves it, and the acknowledged terminal
// notification counts and may make the cycle's all-complete due. A
// delegation whose registration is not in the log joins nothing.
func (s *state) cycles(d *delegation, prev steps, next *fsm.Delegation, seq uint64, e *fsm.Event) {
	if projection.Unregistered(next) {
		return
	}
	switch {
	case prev.version == 0 && e.Kind == fsm.KindRegistered:
		p := s.parent(next.ParentSessionID)
		if ended, started := p.cycle.Join(); started && p.waiting && p.due.Cycle == ended {
			p.waiting = false // never sent, as with the plugin
		}
		d.member = p.cycle.Cycle
	case prev.version == 0 && e.Kind == fsm.KindImported:
	case prev.state.Active() && next.State.Terminal():
		if next.ParentSessionID != "" {
			s.parent(next.ParentSessionID).cycle.Leave()
		}
	case !prev.persisted && !next.PersistedAt.IsZero():
	case !prev.notified && !next.NotifiedAt.IsZero():
		p := s.parent(next.ParentSessionID)
		if counted, due := p.cycle.Notify(d.member); counted && due {
			p.waiting = true
			p.due = dueAllComplete{group: d.first, Notification: projection.Notification{
				Kind:   projection.KindAllComplete, // its ID is made at the end (allComplete)
				Parent: next.ParentSessionID,
				Cycle:  p.cycle.Cycle,
				DueAt:  next.NotifiedAt.Add(projection.AllCompleteQuiet),
				Seq:    seq,
			}}
		}
	}
}

func (s *state) parent(id string) *parent {
	p := s.parents[id]
	if p == nil {
		p = &parent{}
		s.parents[strings.Clone(id)] = p
	}
	return p
}

// parentEvent applies an event of a parent session's stream: the bridge's
// acknowledgement (or failed delivery) of an all-complete notification.
func (s *state) parentEvent(id string, e *fsm.Event) {
	p := s.parents[id]
	if p == nil || !p.waiting || p.due.Cycle != e.Cycle {
		return
	}
	switch e.Kind {
	case fsm.KindAllCompleteNotified:
		p.waiting = false
	case fsm.KindNotificationFailed:
		p.due.Failures++
		p.due.LastError = strings.Clone(e.Error)
	}
}

// compactBehind is how many persisted delegations may be kept with
// strings that share their payloads before the oldest is compacted.
const compactBehind = 1024

// compactLater queues the compaction of persisted delegation id: most are
// settled (and dropped) a few events later, and are then not worth it.
func (s *state) compactLater(id string) {
	s.uncompacted = append(s.uncompacted, id)
	if len(s.uncompacted) < 2*compactBehind {
		return
	}
	for _, id := range s.uncompacted[:compactBehind] {
		if d := s.ds[id]; d != nil && d.persisted != 0 {
			compact(&d.rec)
		}
	}
	s.uncompacted = append(s.uncompacted[:0], s.uncompacted[compactBehind:]...)
}

// compact copies a persisted record's strings out of the payloads they
// share (decode makes one string of the strings of each payload; its texts
// were dropped when it was persisted), so that a delegation kept to the
// end holds a few hundred bytes, whatever its payloads weigh.
func compact(r *fsm.Delegation) {
	for _, f := range [...]*string{
		&r.ID, &r.ProjectID, &r.RootSessionID, &r.ParentSessionID, &r.ParentMessageID,
		&r.ParentAgent, &r.SessionID, &r.Agent, &r.Model, &r.Title, &r.Description, &r.ArtifactPath,
	} {
		*f = strings.Clone(*f)
	}
}

// kept returns the ids of the delegations kept, in the order of their
// first event.
func (s *state) kept() []string {
	ids := make([]string, 0, len(s.ds))
	for id := range s.ds {
		ids = append(ids, id)
	}
	slices.SortFunc(ids, func(a, b string) int {
		x, y := s.ds[a].first, s.ds[b].first
		switch {
		case x < y:
			return -1
		case x > y:
			return 1
		}
		return 0
	})
	return ids
}

// states counts every delegation by its replayed status.
func (s *state) states() map[fsm.State]int {
	out := map[fsm.State]int{}
	for st, n := range s.dropped {
		if n > 0 {
			out[st] = n
		}
	}
	for _, d := range s.ds {
		out[d.rec.State]++
	}
	return out
}

// lookup returns delegation id as replayed through seq through: the one
// kept, or one dropped, folded again from its stream read in tx (nil when
// the log has no intact event of it). A delegation folded again is not
// kept: lookup serves the words of a finding.
func (s *state) lookup(tx *eventlog.Tx, id string, through uint64) *delegation {
	if d := s.ds[id]; d != nil {
		return d
	}
	recs, err := tx.Stream(id)
	var ce *eventlog.CorruptError
	if err != nil && !errors.As(err, &ce) {
		return nil
	}
	var d *delegation
	for i := range recs {
		if recs[i].Seq > through {
			break
		}
		if d == nil {
			d = &delegation{first: recs[i].Seq}
		}
		e, _ := decode(&recs[i])
		s.step(d, recs[i].Seq, &e, false)
	}
	return d
}
