package fsm

import "fmt"

// RecordVersion is the first byte of every binary record (AppendRecord)
// this version writes.
const RecordVersion = 1

// Record tags: a stored enum of their own, apart from the payload tags.
// Never renumber or reuse a tag; append new ones. Fields are written in
// ascending tag order, and only when non-zero (see tlv.go).
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
	recOwner           = 32
	lastRecTag         = recOwner
)

// fields is the record's field table (see tlv.go): d's fields by tag.
func (d *Delegation) fields() [lastRecTag + 1]any {
	return [...]any{
		recID:              &d.ID,
		recProjectID:       &d.ProjectID,
		recRootSessionID:   &d.RootSessionID,
		recParentSessionID: &d.ParentSessionID,
		recParentMessageID: &d.ParentMessageID,
		recParentAgent:     &d.ParentAgent,
		recSessionID:       &d.SessionID,
		recAgent:           &d.Agent,
		recModel:           &d.Model,
		recPrompt:          &d.Prompt,
		recTimeout:         &d.Timeout,
		recState:           &d.State,
		recCreatedAt:       &d.CreatedAt,
		recStartedAt:       &d.StartedAt,
		recCompletedAt:     &d.CompletedAt,
		recLastUpdateAt:    &d.LastUpdateAt,
		recLastHeartbeatAt: &d.LastHeartbeatAt,
		recTimeoutAt:       &d.TimeoutAt,
		recProgress:        &d.Progress,
		recResult:          &d.Result,
		recError:           &d.Error,
		recTitle:           &d.Title,
		recDescription:     &d.Description,
		recPersistedAt:     &d.PersistedAt,
		recArtifactPath:    &d.ArtifactPath,
		recArtifactSize:    &d.ArtifactSize,
		recArtifactHash:    &d.ArtifactHash,
		recNotifiedAt:      &d.NotifiedAt,
		recReadAt:          &d.ReadAt,
		recRejected:        &d.Rejected,
		recVersion:         &d.Version,
		recOwner:           &d.Owner,
	}
}

// binarySize returns len(d.AppendRecord(nil)) without encoding.
func (d *Delegation) binarySize() int {
	f := d.fields()
	return tlvSize(f[:])
}

// AppendRecord appends the binary record of d to b: the form the store
// keeps its records view in. The encoding is deterministic: the same
// record always gives the same bytes.
//
// Format: one version byte (RecordVersion), then the fields of the record
// tags, laid out like an event payload (tlv.go). A time outside the years
// 1678 to 2262 does not survive, and times come back in UTC without a
// monotonic reading.
func (d *Delegation) AppendRecord(b []byte) []byte {
	if n := d.binarySize(); cap(b)-len(b) < n {
		b = append(make([]byte, 0, len(b)+n), b...)
	}
	f := d.fields()
	return appendTLV(b, RecordVersion, f[:])
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
	var omit func(uint64) bool
	if summary {
		omit = summaryOmits
	}
	f := d.fields()
	return decodeTLV(b, RecordVersion, f[:], omit)
}
