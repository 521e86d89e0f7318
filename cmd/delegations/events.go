package main

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/delegations/delegations/eventlog"
	"github.com/delegations/delegations/fsm"
)

var eventsVerb = verb{
	name:     "events",
	synopsis: "[--from SEQ] [--delegation ID]",
	summary:  "print the event log, refused commands included (JSON lines with --json)",
	example:  "delegations --json events --delegation elegant-blue-tiger",
	run:      runEvents,
}

func runEvents(ctx context.Context, e *env, args []string) error {
	fs := newFlags(e)
	from := fs.Uint64("from", 1, "first sequence number")
	delegation := fs.String("delegation", "", "only this delegation's events")
	if _, err := parse(e, fs, args, 0); err != nil {
		return err
	}
	s, err := e.open()
	if err != nil {
		return err
	}
	print := func(r eventlog.Record) error {
		ev, err := fsm.UnmarshalPayload(fsm.Kind(r.Kind), r.Stream, r.Time, r.Payload)
		if err != nil {
			return fmt.Errorf("record %d: %w", r.Seq, err)
		}
		if e.json {
			return writeJSON(e.stdout, newEventJSON(r, ev))
		}
		_, err = fmt.Fprintf(e.stdout, "%6d  %s  %-20s %-12s %s\n", r.Seq, fsm.FormatTime(r.Time), r.Stream, ev.Kind, summarize(ev))
		return err
	}
	if *delegation != "" {
		id, err := idArg(*delegation)
		if err != nil {
			return err
		}
		recs, err := s.Log().Stream(id)
		if err != nil {
			return err
		}
		if len(recs) == 0 {
			return fmt.Errorf("%w: delegation %q has no events in this data directory", fsm.ErrNotFound, id)
		}
		for _, r := range recs {
			if r.Seq >= *from {
				if err := print(r); err != nil {
					return err
				}
			}
		}
		return nil
	}
	for r, err := range s.Log().Records(*from) {
		if err != nil {
			return err
		}
		if err := print(r); err != nil {
			return err
		}
	}
	return nil
}

// eventJSON is one line of `events --json`: the record's envelope and the
// event's non-empty fields.
type eventJSON struct {
	Seq             uint64 `json:"seq"`
	Time            string `json:"time"`
	Kind            string `json:"kind"`
	ID              string `json:"id"`
	Key             string `json:"idempotencyKey,omitempty"`
	ProjectID       string `json:"projectId,omitempty"`
	RootSessionID   string `json:"rootSessionID,omitempty"`
	ParentSessionID string `json:"parentSessionID,omitempty"`
	ParentMessageID string `json:"parentMessageID,omitempty"`
	ParentAgent     string `json:"parentAgent,omitempty"`
	SessionID       string `json:"sessionID,omitempty"`
	Agent           string `json:"agent,omitempty"`
	Model           string `json:"model,omitempty"`
	Prompt          string `json:"prompt,omitempty"`
	TimeoutMs       int64  `json:"timeoutMs,omitempty"`
	Message         string `json:"message,omitempty"`
	Result          string `json:"result,omitempty"`
	Title           string `json:"title,omitempty"`
	Description     string `json:"description,omitempty"`
	Error           string `json:"error,omitempty"`
	Reason          string `json:"reason,omitempty"`
	ArtifactPath    string `json:"artifactPath,omitempty"`
	ArtifactSize    int64  `json:"artifactSize,omitempty"`
	ArtifactHash    string `json:"artifactHash,omitempty"`
	NotificationID  string `json:"notificationId,omitempty"`
	Cycle           uint64 `json:"cycle,omitempty"`
	Status          string `json:"status,omitempty"`
	Refused         string `json:"refused,omitempty"`
	RefusedState    string `json:"refusedState,omitempty"`
}

func newEventJSON(r eventlog.Record, ev fsm.Event) eventJSON {
	j := eventJSON{
		Seq: r.Seq, Time: fsm.FormatTime(r.Time), Kind: ev.Kind.String(), ID: r.Stream, Key: r.Key,
		ProjectID: ev.ProjectID, RootSessionID: ev.RootSessionID, ParentSessionID: ev.ParentSessionID,
		ParentMessageID: ev.ParentMessageID, ParentAgent: ev.ParentAgent, SessionID: ev.SessionID,
		Agent: ev.Agent, Model: ev.Model, Prompt: ev.Prompt, TimeoutMs: ev.Timeout.Milliseconds(),
		Message: ev.Message, Result: ev.Result, Title: ev.Title, Description: ev.Description,
		Error: ev.Error, Reason: ev.Reason, ArtifactPath: ev.ArtifactPath, ArtifactSize: ev.ArtifactSize,
		NotificationID: ev.NotificationID, Cycle: ev.Cycle, Status: string(ev.Status),
		RefusedState: string(ev.RefusedState),
	}
	if ev.ArtifactHash != 0 {
		j.ArtifactHash = fmt.Sprintf("%016x", ev.ArtifactHash)
	}
	if ev.Refused != 0 {
		j.Refused = ev.Refused.String()
	}
	return j
}

// summarize is the one-line text form of an event's payload.
func summarize(ev fsm.Event) string {
	short := func(s string) string {
		s = strings.Join(strings.Fields(s), " ")
		if r := []rune(s); len(r) > 60 {
			return string(r[:60]) + "..."
		}
		return s
	}
	switch ev.Kind {
	case fsm.KindRegistered:
		return fmt.Sprintf("agent=%s root=%s parent=%s timeout=%s prompt=%s",
			ev.Agent, ev.RootSessionID, ev.ParentSessionID, ev.Timeout, strconv.Quote(short(ev.Prompt)))
	case fsm.KindStarted:
		if ev.SessionID != "" {
			return "session=" + ev.SessionID
		}
	case fsm.KindProgressed:
		return strconv.Quote(short(ev.Message))
	case fsm.KindCompleted:
		return fmt.Sprintf("title=%q result=%q", ev.Title, short(ev.Result))
	case fsm.KindFailed, fsm.KindTimedOut:
		return fmt.Sprintf("error=%q", short(ev.Error))
	case fsm.KindCancelled:
		if ev.Reason != "" {
			return fmt.Sprintf("reason=%q", short(ev.Reason))
		}
	case fsm.KindRejected:
		return fmt.Sprintf("refused %s: delegation was already %s", ev.Refused, ev.RefusedState)
	}
	return ""
}
