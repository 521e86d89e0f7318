package replay

import (
	"strings"
	"time"

	"github.com/cespare/xxhash/v2"

	"github.com/delegations/delegations/eventlog"
	"github.com/delegations/delegations/fsm"
	"github.com/delegations/delegations/projection"
)

// parentStream prefixes the stream of a parent session's cycle events
// (all-complete acknowledgements), as the store writes them. Their effect
// is on the outbox, which the rebuilt views hold.
const parentStream = "parent/"

// delegation is one delegation's replayed state and the sequence numbers
// of its steps: what the lifecycle diagnoses need, without the texts once
// its artifact is written (they are what would make replay's memory grow
// with the log's payloads).
type delegation struct {
	// rec is its record. Its prompt is dropped, and its other texts once
	// it is persisted: the artifact's rendering, the one use of them, is
	// checked then (a terminal record no longer changes what it renders).
	rec fsm.Delegation

	first, last                         uint64 // seqs of its first and last events
	terminal, persisted, notified, read uint64 // seqs of the steps; 0: did not happen
	imported                            bool   // adopted from a legacy file
	renderSize                          int64  // the size and hash of its artifact as this build renders it (when persisted, not imported)
	renderHash                          uint64
	damaged                             bool // the log lost some of its records: its replayed state is incomplete

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
	if strings.HasPrefix(r.Stream, parentStream) {
		return
	}

	d := s.ds[r.Stream]
	if d == nil {
		d = s.newDelegation(r.Seq)
		s.ds[r.Stream] = d
		s.order = append(s.order, r.Stream)
	}
	d.last = r.Seq
	prevVersion, prev := d.rec.Version, d.rec
	d.rec = fsm.Evolve(d.rec, e)
	next := &d.rec
	next.Prompt = ""
	detach(next, &prev)

	if prevVersion == 0 && e.Kind == fsm.KindImported {
		d.imported = true
	}
	if !prev.State.Terminal() && next.State.Terminal() {
		d.terminal = r.Seq
	}
	if prev.PersistedAt.IsZero() && !next.PersistedAt.IsZero() {
		d.persisted = r.Seq
		d.nfailures, d.failures, d.lastError = 0, nil, ""
		if !d.imported {
			render := projection.RenderArtifact(next)
			d.renderSize, d.renderHash = int64(len(render)), xxhash.Sum64(render)
		}
	}
	if !next.PersistedAt.IsZero() {
		next.Progress, next.Result, next.Error = "", "", ""
	}
	if prev.NotifiedAt.IsZero() && !next.NotifiedAt.IsZero() {
		d.notified = r.Seq
	}
	switch e.Kind {
	case fsm.KindRead:
		d.read = r.Seq
	case fsm.KindRejected:
		if len(d.rejections) < maxRejections {
			rj := rejection{seq: r.Seq, at: r.Time, kind: e.Refused, state: e.RefusedState}
			if e.Refused == fsm.KindCompleted {
				rj.result = strings.Clone(cut(firstLine(e.Result), 80))
			}
			d.rejections = append(d.rejections, rj)
		}
	case fsm.KindNotificationFailed:
		// The terminal notification waits from its persisted event to its
		// acknowledgement; a registered delegation's only (an imported or
		// unregistered one is never notified).
		if d.persisted != 0 && d.notified == 0 && !d.imported && !next.CreatedAt.IsZero() {
			d.nfailures++
			if len(d.failures) < maxSeqs {
				d.failures = append(d.failures, r.Seq)
			}
			d.lastError = strings.Clone(cut(e.Error, 120))
		}
	}
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
