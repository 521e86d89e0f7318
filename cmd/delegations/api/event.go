package api

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/delegations/delegations/eventlog"
	"github.com/delegations/delegations/fsm"
)

// Event is one record of the log as the events verb shows it: the
// record's envelope and the event's non-empty fields.
type Event struct {
	Seq  uint64 `json:"seq"`
	Time string `json:"time"`
	Kind string `json:"kind"`
	ID   string `json:"id"` // the stream: a delegation id, or parent/<session>
	Key  string `json:"idempotencyKey,omitempty"`
	fsm.RegistrationJSON
	Message        string `json:"message,omitempty"`
	Result         string `json:"result,omitempty"`
	Title          string `json:"title,omitempty"`
	Description    string `json:"description,omitempty"`
	Error          string `json:"error,omitempty"`
	Reason         string `json:"reason,omitempty"`
	ArtifactPath   string `json:"artifactPath,omitempty"`
	ArtifactSize   int64  `json:"artifactSize,omitempty"`
	ArtifactHash   string `json:"artifactHash,omitempty"`
	NotificationID string `json:"notificationId,omitempty"`
	Cycle          uint64 `json:"cycle,omitempty"`
	Status         string `json:"status,omitempty"`
	Refused        string `json:"refused,omitempty"`
	RefusedState   string `json:"refusedState,omitempty"`
	Owner          string `json:"owner,omitempty"` // registered, owned: the daemon that owns it from here
}

// NewEvent decodes a record of the log.
func NewEvent(r eventlog.Record) (Event, error) {
	ev, err := fsm.UnmarshalPayload(fsm.Kind(r.Kind), r.Stream, r.Time, r.Payload)
	if err != nil {
		return Event{}, fmt.Errorf("record %d: %w", r.Seq, err)
	}
	e := Event{
		Seq: r.Seq, Time: fsm.FormatTime(r.Time), Kind: ev.Kind.String(), ID: r.Stream, Key: r.Key,
		RegistrationJSON: ev.Registration.JSON(), Message: ev.Message,
		Result: ev.Result, Title: ev.Title, Description: ev.Description,
		Error: ev.Error, Reason: ev.Reason, ArtifactPath: ev.ArtifactPath, ArtifactSize: ev.ArtifactSize,
		NotificationID: ev.NotificationID, Cycle: ev.Cycle, Status: string(ev.Status),
		RefusedState: string(ev.RefusedState), Owner: ev.Owner,
	}
	if ev.ArtifactHash != 0 {
		e.ArtifactHash = fmt.Sprintf("%016x", ev.ArtifactHash)
	}
	if ev.Refused != 0 {
		e.Refused = ev.Refused.String()
	}
	return e, nil
}

// Line is the event as one line for people: sequence, time, stream, kind
// and a summary of the payload.
func (e Event) Line() string {
	return fmt.Sprintf("%6d  %s  %-20s %-12s %s", e.Seq, e.Time, e.ID, e.Kind, e.summary())
}

// summary is the one-line text form of the event's payload.
func (e Event) summary() string {
	short := func(s string) string {
		s = strings.Join(strings.Fields(s), " ")
		if r := []rune(s); len(r) > 60 {
			return string(r[:60]) + "..."
		}
		return s
	}
	switch e.Kind {
	case fsm.KindRegistered.String():
		return fmt.Sprintf("agent=%s root=%s parent=%s timeout=%s prompt=%s",
			e.Agent, e.RootSessionID, e.ParentSessionID, time.Duration(e.TimeoutMs)*time.Millisecond, strconv.Quote(short(e.Prompt)))
	case fsm.KindStarted.String():
		if e.SessionID != "" {
			return "session=" + e.SessionID
		}
	case fsm.KindProgressed.String():
		return strconv.Quote(short(e.Message))
	case fsm.KindCompleted.String():
		return fmt.Sprintf("title=%q result=%q", e.Title, short(e.Result))
	case fsm.KindFailed.String(), fsm.KindTimedOut.String():
		return fmt.Sprintf("error=%q", short(e.Error))
	case fsm.KindCancelled.String():
		if e.Reason != "" {
			return fmt.Sprintf("reason=%q", short(e.Reason))
		}
	case fsm.KindRejected.String():
		return fmt.Sprintf("refused %s: delegation was already %s", e.Refused, e.RefusedState)
	case fsm.KindOwned.String():
		return "owner=" + e.Owner
	}
	return ""
}
