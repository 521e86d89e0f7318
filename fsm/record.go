package fsm

import (
	"fmt"
	"strings"
	"time"
	"unicode/utf8"
)

// RecordVersion is the first byte of every binary record (AppendRecord)
// this version writes.
const RecordVersion = 1

// Record tags: a stored enum of their own, apart from the payload tags.
// Never renumber or reuse a tag; append new ones. Fields are written in
// ascending tag order, and only when non-zero.
//
//	 1 ID               string      17 LastHeartbeatAt  time
//	 2 ProjectID        string      18 TimeoutAt        time
//	 3 RootSessionID    string      19 Progress         string
//	 4 ParentSessionID  string      20 Result           string
//	 5 ParentMessageID  string      21 Error            string
//	 6 ParentAgent      string      22 Title            string
//	 7 SessionID        string      23 Description      string
//	 8 Agent            string      24 PersistedAt      time
//	 9 Model            string      25 ArtifactPath     string
//	10 Prompt           string      26 ArtifactSize     varint
//	11 Timeout          varint ns   27 ArtifactHash     uvarint
//	12 State            state name  28 NotifiedAt       time
//	13 CreatedAt        time        29 ReadAt           time
//	14 StartedAt        time        30 Rejected         varint
//	15 CompletedAt      time        31 Version          uvarint
//	16 LastUpdateAt     time
//
// A time is a varint of Unix nanoseconds; the zero time is not written. A
// varint is zig-zag encoded, as in the payload.
const (
	recID              = 1
	recProjectID       = 2
	recRootSessionID   = 3
	recParentSessionID = 4
	recParentMessageID = 5
	recParentAgent     = 6
	recSessionID       = 7
	recAgent           = 8
	recModel           = 9
	recPrompt          = 10
	recTimeout         = 11
	recState           = 12
	recCreatedAt       = 13
	recStartedAt       = 14
	recCompletedAt     = 15
	recLastUpdateAt    = 16
	recLastHeartbeatAt = 17
	recTimeoutAt       = 18
	recProgress        = 19
	recResult          = 20
	recError           = 21
	recTitle           = 22
	recDescription     = 23
	recPersistedAt     = 24
	recArtifactPath    = 25
	recArtifactSize    = 26
	recArtifactHash    = 27
	recNotifiedAt      = 28
	recReadAt          = 29
	recRejected        = 30
	recVersion         = 31
	lastRecTag         = recVersion
)

// stringField returns the string field stored under record tag, or nil.
func (d *Delegation) stringField(tag uint64) *string {
	switch tag {
	case recID:
		return &d.ID
	case recProjectID:
		return &d.ProjectID
	case recRootSessionID:
		return &d.RootSessionID
	case recParentSessionID:
		return &d.ParentSessionID
	case recParentMessageID:
		return &d.ParentMessageID
	case recParentAgent:
		return &d.ParentAgent
	case recSessionID:
		return &d.SessionID
	case recAgent:
		return &d.Agent
	case recModel:
		return &d.Model
	case recPrompt:
		return &d.Prompt
	case recProgress:
		return &d.Progress
	case recResult:
		return &d.Result
	case recError:
		return &d.Error
	case recTitle:
		return &d.Title
	case recDescription:
		return &d.Description
	case recArtifactPath:
		return &d.ArtifactPath
	}
	return nil
}

// timeField returns the time field stored under record tag, or nil.
func (d *Delegation) timeField(tag uint64) *time.Time {
	switch tag {
	case recCreatedAt:
		return &d.CreatedAt
	case recStartedAt:
		return &d.StartedAt
	case recCompletedAt:
		return &d.CompletedAt
	case recLastUpdateAt:
		return &d.LastUpdateAt
	case recLastHeartbeatAt:
		return &d.LastHeartbeatAt
	case recTimeoutAt:
		return &d.TimeoutAt
	case recPersistedAt:
		return &d.PersistedAt
	case recNotifiedAt:
		return &d.NotifiedAt
	case recReadAt:
		return &d.ReadAt
	}
	return nil
}

// uintField returns the integer stored under record tag, signed ones
// zig-zag encoded, with a time as its Unix nanoseconds. written is false
// for a zero value (which is not written) and for tags that hold no
// integer.
func (d *Delegation) uintField(tag uint64) (v uint64, written bool) {
	if t := d.timeField(tag); t != nil {
		if t.IsZero() {
			return 0, false
		}
		return zigzag(t.UnixNano()), true
	}
	switch tag {
	case recTimeout:
		v = zigzag(int64(d.Timeout))
	case recArtifactSize:
		v = zigzag(d.ArtifactSize)
	case recArtifactHash:
		v = d.ArtifactHash
	case recRejected:
		v = zigzag(int64(d.Rejected))
	case recVersion:
		v = d.Version
	}
	return v, v != 0
}

// binarySize returns len(d.AppendRecord(nil)) without encoding.
func (d *Delegation) binarySize() int {
	n := 1
	for tag := uint64(1); tag <= lastRecTag; tag++ {
		if p := d.stringField(tag); p != nil {
			if len(*p) > 0 {
				n += fieldLen(tag, len(*p))
			}
		} else if tag == recState {
			if len(d.State) > 0 {
				n += fieldLen(tag, len(d.State))
			}
		} else if v, ok := d.uintField(tag); ok {
			n += fieldLen(tag, uvarintLen(v))
		}
	}
	return n
}

// AppendRecord appends the binary record of d to b: the form the store
// keeps its records view in. The encoding is deterministic: the same
// record always gives the same bytes.
//
// Format: one version byte (RecordVersion), then for each non-zero field
// in ascending tag order (see the record tags): tag (uvarint), length
// (uvarint), value, laid out like an event payload. Strings are their
// bytes; integers are a uvarint (signed ones zig-zag encoded) filling the
// value exactly; times are their Unix nanoseconds, so a time outside the
// years 1678 to 2262 does not survive, and times come back in UTC without
// a monotonic reading.
func (d *Delegation) AppendRecord(b []byte) []byte {
	if n := d.binarySize(); cap(b)-len(b) < n {
		b = append(make([]byte, 0, len(b)+n), b...)
	}
	b = append(b, RecordVersion)
	for tag := uint64(1); tag <= lastRecTag; tag++ {
		if p := d.stringField(tag); p != nil {
			b = appendStringField(b, tag, *p)
		} else if tag == recState {
			b = appendStringField(b, tag, string(d.State))
		} else if v, ok := d.uintField(tag); ok {
			b = appendUintField(b, tag, v)
		}
	}
	return b
}

// UnmarshalDelegation decodes a record written by AppendRecord (of this or
// a later version).
//
// Unknown tags are skipped, so older builds read newer records. It returns
// an error wrapping ErrCorruptPayload, and a zero Delegation, never
// panics, for: an empty input, an unknown version byte, a truncated or
// overlong varint or value, tags that are not strictly ascending, an
// integer that does not fill its value exactly or does not fit its field,
// and a string that is not valid UTF-8.
//
// All decoded strings share one allocation, a copy of b: keeping any field
// alive keeps the whole copy alive, and b may be reused once this returns.
func UnmarshalDelegation(b []byte) (Delegation, error) {
	var d Delegation
	if err := d.unmarshalBinary(b, false); err != nil {
		return Delegation{}, fmt.Errorf("delegation record: %w", err)
	}
	return d, nil
}

// UnmarshalSummary decodes a record written by AppendRecord without its
// texts that grow with the work: Prompt, Progress, Result and Error are
// left empty, and their bytes are neither copied nor read (a large value
// in a memory-mapped file stays untouched). The other fields are decoded
// and checked as UnmarshalDelegation does, each string in a copy of its
// own, so that the summary keeps nothing of b alive. It is what a listing
// needs: its cost follows the number of records, not their texts.
func UnmarshalSummary(b []byte) (Delegation, error) {
	var d Delegation
	if err := d.unmarshalBinary(b, true); err != nil {
		return Delegation{}, fmt.Errorf("delegation record: %w", err)
	}
	return d, nil
}

// Summary returns d without the texts that grow with the work (Prompt,
// Progress, Result and Error): what UnmarshalSummary decodes, and what a
// listing shows.
func (d Delegation) Summary() Delegation {
	for _, t := range d.Texts() {
		*t = ""
	}
	return d
}

// Texts returns the fields Summary leaves out, in a fixed order (stored:
// append only): Prompt, Progress, Result, Error.
func (d *Delegation) Texts() [4]*string {
	return [4]*string{&d.Prompt, &d.Progress, &d.Result, &d.Error}
}

// summaryOmits reports whether a summary leaves out the field under tag
// (the fields Summary clears).
func summaryOmits(tag uint64) bool {
	switch tag {
	case recPrompt, recProgress, recResult, recError:
		return true
	}
	return false
}

func (d *Delegation) unmarshalBinary(b []byte, summary bool) error {
	if err := checkVersion(b, RecordVersion); err != nil {
		return err
	}
	var str string // string(b), made on the first string field
	// A summary's strings, copied together once the record is decoded.
	type keptString struct {
		tag        uint64
		start, end int
	}
	var keptArr [lastRecTag]keptString
	kept, keptLen := keptArr[:0], 0
	var tag uint64
	for p := 1; p < len(b); {
		at := p
		var start int
		var err error
		if tag, start, p, err = nextField(b, p, tag); err != nil {
			return err
		}
		if sp := d.stringField(tag); sp != nil {
			if summary {
				if summaryOmits(tag) {
					continue
				}
				if !utf8.Valid(b[start:p]) {
					return corrupt("tag %d at byte %d: string is not valid UTF-8", tag, at)
				}
				kept = append(kept, keptString{tag, start, p})
				keptLen += p - start
				continue
			}
			if *sp, err = stringValue(b, start, p, &str, tag, at); err != nil {
				return err
			}
			continue
		}
		if tag == recState {
			v, vs, ve, shared := b, start, p, &str
			if summary { // an unknown state name copies itself alone
				var own string
				v, vs, ve, shared = b[start:p], 0, p-start, &own
			}
			if d.State, err = stateValue(v, vs, ve, shared, tag, at); err != nil {
				return err
			}
			continue
		}
		if tag > lastRecTag {
			continue // a tag from a later version
		}
		u, err := uintValue(b[start:p], tag, at)
		if err != nil {
			return err
		}
		if t := d.timeField(tag); t != nil {
			*t = time.Unix(0, unzigzag(u)).UTC()
			continue
		}
		switch tag {
		case recTimeout:
			d.Timeout = time.Duration(unzigzag(u))
		case recArtifactSize:
			d.ArtifactSize = unzigzag(u)
		case recArtifactHash:
			d.ArtifactHash = u
		case recRejected:
			r := unzigzag(u)
			if int64(int(r)) != r {
				return corrupt("tag %d at byte %d: %d does not fit an int", tag, at, r)
			}
			d.Rejected = int(r)
		case recVersion:
			d.Version = u
		}
	}
	if len(kept) > 0 {
		var all strings.Builder
		all.Grow(keptLen)
		for _, k := range kept {
			all.Write(b[k.start:k.end])
		}
		str, p := all.String(), 0
		for _, k := range kept {
			*d.stringField(k.tag), p = str[p:p+k.end-k.start], p+k.end-k.start
		}
	}
	return nil
}
