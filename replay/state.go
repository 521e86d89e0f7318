package replay

import (
	"strings"
	"time"

	"github.com/cespare/xxhash/v2"

	"github.com/delegations/delegations/eventlog"
	"github.com/delegations/delegations/fsm"
	"github.com/delegations/delegations/projection"
	"github.com/delegations/delegations/projection/artifact"
)

// delegation is one delegation's replayed state and the sequence numbers
// of its steps. While it is active, or ended and not yet persisted, its
// record is kept whole (live, its prompt dropped); once persisted it is
// settled into the few fields the diagnoses read, without its texts (the
// artifact's rendering, their one use, is checked then: a terminal record
// no longer changes what it renders), so that replay's memory does not
// grow with the log's payloads: a few hundred bytes per delegation.
type delegation struct {
	live *fsm.Delegation // the whole record until it is settled

	// The settled record (fsm.Delegation's fields of the same names).
	id, project, root, parent string
	state                     fsm.State
	created, completed        int64 // unix nanoseconds; 0: zero time
	timeout, persistedAt      int64
	notifiedAt, readAt        int64
	artifactPath              string // "" when it is artifact.RelPath's
	artifactSize              int64
	artifactHash              uint64
	rejected                  int
	version                   uint64

	first, last                         uint64 // seqs of its first and last events
	terminal, persisted, notified, read uint64 // seqs of the steps; 0: did not happen
	imported                            bool   // adopted from a legacy file
	damaged                             bool   // the log lost some of its records: its replayed state is incomplete
	renderSize                          int64  // the size and hash of its artifact as this build renders it (when persisted, not imported)
	renderHash                          uint64

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

// state is the fold of the log: every delegation's steps.
type state struct {
	ds      map[string]*delegation
	order   []string              // ids in order of their first event
	unknown map[fsm.Kind][]uint64 // kinds this build does not know
	slab    []delegation          // delegations are allocated in chunks
	strs    map[string]string     // one copy of each project, root and parent session id

	applied uint64 // records applied
	through uint64 // the last sequence number applied
	lastAt  time.Time

	bad []Finding // bad payloads

	// allComplete are the all-complete notifications the outbox holds at
	// the end of the replay, from the rebuilt views (none without them).
	allComplete []projection.Notification
}

func newState() *state {
	return &state{
		ds:      make(map[string]*delegation),
		unknown: make(map[fsm.Kind][]uint64),
		strs:    make(map[string]string),
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

// apply folds one record into the state.
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
	if _, ok := fsm.ParentOfStream(r.Stream); ok {
		return // all-complete bookkeeping: its effect is on the outbox, which the rebuilt views hold
	}

	d := s.ds[r.Stream]
	if d == nil {
		d = s.newDelegation(r.Seq)
		d.live = &fsm.Delegation{}
		s.ds[r.Stream] = d
		s.order = append(s.order, r.Stream)
	}
	d.last = r.Seq
	prev := d.record()
	next := fsm.Evolve(prev, e)
	next.Prompt = ""
	detach(&next, &prev)

	if prev.Version == 0 && e.Kind == fsm.KindImported {
		d.imported = true
	}
	if !prev.State.Terminal() && next.State.Terminal() {
		d.terminal = r.Seq
	}
	if prev.PersistedAt.IsZero() && !next.PersistedAt.IsZero() {
		d.persisted = r.Seq
		if d.trouble != nil {
			d.nfailures, d.failures, d.lastError = 0, nil, ""
		}
		if !d.imported {
			render := artifact.Render(&next)
			d.renderSize, d.renderHash = int64(len(render)), xxhash.Sum64(render)
		}
	}
	if prev.NotifiedAt.IsZero() && !next.NotifiedAt.IsZero() {
		d.notified = r.Seq
	}
	switch e.Kind {
	case fsm.KindRead:
		d.read = r.Seq
	case fsm.KindRejected:
		t := d.troubled()
		if len(t.rejections) < maxRejections {
			rj := rejection{seq: r.Seq, at: r.Time, kind: e.Refused, state: e.RefusedState}
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
				t.failures = append(t.failures, r.Seq)
			}
			t.lastError = strings.Clone(cut(e.Error, 120))
		}
	}
	s.set(d, &next)
}

func (d *delegation) troubled() *trouble {
	if d.trouble == nil {
		d.trouble = &trouble{}
	}
	return d.trouble
}

// set stores next as d's record: whole while it is active or not yet
// persisted, settled after.
func (s *state) set(d *delegation, next *fsm.Delegation) {
	d.id, d.state, d.version = next.ID, next.State, next.Version
	if !next.State.Terminal() || next.PersistedAt.IsZero() {
		*d.live = *next
		return
	}
	d.live = nil
	d.project, d.root, d.parent = s.str(next.ProjectID), s.str(next.RootSessionID), s.str(next.ParentSessionID)
	d.created, d.completed, d.timeout = nanos(next.CreatedAt), nanos(next.CompletedAt), nanos(next.TimeoutAt)
	d.persistedAt, d.notifiedAt, d.readAt = nanos(next.PersistedAt), nanos(next.NotifiedAt), nanos(next.ReadAt)
	d.artifactPath = next.ArtifactPath
	if rel, err := artifact.RelPath(next.ProjectID, next.RootSessionID, next.ID); err == nil && rel == next.ArtifactPath {
		d.artifactPath = ""
	}
	d.artifactSize, d.artifactHash, d.rejected = next.ArtifactSize, next.ArtifactHash, next.Rejected
}

// record returns d's record: whole while it is live; once settled, the
// fields the diagnoses read (and the bookkeeping events change).
func (d *delegation) record() fsm.Delegation {
	if d.live != nil {
		return *d.live
	}
	r := fsm.Delegation{
		ID: d.id, Registration: fsm.Registration{ProjectID: d.project, RootSessionID: d.root, ParentSessionID: d.parent}, State: d.state,
		CreatedAt: unnanos(d.created), CompletedAt: unnanos(d.completed), TimeoutAt: unnanos(d.timeout),
		PersistedAt: unnanos(d.persistedAt), NotifiedAt: unnanos(d.notifiedAt), ReadAt: unnanos(d.readAt),
		ArtifactPath: d.artifactPath, ArtifactSize: d.artifactSize, ArtifactHash: d.artifactHash,
		Rejected: d.rejected, Version: d.version,
	}
	if r.ArtifactPath == "" {
		r.ArtifactPath, _ = artifact.RelPath(d.project, d.root, d.id)
	}
	return r
}

// str returns the one copy of v.
func (s *state) str(v string) string {
	if c, ok := s.strs[v]; ok {
		return c
	}
	s.strs[v] = v
	return v
}

func nanos(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func unnanos(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}

// detach copies the strings an event set in next out of its payload: a
// decoded event's strings share the payload's memory (fsm.UnmarshalPayload
// makes one string of it), and a record kept for the whole replay would
// keep every payload that named one of its fields, texts and all. The
// texts are not detached: they are dropped once the record is persisted.
func detach(next, prev *fsm.Delegation) {
	for _, f := range [...]struct{ next, prev *string }{
		{&next.ID, &prev.ID}, {&next.ProjectID, &prev.ProjectID}, {&next.RootSessionID, &prev.RootSessionID},
		{&next.ParentSessionID, &prev.ParentSessionID}, {&next.ParentMessageID, &prev.ParentMessageID},
		{&next.ParentAgent, &prev.ParentAgent}, {&next.SessionID, &prev.SessionID}, {&next.Agent, &prev.Agent},
		{&next.Model, &prev.Model}, {&next.Title, &prev.Title}, {&next.Description, &prev.Description},
		{&next.ArtifactPath, &prev.ArtifactPath},
	} {
		if *f.next == *f.prev {
			*f.next = *f.prev // the copy made when it was set
		} else {
			*f.next = strings.Clone(*f.next)
		}
	}
}
