package fsm

import (
	"encoding/binary"
	"fmt"
	"time"
	"unicode/utf8"
)

// Event is one fact about a delegation: a decided command (registered …
// timed_out), a bookkeeping step of the store (persisted, notified, read, …)
// or a refused command (rejected). One flat struct serves every kind; which
// fields are meaningful depends on Kind:
//
//	registered            ProjectID, RootSessionID, ParentSessionID, ParentMessageID,
//	                      ParentAgent, SessionID, Agent, Model, Prompt, Timeout
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
	lastTag            = tagStatus
)

// stringField returns the string field stored under tag, or nil.
func (e *Event) stringField(tag uint64) *string {
	switch tag {
	case tagProjectID:
		return &e.ProjectID
	case tagRootSessionID:
		return &e.RootSessionID
	case tagParentSessionID:
		return &e.ParentSessionID
	case tagParentMessageID:
		return &e.ParentMessageID
	case tagParentAgent:
		return &e.ParentAgent
	case tagSessionID:
		return &e.SessionID
	case tagAgent:
		return &e.Agent
	case tagModel:
		return &e.Model
	case tagPrompt:
		return &e.Prompt
	case tagMessage:
		return &e.Message
	case tagResult:
		return &e.Result
	case tagTitle:
		return &e.Title
	case tagDescription:
		return &e.Description
	case tagError:
		return &e.Error
	case tagReason:
		return &e.Reason
	case tagArtifactPath:
		return &e.ArtifactPath
	case tagNotificationID:
		return &e.NotificationID
	}
	return nil
}

// stateField returns the State field stored under tag, or nil.
func (e *Event) stateField(tag uint64) *State {
	switch tag {
	case tagRefusedState:
		return &e.RefusedState
	case tagStatus:
		return &e.Status
	}
	return nil
}

// uintField returns the unsigned value stored under tag; ok is false for
// tags that do not hold one. Signed values are zig-zag encoded like
// encoding/binary's varint.
func (e *Event) uintField(tag uint64) (v uint64, ok bool) {
	switch tag {
	case tagTimeout:
		return zigzag(int64(e.Timeout)), true
	case tagArtifactSize:
		return zigzag(e.ArtifactSize), true
	case tagArtifactHash:
		return e.ArtifactHash, true
	case tagCycle:
		return e.Cycle, true
	case tagRefused:
		return uint64(e.Refused), true
	}
	return 0, false
}

func zigzag(v int64) uint64   { return uint64(v<<1) ^ uint64(v>>63) }
func unzigzag(u uint64) int64 { return int64(u>>1) ^ -int64(u&1) }

func uvarintLen(v uint64) int {
	n := 1
	for v >= 0x80 {
		v >>= 7
		n++
	}
	return n
}

// PayloadSize returns len(e.MarshalPayload()) without encoding.
func (e *Event) PayloadSize() int {
	n := 1
	for tag := uint64(1); tag <= lastTag; tag++ {
		if l := e.valueLen(tag); l > 0 {
			n += fieldLen(tag, l)
		}
	}
	return n
}

// valueLen is the encoded length of the value under tag; 0 when the field
// is zero and is not written.
func (e *Event) valueLen(tag uint64) int {
	if s := e.stringField(tag); s != nil {
		return len(*s)
	}
	if s := e.stateField(tag); s != nil {
		return len(*s)
	}
	if v, ok := e.uintField(tag); ok && v != 0 {
		return uvarintLen(v)
	}
	return 0
}

// MarshalPayload encodes every field except Kind, ID and At. The encoding is
// deterministic: the same event always gives the same bytes.
//
// Format: one version byte (PayloadVersion), then for each non-zero field in
// ascending tag order: tag (uvarint), length (uvarint), value. Strings are
// their bytes; integers are a uvarint (signed ones zig-zag encoded) filling
// the value exactly.
func (e Event) MarshalPayload() []byte {
	return e.AppendPayload(make([]byte, 0, e.PayloadSize()))
}

// AppendPayload appends the payload of e (see MarshalPayload) to b.
func (e *Event) AppendPayload(b []byte) []byte {
	b = append(b, PayloadVersion)
	for tag := uint64(1); tag <= lastTag; tag++ {
		if p := e.stringField(tag); p != nil {
			b = appendStringField(b, tag, *p)
		} else if p := e.stateField(tag); p != nil {
			b = appendStringField(b, tag, string(*p))
		} else if v, ok := e.uintField(tag); ok && v != 0 {
			b = appendUintField(b, tag, v)
		}
	}
	return b
}

// The TLV layout below is shared by the event payload and the delegation
// record (record.go): a version byte, then fields of tag (uvarint), length
// (uvarint) and value, in strictly ascending tag order.

// fieldLen is the encoded length of a field whose value is l bytes long.
func fieldLen(tag uint64, l int) int {
	return uvarintLen(tag) + uvarintLen(uint64(l)) + l
}

// appendStringField appends a string field; nothing when s is empty.
func appendStringField(b []byte, tag uint64, s string) []byte {
	if s == "" {
		return b
	}
	b = binary.AppendUvarint(b, tag)
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// appendUintField appends an integer field: a value that is exactly one
// uvarint. The caller leaves out zero values it does not want written.
func appendUintField(b []byte, tag, v uint64) []byte {
	b = binary.AppendUvarint(b, tag)
	b = binary.AppendUvarint(b, uint64(uvarintLen(v)))
	return binary.AppendUvarint(b, v)
}

// checkVersion checks the version byte that starts b.
func checkVersion(b []byte, version byte) error {
	if len(b) == 0 {
		return corrupt("empty (want at least the version byte)")
	}
	if b[0] != version {
		return corrupt("unsupported format version %d (this build reads %d; upgrade it)", b[0], version)
	}
	return nil
}

// nextField reads the tag and length of the field at b[p:], which follows
// a field tagged prev (0 before the first), and returns the tag and the
// bounds of the value: b[start:end]. The next field starts at end.
func nextField(b []byte, p int, prev uint64) (tag uint64, start, end int, err error) {
	at := p
	tag, n := binary.Uvarint(b[p:])
	if n <= 0 {
		return 0, 0, 0, corrupt("bad tag varint at byte %d", at)
	}
	p += n
	if tag <= prev {
		return 0, 0, 0, corrupt("tag %d at byte %d after tag %d (want strictly ascending tags)", tag, at, prev)
	}
	l, n := binary.Uvarint(b[p:])
	if n <= 0 {
		return 0, 0, 0, corrupt("bad length varint of tag %d at byte %d", tag, p)
	}
	p += n
	if l > uint64(len(b)-p) {
		return 0, 0, 0, corrupt("tag %d at byte %d: length %d exceeds the %d bytes left", tag, at, l, len(b)-p)
	}
	return tag, p, p + int(l), nil
}

// stringValue returns the value b[start:end] of the field tagged tag at
// byte at as a string. The strings of one input share one copy of it,
// *shared, made for the first non-empty one.
func stringValue(b []byte, start, end int, shared *string, tag uint64, at int) (string, error) {
	if !utf8.Valid(b[start:end]) {
		return "", corrupt("tag %d at byte %d: string is not valid UTF-8", tag, at)
	}
	if start == end {
		return "", nil
	}
	if *shared == "" {
		*shared = string(b)
	}
	return (*shared)[start:end], nil
}

// stateValue is stringValue for a State: a known state name does not
// touch the shared copy.
func stateValue(b []byte, start, end int, shared *string, tag uint64, at int) (State, error) {
	if s, ok := internStateBytes(b[start:end]); ok {
		return s, nil
	}
	s, err := stringValue(b, start, end, shared, tag, at)
	return State(s), err
}

// uintValue decodes the value v of an integer field: one uvarint filling
// it exactly.
func uintValue(v []byte, tag uint64, at int) (uint64, error) {
	u, n := binary.Uvarint(v)
	if n <= 0 || n != len(v) {
		return 0, corrupt("tag %d at byte %d: value is not one uvarint", tag, at)
	}
	return u, nil
}

func corrupt(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrCorruptPayload}, args...)...)
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
	e := Event{Kind: kind, ID: id, At: at}
	if err := checkVersion(payload, PayloadVersion); err != nil {
		return e, err
	}
	var str string // string(payload), made on the first string field
	var tag uint64
	for p := 1; p < len(payload); {
		at := p
		var start int
		var err error
		if tag, start, p, err = nextField(payload, p, tag); err != nil {
			return e, err
		}
		if sp := e.stringField(tag); sp != nil {
			if *sp, err = stringValue(payload, start, p, &str, tag, at); err != nil {
				return e, err
			}
			continue
		}
		if st := e.stateField(tag); st != nil {
			if *st, err = stateValue(payload, start, p, &str, tag, at); err != nil {
				return e, err
			}
			continue
		}
		if _, ok := e.uintField(tag); !ok {
			continue // a tag from a later version
		}
		u, err := uintValue(payload[start:p], tag, at)
		if err != nil {
			return e, err
		}
		switch tag {
		case tagTimeout:
			e.Timeout = time.Duration(unzigzag(u))
		case tagArtifactSize:
			e.ArtifactSize = unzigzag(u)
		case tagArtifactHash:
			e.ArtifactHash = u
		case tagCycle:
			e.Cycle = u
		case tagRefused:
			if u > 0xffff {
				return e, corrupt("tag %d at byte %d: kind %d does not fit 16 bits", tag, at, u)
			}
			e.Refused = Kind(u)
		}
	}
	return e, nil
}
