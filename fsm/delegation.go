package fsm

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Registration is what a delegation is registered with: the fields of a
// registered event, which the record keeps. Event and Delegation embed it;
// its JSON form is RegistrationJSON's.
type Registration struct {
	ProjectID       string        `json:"projectId,omitempty"`
	RootSessionID   string        `json:"rootSessionID,omitempty"`
	ParentSessionID string        `json:"parentSessionID,omitempty"`
	ParentMessageID string        `json:"parentMessageID,omitempty"`
	ParentAgent     string        `json:"parentAgent,omitempty"`
	SessionID       string        `json:"sessionID,omitempty"` // the child session
	Agent           string        `json:"agent,omitempty"`
	Model           string        `json:"model,omitempty"`
	Prompt          string        `json:"prompt,omitempty"`
	Timeout         time.Duration `json:"-"` // JSON: timeoutMs; 0 in a command: use Config.DefaultTimeout
}

// texts returns r's string fields, in their order.
func (r *Registration) texts() [9]*string {
	return [9]*string{&r.ProjectID, &r.RootSessionID, &r.ParentSessionID, &r.ParentMessageID, &r.ParentAgent,
		&r.SessionID, &r.Agent, &r.Model, &r.Prompt}
}

// RegistrationJSON is a registration's JSON form, with the plugin's names
// and the timeout in milliseconds: a record's (Delegation.MarshalJSON) and
// an event's (the events verb).
type RegistrationJSON struct {
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
}

// JSON returns r's JSON form.
func (r *Registration) JSON() RegistrationJSON {
	return RegistrationJSON{r.ProjectID, r.RootSessionID, r.ParentSessionID, r.ParentMessageID, r.ParentAgent,
		r.SessionID, r.Agent, r.Model, r.Prompt, r.Timeout.Milliseconds()}
}

// Registration returns the registration j is the JSON form of.
func (j *RegistrationJSON) Registration() Registration {
	return Registration{j.ProjectID, j.RootSessionID, j.ParentSessionID, j.ParentMessageID, j.ParentAgent,
		j.SessionID, j.Agent, j.Model, j.Prompt, time.Duration(j.TimeoutMs) * time.Millisecond}
}

// Delegation is the state of one delegation: the fold of its events (see
// Evolve). Its JSON form uses the plugin's camelCase names; see MarshalJSON.
type Delegation struct {
	ID string `json:"id"`
	Registration
	State State `json:"status"`

	CreatedAt       time.Time `json:"createdAt"`
	StartedAt       time.Time `json:"startedAt"`
	CompletedAt     time.Time `json:"completedAt"`
	LastUpdateAt    time.Time `json:"lastUpdateAt"`
	LastHeartbeatAt time.Time `json:"lastHeartbeatAt"`
	TimeoutAt       time.Time `json:"timeoutAt"`

	Progress    string `json:"progress,omitempty"` // the last progress text (partial output)
	Result      string `json:"result,omitempty"`   // the result as given; see ResultText
	Error       string `json:"error,omitempty"`    // failed, timed out, or why it was cancelled
	Title       string `json:"title,omitempty"`
	Description string `json:"description,omitempty"`

	PersistedAt  time.Time `json:"persistedAt"`
	ArtifactPath string    `json:"artifactPath,omitempty"`
	ArtifactSize int64     `json:"artifactSize,omitempty"`
	ArtifactHash uint64    `json:"-"` // JSON: artifactHash, 16 hex digits

	NotifiedAt time.Time `json:"notifiedAt"`
	ReadAt     time.Time `json:"readAt"`

	Rejected int    `json:"rejected,omitempty"` // commands refused after terminal
	Version  uint64 `json:"version"`            // events applied = the stream version in the log

	// Owner is the daemon that owns the delegation (Event.Owner); empty on
	// a log of one daemon.
	Owner string `json:"owner,omitempty"`
}

// Result texts fixed by the plugin (README "Compatibility with the
// background-agents plugin").
const (
	failedText    = "Delegation failed."
	cancelledText = "Delegation was cancelled before completion."
	timeoutSuffix = "\n\n[TIMEOUT REACHED]"
)

// ResultText is the text a reader gets for a terminal delegation, by status:
// complete → Result; error → "Error: <error>" ("Error: Delegation failed."
// when Error is blank); cancelled → a fixed sentence; timeout → the partial
// output (Progress) followed by "\n\n[TIMEOUT REACHED]". Active → "".
func (d *Delegation) ResultText() string {
	switch d.State {
	case Complete:
		return d.Result
	case Error:
		if strings.TrimSpace(d.Error) == "" {
			return "Error: " + failedText
		}
		return "Error: " + d.Error
	case Cancelled:
		return cancelledText
	case Timeout:
		return d.Progress + timeoutSuffix
	}
	return ""
}

// Unread reports whether a terminal delegation was notified and not read
// since it completed.
func (d *Delegation) Unread() bool {
	return d.State.Terminal() && !d.NotifiedAt.IsZero() &&
		(d.ReadAt.IsZero() || d.ReadAt.Before(d.CompletedAt))
}

// Evolve applies one event from the log to d and returns the result. It is
// pure and total: it never panics and does not validate (Decide did), with
// one safety rule: a terminal state is final, so lifecycle events (started,
// progressed, the terminal kinds, registered, imported) arriving after it
// change nothing but Version. Every event, of any kind, known or not,
// increments Version.
func Evolve(d Delegation, e Event) Delegation {
	EvolveInPlace(&d, &e)
	return d
}

// EvolveInPlace is Evolve applied to *d, without the copies of the record
// and the event that passing them by value makes: a replay folds a
// million events.
func EvolveInPlace(d *Delegation, e *Event) {
	d.Version++
	if d.ID == "" {
		d.ID = e.ID
	}
	final := d.State.Terminal()
	switch e.Kind {
	case KindRegistered:
		if d.State != "" {
			break // registered twice: the first wins
		}
		d.Registration = e.Registration
		d.Owner = e.Owner
		d.State = Registered
		d.CreatedAt, d.LastUpdateAt = e.At, e.At
		d.TimeoutAt = e.At.Add(e.Timeout)
	case KindStarted:
		if final {
			break
		}
		d.State = Running
		if d.StartedAt.IsZero() {
			d.StartedAt = e.At
		}
		if e.SessionID != "" {
			d.SessionID = e.SessionID
		}
	case KindProgressed:
		if final {
			break
		}
		d.State = Running
		if d.StartedAt.IsZero() {
			d.StartedAt = e.At
		}
		d.Progress = e.Message
		d.LastUpdateAt, d.LastHeartbeatAt = e.At, e.At
	case KindCompleted, KindFailed, KindCancelled, KindTimedOut:
		if final {
			break
		}
		d.State, _ = target(e.Kind)
		d.CompletedAt = e.At
		d.Title, d.Description = e.Title, e.Description
		switch e.Kind {
		case KindCompleted:
			d.Result = e.Result
		case KindFailed, KindTimedOut:
			d.Error = e.Error
		case KindCancelled:
			d.Error = e.Reason // the plugin keeps the interrupt reason as the error
		}
	case KindPersisted:
		d.PersistedAt = e.At
		d.ArtifactPath, d.ArtifactSize, d.ArtifactHash = e.ArtifactPath, e.ArtifactSize, e.ArtifactHash
	case KindNotified:
		if d.NotifiedAt.IsZero() {
			d.NotifiedAt = e.At
		}
	case KindRead:
		d.ReadAt = e.At
	case KindRejected:
		d.Rejected++
	case KindImported:
		if final {
			break
		}
		evolveImported(d, e)
	case KindOwned:
		d.Owner = e.Owner
	}
}

// evolveImported adopts a legacy artifact: a registration, a terminal
// transition and, when the event names the file, its persistence, in one
// event. The adopted file is the artifact as it is (size and hash from the
// event): a legacy file is not necessarily what RenderArtifact would write.
func evolveImported(d *Delegation, e *Event) {
	have := d.Registration.texts()
	for i, v := range e.Registration.texts() {
		if *v != "" {
			*have[i] = *v
		}
	}
	if e.ArtifactPath != "" {
		d.ArtifactPath = e.ArtifactPath
	}
	d.State = e.Status
	if !d.State.Terminal() {
		d.State = Complete // the plugin reads an unknown or missing status as complete
	}
	d.Title, d.Description, d.Result, d.Error = e.Title, e.Description, e.Result, e.Error
	if d.CreatedAt.IsZero() {
		d.CreatedAt = e.At
	}
	if d.LastUpdateAt.IsZero() {
		d.LastUpdateAt = e.At
	}
	d.CompletedAt = e.At
	if e.ArtifactPath != "" {
		d.PersistedAt = e.At
		d.ArtifactSize, d.ArtifactHash = e.ArtifactSize, e.ArtifactHash
	}
}

// Fold applies events in order to an empty record.
func Fold(events ...Event) Delegation {
	var d Delegation
	for i := range events {
		d = Evolve(d, events[i])
	}
	return d
}

// TimeLayout is the plugin's timestamp: RFC 3339, UTC, milliseconds.
const TimeLayout = "2006-01-02T15:04:05.000Z"

// FormatTime formats t as the plugin does (e.g. 2026-11-21T10:38:45.282Z);
// the zero time gives "".
func FormatTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	var b [len(TimeLayout)]byte
	return string(appendJSONTime(b[:0], t)) // not time.Format: replay renders two times per artifact
}

type delegationJSON struct {
	ID string `json:"id"`
	RegistrationJSON
	Status          State  `json:"status"`
	CreatedAt       string `json:"createdAt,omitempty"`
	StartedAt       string `json:"startedAt,omitempty"`
	CompletedAt     string `json:"completedAt,omitempty"`
	LastUpdateAt    string `json:"lastUpdateAt,omitempty"`
	LastHeartbeatAt string `json:"lastHeartbeatAt,omitempty"`
	TimeoutAt       string `json:"timeoutAt,omitempty"`
	Progress        string `json:"progress,omitempty"`
	Result          string `json:"result,omitempty"`
	Error           string `json:"error,omitempty"`
	Title           string `json:"title,omitempty"`
	Description     string `json:"description,omitempty"`
	PersistedAt     string `json:"persistedAt,omitempty"`
	ArtifactPath    string `json:"artifactPath,omitempty"`
	ArtifactSize    int64  `json:"artifactSize,omitempty"`
	ArtifactHash    string `json:"artifactHash,omitempty"`
	NotifiedAt      string `json:"notifiedAt,omitempty"`
	ReadAt          string `json:"readAt,omitempty"`
	Rejected        int    `json:"rejected,omitempty"`
	Version         uint64 `json:"version"`
	Owner           string `json:"owner,omitempty"`
}

// MarshalJSON encodes d with the plugin's field names. Times are RFC 3339 in
// UTC with milliseconds and left out when zero; the timeout is "timeoutMs"
// (milliseconds); the artifact hash is "artifactHash", 16 hex digits (a
// JSON number would lose bits in JavaScript). Empty optional fields are left
// out; id, status and version are always present.
func (d Delegation) MarshalJSON() ([]byte, error) {
	return d.AppendJSON(nil), nil
}

// UnmarshalJSON decodes what MarshalJSON writes. Times come back in UTC with
// millisecond precision.
func (d *Delegation) UnmarshalJSON(b []byte) error {
	var j delegationJSON
	if !unmarshalJSONFast(b, &j) {
		j = delegationJSON{}
		if err := json.Unmarshal(b, &j); err != nil {
			return err
		}
	}
	out := Delegation{
		ID: j.ID, Registration: j.Registration(),
		State:    j.Status,
		Progress: j.Progress, Result: j.Result, Error: j.Error,
		Title: j.Title, Description: j.Description,
		ArtifactPath: j.ArtifactPath, ArtifactSize: j.ArtifactSize,
		Rejected: j.Rejected, Version: j.Version, Owner: j.Owner,
	}
	times := []struct {
		name string
		src  string
		dst  *time.Time
	}{
		{"createdAt", j.CreatedAt, &out.CreatedAt},
		{"startedAt", j.StartedAt, &out.StartedAt},
		{"completedAt", j.CompletedAt, &out.CompletedAt},
		{"lastUpdateAt", j.LastUpdateAt, &out.LastUpdateAt},
		{"lastHeartbeatAt", j.LastHeartbeatAt, &out.LastHeartbeatAt},
		{"timeoutAt", j.TimeoutAt, &out.TimeoutAt},
		{"persistedAt", j.PersistedAt, &out.PersistedAt},
		{"notifiedAt", j.NotifiedAt, &out.NotifiedAt},
		{"readAt", j.ReadAt, &out.ReadAt},
	}
	for _, t := range times {
		if t.src == "" {
			continue
		}
		v, err := time.Parse(time.RFC3339Nano, t.src)
		if err != nil {
			return fmt.Errorf("delegation json: %s: %w", t.name, err)
		}
		*t.dst = v.UTC()
	}
	if j.ArtifactHash != "" {
		h, err := strconv.ParseUint(j.ArtifactHash, 16, 64)
		if err != nil {
			return fmt.Errorf("delegation json: artifactHash: want 16 hex digits: %w", err)
		}
		out.ArtifactHash = h
	}
	*d = out
	return nil
}
