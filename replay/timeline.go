package replay

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/delegations/delegations/eventlog"
	"github.com/delegations/delegations/fsm"
)

// Timeline is every event of one delegation, refused commands included, in
// log order.
type Timeline struct {
	ID      string    `json:"id"`
	Status  fsm.State `json:"status"` // after the last step
	Events  int       `json:"events"`
	Refused int       `json:"refused"` // rejected events among them
	Steps   []Step    `json:"steps"`
	// Problem is set when a record of the stream could not be read; the
	// steps end before it.
	Problem string `json:"problem,omitempty"`
}

// Step is one event of a Timeline.
type Step struct {
	Seq     uint64        `json:"seq"`
	Time    time.Time     `json:"time"`
	Kind    string        `json:"kind"`      // the event kind's name (fsm.Kind.String)
	Gap     time.Duration `json:"gapMs"`     // since the previous step; 0 for the first
	Elapsed time.Duration `json:"elapsedMs"` // since the first step
	Status  fsm.State     `json:"status"`    // the delegation's status after the step
	Refused bool          `json:"refused,omitempty"`
	Detail  string        `json:"detail,omitempty"` // what the event carried, in short
}

// MarshalJSON encodes s with its time as the plugin writes times and the
// durations in milliseconds.
func (s Step) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		Seq       uint64    `json:"seq"`
		Time      string    `json:"time"`
		Kind      string    `json:"kind"`
		GapMs     int64     `json:"gapMs"`
		ElapsedMs int64     `json:"elapsedMs"`
		Status    fsm.State `json:"status"`
		Refused   bool      `json:"refused,omitempty"`
		Detail    string    `json:"detail,omitempty"`
	}{s.Seq, fsm.FormatTime(s.Time), s.Kind, s.Gap.Milliseconds(), s.Elapsed.Milliseconds(), s.Status, s.Refused, s.Detail})
}

// ReadTimeline returns the timeline of delegation id, read through the
// log's stream index (its cost follows the delegation, not the log). An id
// with no events gives an error wrapping fsm.ErrNotFound. A damaged record
// ends the steps and is described in Problem.
func ReadTimeline(ctx context.Context, log *eventlog.Log, id string) (*Timeline, error) {
	if err := fsm.ValidateID(id); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	recs, err := log.Stream(id)
	t := &Timeline{ID: id, Steps: []Step{}}
	var ce *eventlog.CorruptError
	switch {
	case errors.As(err, &ce):
		t.Problem = fmt.Sprintf("record %d of %s cannot be read (%s); the timeline ends before it. delegations verify lists every damaged record.", ce.Seq, id, ce.Reason)
	case err != nil:
		return nil, fmt.Errorf("timeline %s: %w", id, err)
	}
	if len(recs) == 0 && t.Problem == "" {
		return nil, fmt.Errorf("timeline %s: %w: no events in the log (check the id, and --data if the store lives elsewhere)", id, fsm.ErrNotFound)
	}
	var d fsm.Delegation
	for i, r := range recs {
		kind := fsm.Kind(r.Kind)
		e, err := fsm.UnmarshalPayload(kind, r.Stream, r.Time, r.Payload)
		s := Step{Seq: r.Seq, Time: r.Time, Kind: kind.String(), Refused: kind == fsm.KindRejected}
		if err != nil {
			s.Detail = "payload does not decode: " + err.Error()
			e = fsm.Event{ID: r.Stream, At: r.Time}
		} else {
			s.Detail = detail(&e, &d)
		}
		if i > 0 {
			s.Gap = r.Time.Sub(recs[i-1].Time)
			s.Elapsed = r.Time.Sub(recs[0].Time)
		}
		d = fsm.Evolve(d, e)
		s.Status = d.State
		if s.Refused {
			t.Refused++
		}
		t.Steps = append(t.Steps, s)
	}
	t.Events, t.Status = len(t.Steps), d.State
	return t, nil
}

// detail describes what e carried; d is the record before it.
func detail(e *fsm.Event, d *fsm.Delegation) string {
	var parts []string
	add := func(format string, args ...any) { parts = append(parts, fmt.Sprintf(format, args...)) }
	text := func(label, s string) {
		if s != "" {
			add("%s %s (%d bytes)", label, quote(cut(firstLine(s), 60)), len(s))
		}
	}
	switch e.Kind {
	case fsm.KindRegistered:
		add("agent %s", e.Agent)
		add("root %s", e.RootSessionID)
		add("parent %s", e.ParentSessionID)
		if e.SessionID != "" {
			add("session %s", e.SessionID)
		}
		add("deadline %s (timeout %s)", fmtT(e.At.Add(e.Timeout)), e.Timeout)
		text("prompt", e.Prompt)
	case fsm.KindStarted:
		if e.SessionID != "" {
			add("session %s", e.SessionID)
		}
	case fsm.KindProgressed:
		text("message", e.Message)
	case fsm.KindCompleted, fsm.KindFailed, fsm.KindCancelled, fsm.KindTimedOut:
		if d.State.Terminal() {
			add("changed nothing: already %s", d.State)
		}
		if e.Title != "" {
			add("title %s", quote(cut(e.Title, 60)))
		}
		text("result", e.Result)
		text("error", e.Error)
		text("reason", e.Reason)
	case fsm.KindPersisted:
		add("artifact %s (%d bytes, xxhash %016x)", e.ArtifactPath, e.ArtifactSize, e.ArtifactHash)
	case fsm.KindNotified:
		add("notification %s acknowledged by the bridge", e.NotificationID)
	case fsm.KindNotificationFailed:
		add("delivery of %s failed: %s", e.NotificationID, quote(cut(e.Error, 80)))
	case fsm.KindRead:
		add("artifact returned to a reader")
	case fsm.KindRejected:
		add("refused %s: the delegation was already %s", e.Refused, e.RefusedState)
		text("result", e.Result)
		text("message", e.Message)
		text("error", e.Error)
		text("reason", e.Reason)
	case fsm.KindImported:
		add("adopted the plugin's file %s as %s (%d bytes)", e.ArtifactPath, e.Status, e.ArtifactSize)
		if e.Title != "" {
			add("title %s", quote(cut(e.Title, 60)))
		}
	default:
		if !e.Kind.Known() {
			add("a kind this build does not know")
		}
	}
	return strings.Join(parts, "; ")
}

// WriteText writes the timeline for people: one line per step with its
// sequence number, time, the gap since the previous step, the step, the
// status after it and what it carried.
func (t *Timeline) WriteText(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "Timeline of %s: %s, %s", t.ID, t.Status, plural(t.Events, "event"))
	if t.Refused > 0 {
		fmt.Fprintf(&b, " (%d refused)", t.Refused)
	}
	if n := len(t.Steps); n > 0 {
		first, last := t.Steps[0], t.Steps[n-1]
		fmt.Fprintf(&b, ", %s to %s (%s)", fsm.FormatTime(first.Time), fsm.FormatTime(last.Time), fmtDur(last.Time.Sub(first.Time)))
	}
	b.WriteString(".\n\n")
	seqW := len("seq")
	for _, s := range t.Steps {
		seqW = max(seqW, len(itoa(s.Seq)))
	}
	fmt.Fprintf(&b, "%*s  %-24s  %-9s  %-21s  %-10s  %s\n", seqW, "seq", "time", "gap", "step", "status", "detail")
	for i, s := range t.Steps {
		gap := ""
		if i > 0 {
			gap = "+" + fmtDur(s.Gap)
		}
		kind := s.Kind
		if s.Refused {
			kind += " !"
		}
		line := fmt.Sprintf("%*d  %-24s  %-9s  %-21s  %-10s  %s", seqW, s.Seq, fsm.FormatTime(s.Time), gap, kind, s.Status, s.Detail)
		b.WriteString(strings.TrimRight(line, " ") + "\n")
	}
	if t.Problem != "" {
		b.WriteString("\n" + t.Problem + "\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// String returns the text WriteText writes.
func (t *Timeline) String() string {
	var b strings.Builder
	_ = t.WriteText(&b)
	return b.String()
}
