// Package api is the delegations API: one verb per endpoint, implemented
// once by Service over a projection.Store and reached three ways:
//
//   - over HTTP+JSON on a unix socket, served by `delegations serve`
//     (Serve), which also runs the actors that enforce deadlines and retry
//     artifact writes;
//   - from Go through Client, which the CLI uses when a daemon runs;
//   - in process through Local, which the CLI uses when none does.
//
// Every verb is `POST /v1/<verb>` with one JSON object in and one out;
// errors are {"error":{"code","message"}} with a stable code (see Code).
// The streams are `GET /v1/events` (JSON lines) and `GET /v1/stream`
// (server-sent events of new events and due notifications).
//
// # Caveats
//
//   - Local passes requests and responses through the same JSON encoding
//     as the socket, so the CLI prints the same bytes with or without a
//     daemon; it costs one extra encoding per call.
//   - Request bodies must be valid UTF-8: the JSON decoder would silently
//     replace bad bytes, and a stored text would differ from what was sent.
//     For the same reason Go callers must pass UTF-8 strings: json.Marshal
//     replaces bad bytes before the request leaves (the CLI checks its
//     arguments and stdin first).
//   - Unknown fields are refused, not ignored: a misspelt field would
//     otherwise be a silently lost value. For the same reason field names
//     are case-sensitive (encoding/json is not), a field may come once, and
//     an escaped lone surrogate ("\ud800", which would be stored as U+FFFD)
//     is refused.
//   - Client calls have deadlines (ClientOptions); a daemon that does not
//     answer is an error naming its pid (NotAnsweringError). The daemon
//     bounds headers, bodies, idle connections and the number of
//     connections (Config), and reopens its log by itself after a failed
//     write (GET /v1/status shows it).
package api

import (
	"context"
	"errors"
	"net/http"
	"slices"

	"github.com/delegations/delegations/eventlog"
	"github.com/delegations/delegations/fsm"
	"github.com/delegations/delegations/projection"
)

// RegisterRequest is the body of POST /v1/register. Give ProjectID, or
// ProjectDir (absolute) to derive it as the plugin does.
type RegisterRequest struct {
	RootSessionID   string `json:"rootSessionID"`
	ParentSessionID string `json:"parentSessionID"`
	Agent           string `json:"agent"`
	ProjectID       string `json:"projectId,omitempty"`
	ProjectDir      string `json:"projectDir,omitempty"`
	ParentMessageID string `json:"parentMessageID,omitempty"`
	ParentAgent     string `json:"parentAgent,omitempty"`
	SessionID       string `json:"sessionID,omitempty"`
	Model           string `json:"model,omitempty"`
	Prompt          string `json:"prompt,omitempty"`
	TimeoutMs       int64  `json:"timeoutMs,omitempty"` // 0: the daemon's default
	IdempotencyKey  string `json:"idempotencyKey,omitempty"`
}

// IDRequest names one delegation (POST /v1/show).
type IDRequest struct {
	ID string `json:"id"`
}

// StartRequest is the body of POST /v1/start.
type StartRequest struct {
	ID        string `json:"id"`
	SessionID string `json:"sessionID,omitempty"`
}

// ProgressRequest is the body of POST /v1/progress.
type ProgressRequest struct {
	ID      string `json:"id"`
	Message string `json:"message,omitempty"`
}

// CompleteRequest is the body of POST /v1/complete.
type CompleteRequest struct {
	ID          string `json:"id"`
	Result      string `json:"result,omitempty"`
	Title       string `json:"title,omitempty"`
	Description string `json:"description,omitempty"`
}

// FailRequest is the body of POST /v1/fail.
type FailRequest struct {
	ID    string `json:"id"`
	Error string `json:"error"`
}

// CancelRequest is the body of POST /v1/cancel.
type CancelRequest struct {
	ID     string `json:"id"`
	Reason string `json:"reason,omitempty"`
}

// ReadRequest is the body of POST /v1/read. WaitMs bounds how long an
// active delegation is waited for; the wait also ends when the client
// hangs up.
type ReadRequest struct {
	RootSessionID string `json:"rootSessionID"`
	ID            string `json:"id"`
	WaitMs        int64  `json:"waitMs,omitempty"`
}

// ListRequest is the body of POST /v1/list. Order is "id" (the plugin's,
// the default) or "time". Limit (0: all) and After page the listing:
// After is the Next of the previous answer, with the same filter and
// order. TextOnly asks for the text alone (the answer's delegations are
// then empty): what a caller that only shows the text needs, without
// the summaries' JSON, which a large root makes the bulk of the answer.
type ListRequest struct {
	RootSessionID string `json:"rootSessionID"`
	Status        string `json:"status,omitempty"`
	Unread        bool   `json:"unread,omitempty"`
	Order         string `json:"order,omitempty"`
	Limit         int    `json:"limit,omitempty"`
	After         string `json:"after,omitempty"`
	TextOnly      bool   `json:"textOnly,omitempty"`
}

// ActiveRequest is the body of POST /v1/active, the reconciliation
// endpoint; empty fields match every delegation. A project is given by id,
// or by an absolute directory as in RegisterRequest.
type ActiveRequest struct {
	ProjectID       string `json:"projectId,omitempty"`
	ProjectDir      string `json:"projectDir,omitempty"`
	RootSessionID   string `json:"rootSessionID,omitempty"`
	ParentSessionID string `json:"parentSessionID,omitempty"`
}

// Delegations is the answer of active.
type Delegations struct {
	Delegations []fsm.Delegation `json:"delegations"`
}

// List is the answer of list: summaries of the records (without prompt,
// progress, result and error, which show and read return), and the text
// delegation_list shows a model, so that a bridge in any language prints
// the plugin's exact text without a copy of its rules. Next, set when a
// Limit left delegations out, is the After of the next page; the text is
// that of this page.
type List struct {
	Delegations []fsm.Delegation `json:"delegations"`
	Text        string           `json:"text"`
	Next        string           `json:"next,omitempty"`
}

// jsonAppender is an answer that writes its JSON itself: the bytes
// encoding/json would write (with HTML escaping off, as marshal sets
// it), without reflection, for answers of thousands of records.
type jsonAppender interface {
	appendJSON(b []byte) []byte
}

func (l List) appendJSON(b []byte) []byte {
	b = slices.Grow(b, len(l.Text)+len(l.Text)/8+64)
	b = appendDelegations(append(b, `{"delegations":`...), l.Delegations)
	b = fsm.AppendJSONString(append(b, `,"text":`...), l.Text, false)
	if l.Next != "" {
		b = fsm.AppendJSONString(append(b, `,"next":`...), l.Next, false)
	}
	return append(b, '}')
}

func (d Delegations) appendJSON(b []byte) []byte {
	return append(appendDelegations(append(b, `{"delegations":`...), d.Delegations), '}')
}

func appendDelegations(b []byte, ds []fsm.Delegation) []byte {
	if ds == nil {
		return append(b, "null"...)
	}
	// One allocation for the lot: the fixed part of a record's JSON is
	// under 512 bytes (names, times, numbers); its strings add their
	// lengths, and a few escapes.
	n := 0
	for i := range ds {
		d := &ds[i]
		n += 512 + len(d.ID) + len(d.ProjectID) + len(d.RootSessionID) + len(d.ParentSessionID) +
			len(d.ParentMessageID) + len(d.ParentAgent) + len(d.SessionID) + len(d.Agent) + len(d.Model) +
			len(d.Prompt) + len(d.Progress) + len(d.Result) + len(d.Error) + len(d.Title) +
			len(d.Description) + len(d.ArtifactPath)
	}
	b = slices.Grow(b, n)
	b = append(b, '[')
	for i := range ds {
		if i > 0 {
			b = append(b, ',')
		}
		b = ds[i].AppendJSON(b)
	}
	return append(b, ']')
}

// NotificationsRequest is the body of POST /v1/notifications. With WaitMs,
// the call waits that long for a notification when none is due.
type NotificationsRequest struct {
	ParentSessionID string `json:"parentSessionID,omitempty"`
	WaitMs          int64  `json:"waitMs,omitempty"`
}

// Notifications is the answer of notifications.
type Notifications struct {
	Notifications []projection.Notification `json:"notifications"`
}

// AckRequest is the body of POST /v1/ack. A non-empty Failed records a
// failed delivery instead: the notification stays due.
type AckRequest struct {
	ID     string `json:"id"`
	Failed string `json:"failed,omitempty"`
}

// CompactRequest is the body of POST /v1/compact.
type CompactRequest struct {
	RootSessionID string `json:"rootSessionID"`
	MaxUnread     int    `json:"maxUnread,omitempty"` // 0: 10
	MaxBytes      int    `json:"maxBytes,omitempty"`  // 0: no budget
	Brief         bool   `json:"brief,omitempty"`
}

// CompactResponse is the answer of compact: the block ("" when there is
// nothing to carry) and what it carries.
type CompactResponse struct {
	Block   string `json:"block"`
	Running int    `json:"running"`
	Unread  int    `json:"unread"`
	Omitted int    `json:"omitted"`
}

// EventsRequest selects the records of GET /v1/events (query parameters
// from, delegation, follow).
type EventsRequest struct {
	From       uint64 // first sequence number; 0 means 1
	Delegation string // only this delegation's events
	Follow     bool   // keep the stream open for new events
}

// Status is the answer of GET /v1/status. State is "ok", or "broken"
// after a failed write until the daemon has reopened the log; while
// broken, the other fields say since when, why, and how the reopening goes.
type Status struct {
	DataDir          string `json:"dataDir"`
	Socket           string `json:"socket"`
	PID              int    `json:"pid"`
	LastSeq          uint64 `json:"lastSeq"`
	State            string `json:"state"`
	Error            string `json:"error,omitempty"`
	BrokenSince      string `json:"brokenSince,omitempty"`
	Attempts         int    `json:"attempts,omitempty"`
	LastAttemptError string `json:"lastAttemptError,omitempty"`
	NextAttempt      string `json:"nextAttempt,omitempty"`
	// UI is the status page's URL with its token (serve --http), for
	// `delegations ui`; the socket is the user's alone, so is the token.
	UI string `json:"ui,omitempty"`
}

// Error is an error as the API reports it. It unwraps to the sentinel of
// its code, so errors.Is works the same on both sides of the socket.
type Error struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

func (e *Error) Error() string { return e.Message }

func (e *Error) Unwrap() error {
	for _, c := range codes {
		if c.code == e.Code {
			return c.sentinel
		}
	}
	return nil
}

// errorBody is the JSON of every error response.
type errorBody struct {
	Error *Error `json:"error"`
}

// Error codes beyond those of the store's sentinels.
var (
	errTooLarge    = errors.New("request body too large")
	errMethod      = errors.New("method not allowed")
	errNoEndpoint  = errors.New("no such endpoint")
	errUnavailable = errors.New("daemon stopping")
)

// codes maps sentinels to stable codes and HTTP statuses, most specific
// first. The codes are part of the API: never rename one.
var codes = []struct {
	sentinel error
	code     string
	status   int
}{
	{fsm.ErrInvalid, "invalid", http.StatusBadRequest},
	{eventlog.ErrInvalid, "invalid", http.StatusBadRequest},
	{fsm.ErrNotFound, "not_found", http.StatusNotFound},
	{fsm.ErrExists, "exists", http.StatusConflict},
	{fsm.ErrTerminal, "terminal", http.StatusConflict},
	{errTooLarge, "too_large", http.StatusRequestEntityTooLarge},
	{errMethod, "method_not_allowed", http.StatusMethodNotAllowed},
	{errNoEndpoint, "no_endpoint", http.StatusNotFound},
	{errUnavailable, "unavailable", http.StatusServiceUnavailable},
	{ErrNotAnswering, "unavailable", http.StatusServiceUnavailable},
	{eventlog.ErrConflict, "conflict", http.StatusConflict},
	{eventlog.ErrClosed, "unavailable", http.StatusServiceUnavailable},
	{eventlog.ErrUnavailable, "unavailable", http.StatusServiceUnavailable}, // the shared log's etcd
	{eventlog.ErrLocked, "locked", http.StatusServiceUnavailable},
	{eventlog.ErrBroken, "broken", http.StatusServiceUnavailable},
	{eventlog.ErrCorrupt, "corrupt", http.StatusInternalServerError},
	{fsm.ErrCorruptPayload, "corrupt", http.StatusInternalServerError},
	// The caller's own context, after ErrNotAnswering (the client's
	// deadline for a daemon that does not answer is not the caller's).
	{context.DeadlineExceeded, "deadline_exceeded", http.StatusGatewayTimeout},
	{context.Canceled, "canceled", statusClientClosed},
}

// statusClientClosed is the status of a request its caller gave up on
// (499, as nginx and grpc-gateway use it); the daemon answers none: a
// client that hung up reads nothing (handler.fail).
const statusClientClosed = 499

// Code is the stable machine-readable name of an error, the same whether
// it happened in process or behind the socket: invalid, not_found, exists,
// terminal, conflict, too_large, method_not_allowed, no_endpoint,
// unavailable, locked, broken, corrupt, deadline_exceeded, canceled or
// internal.
func Code(err error) string {
	var ae *Error
	if errors.As(err, &ae) {
		return ae.Code
	}
	for _, c := range codes {
		if errors.Is(err, c.sentinel) {
			return c.code
		}
	}
	return "internal"
}

func statusOf(code string) int {
	for _, c := range codes {
		if c.code == code {
			return c.status
		}
	}
	return http.StatusInternalServerError
}
