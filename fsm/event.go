package fsm

import (
	"time"
	"unsafe"

	"github.com/delegations/delegations/eventlog/uncleared"
)

// Event is one fact about a delegation: a decided command (registered …
// timed_out), a bookkeeping step of the store (persisted, notified, read, …)
// or a refused command (rejected). One flat struct serves every kind; which
// fields are meaningful depends on Kind:
//
//	registered            ProjectID, RootSessionID, ParentSessionID, ParentMessageID,
//	                      ParentAgent, SessionID, Agent, Model, Prompt, Timeout, Owner
//	started               SessionID (the child session, optional)
//	progressed            Message
//	completed             Result, Title, Description
//	failed                Error, Title, Description
//	cancelled             Reason, Title, Description
//	timed_out             Error, Title, Description
//	persisted             ArtifactPath, ArtifactSize, ArtifactHash
//	notified              NotificationID
//	notification_failed   NotificationID, Error
//	all_complete_due      ParentSessionID, NotificationID, Cycle
//	all_complete_notified ParentSessionID, NotificationID, Cycle
//	read                  (none)
//	rejected              Refused, RefusedState, and the refused command's own fields
//	imported              the registered fields, Status, Result, Error, Title,
//	                      Description, ArtifactPath, ArtifactSize, ArtifactHash
//	owned                 Owner (the daemon that took the delegation over)
//
// Kind, ID and At live in the log record (kind, stream, time); the payload
// (MarshalPayload) holds everything else.
type Event struct {
	Kind Kind
	ID   string    // delegation id: the log record's stream
	At   time.Time // the log record's time

	Registration // registered, imported; SessionID on started too

	Message string // progressed: the last assistant text

	Result, Title, Description string // completed (Title and Description on every terminal kind)
	Error                      string // failed, timed_out, notification_failed
	Reason                     string // cancelled

	// persisted
	ArtifactPath string
	ArtifactSize int64
	ArtifactHash uint64

	// notified, notification_failed, all_complete_*
	NotificationID string
	Cycle          uint64

	// rejected
	Refused      Kind  // the event kind the refused command would have produced
	RefusedState State // the delegation's state when it was refused

	Status State // imported: the status read from the legacy artifact

	// Owner is the daemon that owns the delegation from this event on
	// (registered, owned): on a log shared by several daemons, the one that
	// enforces its deadline, writes its artifact and serves its
	// notifications. Empty on a log of one daemon, which owns everything.
	Owner string
}

// PayloadVersion is the first byte of every payload this version writes.
const PayloadVersion = 1

// Payload tags: a stored enum. Never renumber or reuse a tag; append new
// ones. Fields are written in ascending tag order, and only when non-zero.
const (
	tagProjectID       = 1
	tagRootSessionID   = 2
	tagParentSessionID = 3
	tagParentMessageID = 4
	tagParentAgent     = 5
	tagSessionID       = 6
	tagAgent           = 7
	tagModel           = 8
	tagPrompt          = 9
	tagTimeout         = 10 // varint nanoseconds
	tagMessage         = 11
	tagResult          = 12
	tagTitle           = 13
	tagDescription     = 14
	tagError           = 15
	tagReason          = 16
	tagArtifactPath    = 17
	tagArtifactSize    = 18 // varint
	tagArtifactHash    = 19 // uvarint
	tagNotificationID  = 20
	tagCycle           = 21 // uvarint
	tagRefused         = 22 // uvarint, fits uint16
	tagRefusedState    = 23 // state name
	tagStatus          = 24 // state name
	tagOwner           = 25
	lastTag            = tagOwner
)

// fields is the payload's field table (see tlv.go): e's fields by tag.
func (e *Event) fields() [lastTag + 1]any {
	return [...]any{
		tagProjectID:       &e.ProjectID,
		tagRootSessionID:   &e.RootSessionID,
		tagParentSessionID: &e.ParentSessionID,
		tagParentMessageID: &e.ParentMessageID,
		tagParentAgent:     &e.ParentAgent,
		tagSessionID:       &e.SessionID,
		tagAgent:           &e.Agent,
		tagModel:           &e.Model,
		tagPrompt:          &e.Prompt,
		tagTimeout:         &e.Timeout,
		tagMessage:         &e.Message,
		tagResult:          &e.Result,
		tagTitle:           &e.Title,
		tagDescription:     &e.Description,
		tagError:           &e.Error,
		tagReason:          &e.Reason,
		tagArtifactPath:    &e.ArtifactPath,
		tagArtifactSize:    &e.ArtifactSize,
		tagArtifactHash:    &e.ArtifactHash,
		tagNotificationID:  &e.NotificationID,
		tagCycle:           &e.Cycle,
		tagRefused:         &e.Refused,
		tagRefusedState:    &e.RefusedState,
		tagStatus:          &e.Status,
		tagOwner:           &e.Owner,
	}
}

// PayloadSize returns len(e.MarshalPayload()) without encoding.
func (e *Event) PayloadSize() int {
	f := e.fields()
	return tlvSize(f[:])
}

// MarshalPayload encodes every field except Kind, ID and At. The encoding is
// deterministic: the same event always gives the same bytes.
//
// Format: one version byte (PayloadVersion), then for each non-zero field in
// ascending tag order: tag (uvarint), length (uvarint), value (see tlv.go).
func (e Event) MarshalPayload() []byte {
	// A payload of megabytes is written over at once: not cleared first.
	return e.AppendPayload(uncleared.Make(e.PayloadSize()))
}

// AppendPayload appends the payload of e (see MarshalPayload) to b.
func (e *Event) AppendPayload(b []byte) []byte {
	f := e.fields()
	return appendTLV(b, PayloadVersion, f[:])
}

// UnmarshalPayload decodes a payload written by MarshalPayload (of this or a
// later version) into an Event with the given kind, id and time.
//
// Unknown tags are skipped, so older builds read newer payloads. It returns
// an error wrapping ErrCorruptPayload, never panics, for: an empty payload,
// an unknown version byte, a truncated or overlong varint or value, tags
// that are not strictly ascending, an integer that does not fill its value
// exactly, and a string that is not valid UTF-8.
//
// All decoded strings share one allocation, a copy of payload: keeping any
// field alive keeps the whole copy alive.
func UnmarshalPayload(kind Kind, id string, at time.Time, payload []byte) (Event, error) {
	var e Event
	err := UnmarshalPayloadTo(&e, kind, id, at, payload, true)
	return e, err
}

// UnmarshalPayloadTo is UnmarshalPayload into *e, which it overwrites
// whole: a replay decodes a million events into its batches, and an
// event returned by value is a copy of a few hundred bytes more each.
// Without prompt, the prompt is checked as every string is but left out
// of e, and the strings kept are copied together, without the rest of
// the payload: a replay, which does not keep prompts, copies a third
// less.
func UnmarshalPayloadTo(e *Event, kind Kind, id string, at time.Time, payload []byte, prompt bool) error {
	*e = Event{Kind: kind, ID: id, At: at}
	f := e.fields()
	var omit func(uint64) bool
	if !prompt {
		f[tagPrompt], omit = discard{}, omitNone
	}
	return decodeTLV(payload, PayloadVersion, f[:], omit)
}

func omitNone(uint64) bool { return false }

// UnmarshalPayloadNoCopy is UnmarshalPayload without the copy: the
// event's strings share payload's memory, so they hold only while payload
// is unchanged, and the caller keeps it unchanged for as long as it keeps
// any of them (a payload read into memory of its own and never reused; or
// one the caller only looks at before it changes). A text of megabytes is
// then not copied once more.
func UnmarshalPayloadNoCopy(kind Kind, id string, at time.Time, payload []byte) (Event, error) {
	e := Event{Kind: kind, ID: id, At: at}
	f := e.fields()
	err := decodeTLVOf(payload, unsafe.String(unsafe.SliceData(payload), len(payload)), PayloadVersion, f[:], nil)
	return e, err
}
