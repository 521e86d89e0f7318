// Package mcpserver serves the store's delegations to any MCP host over
// stdio (`delegations mcp`), with the official Go SDK: delegation_list,
// delegation_read, delegation_status and delegation_cancel, with the
// plugin's texts (projection/format.go).
//
// # Caveats
//
//   - The server runs as long as its host session, so it never holds the
//     log: each call goes through the daemon when one runs, else opens the
//     log, answers and closes it, so that the hooks (other processes) can
//     write between calls. Without a daemon a waiting delegation_read polls
//     read-only (show, every PollInterval) instead of blocking on the log.
//   - Under Claude Code (Options.ClaudeCode) delegation_read never waits:
//     a Claude Code agent's record ends only through the parent's next
//     UserPromptSubmit or Stop hook, which cannot fire while the parent's
//     turn is blocked in this tool call. A running delegation is answered
//     at once with its state and "you will be notified" (the plugin's read
//     blocks instead).
//   - The root session is Options.Session. When it is the host's own
//     session (Options.FixedSession: $CLAUDE_CODE_SESSION_ID), a tool's
//     "session" argument, which the model controls, may only repeat it;
//     otherwise the argument chooses the session.
package mcpserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/delegations/delegations/cmd/delegations/api"
	"github.com/delegations/delegations/cmd/delegations/internal/textcut"
	"github.com/delegations/delegations/fsm"
	"github.com/delegations/delegations/projection"
	"github.com/delegations/delegations/projection/artifact"
)

// Defaults of delegation_read's wait.
const (
	DefaultReadWait = 30 * time.Second
	MaxReadWait     = 10 * time.Minute
	PollInterval    = 250 * time.Millisecond
)

// Backend runs the API's verbs; Close releases it after each tool call.
type Backend interface {
	Call(ctx context.Context, verb string, req, resp any) error
	Close() error
}

// Options configures the server.
type Options struct {
	// Connect reaches the store for one tool call; daemon says whether it
	// is a daemon (which can wait) rather than the log opened in process,
	// read-only when readOnly (a writer is opened only for calls that
	// change the store).
	Connect func(ctx context.Context, readOnly bool) (b Backend, daemon bool, err error)
	// Session is the root session used when a call gives none.
	Session string
	// FixedSession refuses a call's session argument other than Session:
	// the host set it (Claude Code's $CLAUDE_CODE_SESSION_ID), and the
	// model must not read or cancel another session's delegations.
	FixedSession bool
	// ClaudeCode says the host is Claude Code, whose agents' records end
	// only through its hooks: delegation_read does not wait.
	ClaudeCode bool
	// DataDir is the store's data directory, for artifact paths.
	DataDir string
	// Version is reported to the host.
	Version string
}

// New returns the MCP server with the four tools.
func New(o Options) *mcp.Server {
	s := mcp.NewServer(&mcp.Implementation{Name: "delegations", Version: o.Version}, &mcp.ServerOptions{
		Instructions: "Background delegations of this session (Claude Code background agents included), kept durably by the delegations store. " +
			"You WILL be notified when a delegation completes: do not poll delegation_list. Use delegation_read(id) for a result.",
	})
	h := &handlers{o: o}
	closed := false
	readDesc := "Read a delegation's full output by id. If it is still running, waits for it to finish, at most wait_seconds " +
		fmt.Sprintf("(default %d, at most %d); then returns its current state.", int(DefaultReadWait.Seconds()), int(MaxReadWait.Seconds()))
	if o.ClaudeCode {
		readDesc = "Read a delegation's full output by id. A running delegation (a background agent) is answered at once with its state: " +
			"you will be notified with <task-notification> when it ends; read it then."
	}
	mcp.AddTool(s, &mcp.Tool{
		Name:        "delegation_list",
		Description: "List this session's delegations (background tasks) with their status, title, description and whether their result is unread.",
		Annotations: &mcp.ToolAnnotations{ReadOnlyHint: true, OpenWorldHint: &closed},
	}, h.list)
	mcp.AddTool(s, &mcp.Tool{
		Name:        "delegation_read",
		Description: readDesc,
		Annotations: &mcp.ToolAnnotations{ReadOnlyHint: true, OpenWorldHint: &closed},
	}, h.read)
	mcp.AddTool(s, &mcp.Tool{
		Name:        "delegation_status",
		Description: "A delegation's record: status, agent, times (created, started, last heartbeat, completed, deadline) and artifact path.",
		Annotations: &mcp.ToolAnnotations{ReadOnlyHint: true, OpenWorldHint: &closed},
	}, h.status)
	mcp.AddTool(s, &mcp.Tool{
		Name: "delegation_cancel",
		Description: "Cancel a running delegation of this session: its record ends as cancelled, and a later result is ignored. " +
			"It does not stop a Claude Code background agent itself (TaskStop does).",
		Annotations: &mcp.ToolAnnotations{IdempotentHint: true, OpenWorldHint: &closed},
	}, h.cancel)
	return s
}

// Run serves the tools on stdin and stdout until the host closes them.
func Run(ctx context.Context, o Options) error {
	return New(o).Run(ctx, &mcp.StdioTransport{})
}

type handlers struct{ o Options }

// SessionArg is the argument every tool takes.
type SessionArg struct {
	Session string `json:"session,omitempty" jsonschema:"the root session whose delegations to see; default: this host session"`
}

// ListArgs are delegation_list's arguments.
type ListArgs struct {
	SessionArg
	Status string `json:"status,omitempty" jsonschema:"only this status: registered, running, complete, error, cancelled or timeout"`
	Unread bool   `json:"unread,omitempty" jsonschema:"only delegations whose result is unread"`
	Order  string `json:"order,omitempty" jsonschema:"id (alphabetical, the default) or time (registration order)"`
}

// ReadArgs are delegation_read's arguments.
type ReadArgs struct {
	SessionArg
	ID          string `json:"id" jsonschema:"the delegation id, e.g. elegant-blue-tiger"`
	WaitSeconds *int   `json:"wait_seconds,omitempty" jsonschema:"how long to wait for a running delegation, in seconds (default 30)"`
}

// IDArgs are delegation_status's arguments.
type IDArgs struct {
	SessionArg
	ID string `json:"id" jsonschema:"the delegation id"`
}

// CancelArgs are delegation_cancel's arguments.
type CancelArgs struct {
	SessionArg
	ID     string `json:"id" jsonschema:"the delegation id"`
	Reason string `json:"reason,omitempty" jsonschema:"why, kept in the record"`
}

func (h *handlers) session(a SessionArg) (string, error) {
	s := strings.TrimSpace(a.Session)
	if h.o.FixedSession && s != "" && s != h.o.Session {
		return "", fmt.Errorf("session %q is not this Claude Code session: this server only serves the delegations of its own session (%s); leave \"session\" out", s, h.o.Session)
	}
	if s == "" {
		s = h.o.Session
	}
	if s == "" {
		return "", errors.New(`no session: pass "session" (the host's session id); this server was started without $CLAUDE_CODE_SESSION_ID or $DELEGATIONS_SESSION`)
	}
	return s, fsm.ValidateSessionID("session", s)
}

// call runs one verb on a fresh connection, read-only for verbs that
// change nothing.
func (h *handlers) call(ctx context.Context, verb string, req, resp any) error {
	b, _, err := h.o.Connect(ctx, verb == "show" || verb == "list")
	if err != nil {
		return err
	}
	return errors.Join(b.Call(ctx, verb, req, resp), b.Close())
}

func text(s string) *mcp.CallToolResult {
	return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: s}}}
}

// failure is a tool error the model sees (not a protocol error).
func failure(err error) (*mcp.CallToolResult, any, error) {
	var nf *projection.ReadNotFoundError
	msg := err.Error()
	var ae *api.Error
	if errors.As(err, &nf) {
		msg = artifact.NotFoundReadText(nf.ID)
	} else if errors.As(err, &ae) && ae.Code == "not_found" && strings.HasPrefix(ae.Message, "Delegation \"") {
		msg = ae.Message
	}
	r := text(msg)
	r.IsError = true
	return r, nil, nil
}

func (h *handlers) list(ctx context.Context, _ *mcp.CallToolRequest, a ListArgs) (*mcp.CallToolResult, any, error) {
	root, err := h.session(a.SessionArg)
	if err != nil {
		return failure(err)
	}
	var res api.List
	if err := h.call(ctx, "list", api.ListRequest{RootSessionID: root, Status: a.Status, Unread: a.Unread, Order: a.Order, TextOnly: true}, &res); err != nil {
		return failure(err)
	}
	return text(res.Text), nil, nil
}

func (h *handlers) read(ctx context.Context, _ *mcp.CallToolRequest, a ReadArgs) (*mcp.CallToolResult, any, error) {
	root, err := h.session(a.SessionArg)
	if err != nil {
		return failure(err)
	}
	if strings.TrimSpace(a.ID) == "" {
		return failure(errors.New(artifact.ReadIDRequired))
	}
	wait := DefaultReadWait
	if a.WaitSeconds != nil {
		wait = time.Duration(*a.WaitSeconds) * time.Second
	}
	wait = min(max(wait, 0), MaxReadWait)
	if h.o.ClaudeCode {
		wait = 0 // nothing can end the agent's record while this call blocks
	}
	deadline := time.Now().Add(wait)
	b, daemon, err := h.o.Connect(ctx, true)
	if err != nil {
		return failure(err)
	}
	req := api.ReadRequest{RootSessionID: root, ID: a.ID}
	if !daemon {
		// The log opened in process must not wait: it would lock out the
		// hooks that end the delegation. It is polled read-only instead,
		// then read once (a read marks the delegation read).
		b.Close()
		h.poll(ctx, root, a.ID, deadline)
		if b, _, err = h.o.Connect(ctx, false); err != nil {
			return failure(err)
		}
	} else {
		req.WaitMs = max(wait.Milliseconds(), 0)
	}
	var res projection.ReadResult
	if err := errors.Join(b.Call(ctx, "read", req, &res), b.Close()); err != nil {
		return failure(err)
	}
	if h.o.ClaudeCode && !res.Artifact && res.Delegation.State.Active() {
		return text(res.Text + "\n\n" + RunningNote), nil, nil
	}
	return text(res.Text), nil, nil
}

// RunningNote follows the state of a running delegation under Claude
// Code, whose read does not wait.
const RunningNote = "Still running. You WILL be notified with <task-notification> when it ends; read it then. Do not poll."

// poll waits, read-only, until the delegation is no longer active or the
// deadline passes (or it cannot be seen: the read then says why).
func (h *handlers) poll(ctx context.Context, root, id string, deadline time.Time) {
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return
		}
		d, err := h.visible(ctx, root, id)
		if err != nil || !d.State.Active() {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(min(PollInterval, left)):
		}
	}
}

func (h *handlers) visible(ctx context.Context, root, id string) (fsm.Delegation, error) {
	id = strings.TrimSpace(id)
	if id == "" {
		return fsm.Delegation{}, errors.New(artifact.ReadIDRequired)
	}
	var d fsm.Delegation
	err := h.call(ctx, "show", api.IDRequest{ID: id}, &d)
	if errors.Is(err, fsm.ErrNotFound) || err == nil && d.RootSessionID != root {
		return fsm.Delegation{}, &projection.ReadNotFoundError{ID: id}
	}
	return d, err
}

// Status is what delegation_status returns (as JSON text).
type Status struct {
	ID              string `json:"id"`
	Status          string `json:"status"`
	Agent           string `json:"agent"`
	Session         string `json:"childSession,omitempty"`
	Created         string `json:"createdAt"`
	Started         string `json:"startedAt,omitempty"`
	LastHeartbeat   string `json:"lastHeartbeatAt,omitempty"`
	Completed       string `json:"completedAt,omitempty"`
	Deadline        string `json:"timeoutAt,omitempty"`
	Title           string `json:"title,omitempty"`
	Description     string `json:"description,omitempty"`
	Error           string `json:"error,omitempty"`
	Artifact        string `json:"artifact,omitempty"`
	Unread          bool   `json:"unread"`
	ProgressPreview string `json:"progress,omitempty"`
}

func (h *handlers) status(ctx context.Context, _ *mcp.CallToolRequest, a IDArgs) (*mcp.CallToolResult, any, error) {
	root, err := h.session(a.SessionArg)
	if err != nil {
		return failure(err)
	}
	d, err := h.visible(ctx, root, a.ID)
	if err != nil {
		return failure(err)
	}
	st := Status{
		ID: d.ID, Status: string(d.State), Agent: d.Agent, Session: d.SessionID,
		Created: timeText(d.CreatedAt), Started: timeText(d.StartedAt), LastHeartbeat: timeText(d.LastHeartbeatAt),
		Completed: timeText(d.CompletedAt), Title: d.Title, Description: d.Description, Error: d.Error,
		Unread: d.Unread(),
	}
	if d.State.Active() {
		st.Deadline = timeText(d.TimeoutAt)
		if st.ProgressPreview = textcut.Cut(d.Progress, progressPreview); st.ProgressPreview != d.Progress {
			st.ProgressPreview += "..."
		}
	}
	if d.ArtifactPath != "" {
		st.Artifact = filepath.Join(h.o.DataDir, d.ArtifactPath)
	}
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return failure(err)
	}
	return text(string(b)), nil, nil
}

func (h *handlers) cancel(ctx context.Context, _ *mcp.CallToolRequest, a CancelArgs) (*mcp.CallToolResult, any, error) {
	root, err := h.session(a.SessionArg)
	if err != nil {
		return failure(err)
	}
	d, err := h.visible(ctx, root, a.ID)
	if err != nil {
		return failure(err)
	}
	if !d.State.Active() {
		return text(fmt.Sprintf("Delegation %s is already %s; nothing to cancel.", d.ID, d.State)), nil, nil
	}
	reason := a.Reason
	if reason == "" {
		reason = "cancelled with delegation_cancel"
	}
	if err := h.call(ctx, "cancel", api.CancelRequest{ID: d.ID, Reason: reason}, &d); err != nil {
		return failure(err)
	}
	return text(fmt.Sprintf("Delegation %s cancelled.", d.ID)), nil, nil
}

func timeText(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return fsm.FormatTime(t)
}

// progressPreview bounds, in bytes, the progress delegation_status shows.
const progressPreview = 2000
