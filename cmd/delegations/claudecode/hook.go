package claudecode

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/delegations/delegations/cmd/delegations/api"
	"github.com/delegations/delegations/cmd/delegations/internal/textcut"
	"github.com/delegations/delegations/fsm"
	"github.com/delegations/delegations/projection"
	"github.com/delegations/delegations/projection/projectid"
)

// Caller runs the API's verbs: an api.Client (a daemon runs) or an
// api.Local (the log opened in process).
type Caller interface {
	Call(ctx context.Context, verb string, req, resp any) error
}

// Connect returns the Caller, on first use: events that need nothing from
// the store never pay for a connection.
type Connect func(ctx context.Context) (Caller, error)

// MaxInput bounds the hook input read from stdin. Claude Code's largest
// fields are a prompt and an agent's last message; the store refuses more
// than 4 MiB of result anyway.
const MaxInput = 16 << 20

// GitBudget bounds the git lookup of a project id in a hook, past which
// the id falls back to the hash of the directory's path.
const GitBudget = time.Second

// MaxContextBytes bounds the text SessionStart prints (the block and the
// agent ids): Claude Code cuts a longer additionalContext, possibly inside
// a tag.
const MaxContextBytes = 8 << 10

// DefaultAgent is the agent recorded when the Agent tool names none
// (Claude Code then runs general-purpose).
const DefaultAgent = "general-purpose"

// Input is a hook's JSON on stdin: the fields this package reads, from
// every event it handles. Unknown fields are ignored: Claude Code adds
// fields between versions.
type Input struct {
	SessionID      string `json:"session_id"`
	Cwd            string `json:"cwd"`
	HookEventName  string `json:"hook_event_name"`
	TranscriptPath string `json:"transcript_path"`

	// PostToolUse
	ToolName     string          `json:"tool_name"`
	ToolUseID    string          `json:"tool_use_id"`
	ToolInput    json.RawMessage `json:"tool_input"`
	ToolResponse json.RawMessage `json:"tool_response"`

	// SubagentStart, SubagentStop
	AgentID             string `json:"agent_id"`
	AgentType           string `json:"agent_type"`
	AgentTranscriptPath string `json:"agent_transcript_path"`

	// SubagentStop, Stop
	LastAssistantMessage string `json:"last_assistant_message"`
	// BackgroundTasks is nil when the field is missing (a Claude Code
	// version without it): then nobody knows which agents still run.
	BackgroundTasks *[]BackgroundTask `json:"background_tasks"`

	// UserPromptSubmit
	Prompt string `json:"prompt"`

	// SessionStart
	Source string `json:"source"`

	// SessionEnd
	Reason string `json:"reason"`
}

// BackgroundTask is one entry of a Stop hook's background_tasks.
type BackgroundTask struct {
	ID     string `json:"id"`
	Type   string `json:"type"`
	Status string `json:"status"`
}

// agentInput is the Agent tool's input.
type agentInput struct {
	Description  string `json:"description"`
	Prompt       string `json:"prompt"`
	SubagentType string `json:"subagent_type"`
	Model        string `json:"model"`
}

// agentResponse is the Agent tool's response when it launched an agent in
// the background.
type agentResponse struct {
	Status        string `json:"status"`
	AgentID       string `json:"agentId"`
	ResolvedModel string `json:"resolvedModel"`
	OutputFile    string `json:"outputFile"`
}

// Hook handles one hook event, input being the hook's JSON. It returns
// what to print on stdout (nil for nothing). Errors are for the caller to
// log: a hook must exit 0 whatever happens.
func Hook(ctx context.Context, input []byte, connect Connect) ([]byte, error) {
	if !utf8.Valid(input) {
		return nil, errors.New("hook input is not valid UTF-8")
	}
	var in Input
	dec := json.NewDecoder(bytes.NewReader(input))
	if err := dec.Decode(&in); err != nil {
		return nil, fmt.Errorf("decode the hook input: %w", err)
	}
	h := &hook{in: in, connect: connect}
	switch in.HookEventName {
	case "PostToolUse":
		return nil, h.postToolUse(ctx)
	case "SubagentStart", "SubagentStop":
		return nil, h.subagent(ctx)
	case "Stop":
		return nil, h.stop(ctx)
	case "UserPromptSubmit":
		return nil, h.userPromptSubmit(ctx)
	case "SessionStart":
		return h.sessionStart(ctx)
	case "SessionEnd":
		return nil, h.sessionEnd(ctx)
	case "":
		return nil, errors.New("hook input has no hook_event_name")
	}
	return nil, nil // an event we do not follow (installed by hand, or new)
}

type hook struct {
	in      Input
	connect Connect
	c       Caller
}

func (h *hook) call(ctx context.Context, verb string, req, resp any) error {
	if h.c == nil {
		c, err := h.connect(ctx)
		if err != nil {
			return err
		}
		h.c = c
	}
	if err := h.c.Call(ctx, verb, req, resp); err != nil {
		return fmt.Errorf("%s: %w", verb, err)
	}
	return nil
}

// session returns the hook's session id, checked.
func (h *hook) session() (string, error) {
	if err := fsm.ValidateSessionID("session_id", h.in.SessionID); err != nil {
		return "", fmt.Errorf("%s hook: %w", h.in.HookEventName, err)
	}
	return h.in.SessionID, nil
}

// postToolUse registers and starts an agent the Agent tool launched in the
// background. Foreground agents (their response is their result) are not
// delegations.
func (h *hook) postToolUse(ctx context.Context) error {
	if h.in.ToolName != "Agent" && h.in.ToolName != "Task" {
		return nil
	}
	var resp agentResponse
	if len(h.in.ToolResponse) == 0 || h.in.ToolResponse[0] != '{' {
		return nil
	}
	if err := json.Unmarshal(h.in.ToolResponse, &resp); err != nil {
		return fmt.Errorf("PostToolUse: tool_response: %w", err)
	}
	if resp.Status != "async_launched" {
		return nil
	}
	session, err := h.session()
	if err != nil {
		return err
	}
	var ti agentInput
	if len(h.in.ToolInput) > 0 {
		if err := json.Unmarshal(h.in.ToolInput, &ti); err != nil {
			return fmt.Errorf("PostToolUse: tool_input: %w", err)
		}
	}
	if err := fsm.ValidateSessionID("agentId", resp.AgentID); err != nil {
		return fmt.Errorf("PostToolUse: %w", err)
	}
	if h.in.ToolUseID == "" {
		return errors.New("PostToolUse: no tool_use_id")
	}
	if !filepath.IsAbs(h.in.Cwd) {
		return fmt.Errorf("PostToolUse: cwd %q is not absolute", h.in.Cwd)
	}
	agent := oneLine(ti.SubagentType, fsm.MaxNameLen)
	if agent == "" {
		agent = DefaultAgent
	}
	model := ti.Model
	if model == "" {
		model = resp.ResolvedModel
	}
	// The project id is derived here, with a short git budget, rather than
	// by the store with the plugin's 5 s: the hook has 5 s in all.
	project, err := projectid.OfWithin(ctx, h.in.Cwd, GitBudget)
	if err != nil {
		return fmt.Errorf("PostToolUse: %w", err)
	}
	var d fsm.Delegation
	err = h.call(ctx, "register", api.RegisterRequest{
		RootSessionID:   session,
		ParentSessionID: session,
		// The Agent tool call launched it: its tool_use_id is the
		// <tool-use-id> of the agent's notifications.
		ParentMessageID: h.in.ToolUseID,
		Agent:           agent,
		ProjectID:       project,
		SessionID:       resp.AgentID,
		Model:           oneLine(model, fsm.MaxNameLen),
		Prompt:          cut(ti.Prompt, fsm.MaxPromptLen),
		// Claude Code has no agent timeout: the hooks end the record
		// (notification, Stop, SessionEnd), never a deadline.
		TimeoutMs:      fsm.MaxTimeout.Milliseconds(),
		IdempotencyKey: registerKey(SessionStarted(h.in.TranscriptPath), session, h.in.ToolUseID),
	}, &d)
	if err != nil {
		return err
	}
	if d.State != fsm.Registered {
		return nil // a retried hook: already started, or even ended
	}
	return h.call(ctx, "start", api.StartRequest{ID: d.ID, SessionID: resp.AgentID}, &d)
}

// find returns the session's active delegation whose child session is
// agent, or false. Its cost follows the active delegations, not history.
func (h *hook) find(ctx context.Context, session, agent string) (fsm.Delegation, bool, error) {
	ds, err := h.active(ctx, session)
	if err != nil {
		return fsm.Delegation{}, false, err
	}
	for _, d := range ds {
		if d.SessionID == agent {
			return d, true, nil
		}
	}
	return fsm.Delegation{}, false, nil
}

func (h *hook) active(ctx context.Context, session string) ([]fsm.Delegation, error) {
	var res api.Delegations
	err := h.call(ctx, "active", api.ActiveRequest{RootSessionID: session}, &res)
	return res.Delegations, err
}

// subagent records a heartbeat of a known agent, with its latest text when
// the event carries one (SubagentStop fires after every turn of the agent).
func (h *hook) subagent(ctx context.Context) error {
	if h.in.AgentID == "" || fsm.ValidateSessionID("agent_id", h.in.AgentID) != nil {
		return nil // not an agent the store can know
	}
	session, err := h.session()
	if err != nil {
		return err
	}
	d, ok, err := h.find(ctx, session, h.in.AgentID)
	if err != nil || !ok {
		return err // unknown: a compaction's agent, or PostToolUse still to come
	}
	msg := d.Progress
	if h.in.HookEventName == "SubagentStop" && strings.TrimSpace(h.in.LastAssistantMessage) != "" {
		msg = cut(h.in.LastAssistantMessage, fsm.MaxMessageLen)
	}
	// It may have ended since find (a concurrent hook): nothing to record.
	if err := h.call(ctx, "progress", api.ProgressRequest{ID: d.ID, Message: msg}, &d); err != nil && !errors.Is(err, fsm.ErrTerminal) {
		return err
	}
	return nil
}

// stop ends the session's active agents that Claude Code no longer lists
// as background tasks, then acknowledges the session's due notifications.
// An agent that ended while the parent worked has its notification in the
// transcript, not yet in a prompt: its status and result come from there;
// only without one does it complete with the last text the store has. A
// Stop without background_tasks (another Claude Code version) ends nothing.
func (h *hook) stop(ctx context.Context) error {
	session, err := h.session()
	if err != nil {
		return err
	}
	var errs []error
	if h.in.BackgroundTasks != nil {
		errs = append(errs, h.endUnlisted(ctx, session, *h.in.BackgroundTasks))
	}
	errs = append(errs, h.ackDue(ctx, session))
	return errors.Join(errs...)
}

func (h *hook) endUnlisted(ctx context.Context, session string, tasks []BackgroundTask) error {
	ds, err := h.active(ctx, session)
	if err != nil {
		return err
	}
	listed := make(map[string]bool, len(tasks))
	for _, t := range tasks {
		listed[t.ID] = true
	}
	var ns []Notification
	read := false
	var errs []error
	for _, d := range ds {
		if d.SessionID == "" || listed[d.SessionID] {
			continue
		}
		if !read {
			ns, err = TranscriptNotifications(h.in.TranscriptPath)
			errs = append(errs, err) // logged; Stop still ends the agent
			read = true
		}
		var out fsm.Delegation
		if n, ok := lastFor(ns, d); ok {
			err = h.end(ctx, d, n)
		} else {
			err = h.call(ctx, "complete", api.CompleteRequest{ID: d.ID, Result: cut(d.Progress, fsm.MaxResultLen)}, &out)
		}
		if err != nil && !errors.Is(err, fsm.ErrTerminal) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// matches reports whether notification n is about delegation d: the same
// agent id, launched by the same Agent tool call. A record registered
// before the tool call was kept (ParentMessageID empty) matches by agent
// id alone.
func matches(n Notification, d fsm.Delegation) bool {
	if d.SessionID == "" || n.TaskID != d.SessionID {
		return false
	}
	return d.ParentMessageID == "" || n.ToolUseID == d.ParentMessageID
}

// lastFor returns the last notification of ns about d.
func lastFor(ns []Notification, d fsm.Delegation) (Notification, bool) {
	for i := len(ns) - 1; i >= 0; i-- {
		if matches(ns[i], d) {
			return ns[i], true
		}
	}
	return Notification{}, false
}

// userPromptSubmit ends the agent whose task notification the prompt is
// (a notification turn's prompt is the notification), with its status and
// result.
func (h *hook) userPromptSubmit(ctx context.Context) error {
	n, ok := ParseNotification(h.in.Prompt)
	if !ok {
		return nil
	}
	session, err := h.session()
	if err != nil {
		return err
	}
	ds, err := h.active(ctx, session)
	if err != nil {
		return err
	}
	var errs []error
	found := false
	for _, d := range ds {
		if !matches(n, d) {
			continue
		}
		found = true
		if err := h.end(ctx, d, n); err != nil && !errors.Is(err, fsm.ErrTerminal) {
			errs = append(errs, err)
		}
	}
	if !found {
		errs = append(errs, h.continued(ctx, session, n))
	}
	errs = append(errs, h.ackDue(ctx, session))
	return errors.Join(errs...)
}

// continued records the notification of an agent whose record already
// ended: the agent was continued (SendMessage) and stopped again. A
// record's end is final, so the new outcome is a new delegation of the
// same agent, registered, started and ended at once, and unread until it
// is read. A notification repeating an outcome already recorded for the
// agent (delivered twice, or late) records nothing.
func (h *hook) continued(ctx context.Context, session string, n Notification) error {
	var res api.Delegations
	if err := h.call(ctx, "list", api.ListRequest{RootSessionID: session, Order: "time"}, &res); err != nil {
		return err
	}
	var prev fsm.Delegation
	for _, d := range res.Delegations {
		if !matches(n, d) {
			continue
		}
		if d.State.Active() {
			return nil // it ends by the active path
		}
		// A listing carries summaries: the outcome's texts come with show.
		if err := h.call(ctx, "show", api.IDRequest{ID: d.ID}, &d); err != nil {
			return err
		}
		if sameOutcome(d, n) {
			return nil // this was recorded
		}
		prev = d
	}
	if prev.ID == "" {
		return nil // not an agent of the store
	}
	sum := sha256.Sum256([]byte(n.Status + "\x00" + n.Result))
	var d fsm.Delegation
	err := h.call(ctx, "register", api.RegisterRequest{
		RootSessionID:   session,
		ParentSessionID: session,
		ParentMessageID: prev.ParentMessageID,
		Agent:           prev.Agent,
		ProjectID:       prev.ProjectID,
		SessionID:       prev.SessionID,
		Model:           prev.Model,
		Prompt:          "(" + prev.ID + " continued with SendMessage after it ended)",
		TimeoutMs:       fsm.MaxTimeout.Milliseconds(),
		IdempotencyKey:  cut(prev.SessionID, 64) + ":" + hex.EncodeToString(sum[:12]),
	}, &d)
	if err != nil {
		return err
	}
	if d.State == fsm.Registered {
		if err := h.call(ctx, "start", api.StartRequest{ID: d.ID, SessionID: prev.SessionID}, &d); err != nil {
			return err
		}
	}
	if !d.State.Active() {
		return nil // recorded before
	}
	if err := h.end(ctx, d, n); err != nil && !errors.Is(err, fsm.ErrTerminal) {
		return err
	}
	return nil
}

// sameOutcome reports whether terminal delegation d already records
// notification n's outcome.
func sameOutcome(d fsm.Delegation, n Notification) bool {
	switch strings.ToLower(n.Status) {
	case "failed", "error":
		return d.State == fsm.Error && strings.TrimSpace(d.Error) == strings.TrimSpace(cut(failureText(n), fsm.MaxErrorLen))
	case "killed", "stopped", "cancelled", "canceled":
		return d.State == fsm.Cancelled
	}
	return d.State == fsm.Complete && strings.TrimSpace(d.Result) == strings.TrimSpace(cut(n.Result, fsm.MaxResultLen))
}

// failureText is the error a failed agent's notification records.
func failureText(n Notification) string {
	if strings.TrimSpace(n.Result) == "" {
		return n.Summary
	}
	return n.Result
}

// end records a task notification's outcome.
func (h *hook) end(ctx context.Context, d fsm.Delegation, n Notification) error {
	var out fsm.Delegation
	result := n.Result
	if strings.TrimSpace(result) == "" {
		result = d.Progress
	}
	switch strings.ToLower(n.Status) {
	case "failed", "error":
		return h.call(ctx, "fail", api.FailRequest{ID: d.ID, Error: cut(failureText(n), fsm.MaxErrorLen)}, &out)
	case "killed", "stopped", "cancelled", "canceled":
		return h.call(ctx, "cancel", api.CancelRequest{ID: d.ID, Reason: cut(n.Summary, fsm.MaxReasonLen)}, &out)
	}
	return h.call(ctx, "complete", api.CompleteRequest{ID: d.ID, Result: cut(result, fsm.MaxResultLen)}, &out)
}

// ackDue acknowledges the session's due notifications: Claude Code
// delivers its own, and an acknowledged delegation counts as unread until
// it is read.
func (h *hook) ackDue(ctx context.Context, session string) error {
	var res api.Notifications
	if err := h.call(ctx, "notifications", api.NotificationsRequest{ParentSessionID: session}, &res); err != nil {
		return err
	}
	var errs []error
	for _, n := range res.Notifications {
		var out projection.AckResult
		errs = append(errs, h.call(ctx, "ack", api.AckRequest{ID: n.ID}, &out))
	}
	return errors.Join(errs...)
}

// sessionStart prints the session's <delegation-context> block as
// additional context, so that a compacted, resumed or restarted session
// knows its background work. Nothing to carry prints nothing.
func (h *hook) sessionStart(ctx context.Context) ([]byte, error) {
	switch h.in.Source {
	case "startup", "resume", "compact":
	default:
		return nil, nil // clear starts afresh; fork is a new session id
	}
	session, err := h.session()
	if err != nil {
		return nil, err
	}
	var errs []error
	if h.in.Source == "startup" || h.in.Source == "resume" {
		// A session starting in a process with agents recorded as running:
		// the process that ran them is gone (it crashed, or was killed
		// before its SessionEnd hook, which cancels them), and its agents
		// with it.
		errs = append(errs, h.endAll(ctx, session, "fail", "Claude Code started this session again ("+h.in.Source+") while the agent was recorded as running: the process that ran it crashed or was killed, and the agent with it"))
		errs = append(errs, h.ackDue(ctx, session))
	}
	var res api.CompactResponse
	// The block gets most of the budget, the agent ids what is left.
	if err := h.call(ctx, "compact", api.CompactRequest{RootSessionID: session, MaxBytes: MaxContextBytes * 3 / 4}, &res); err != nil {
		return nil, err
	}
	if res.Block == "" {
		return nil, errors.Join(errs...)
	}
	agents, err := h.agents(ctx, session, res.Block)
	if err != nil {
		return nil, errors.Join(append(errs, err)...)
	}
	out, err := SessionStartOutput(res.Block + agents)
	return out, errors.Join(append(errs, err)...)
}

// sessionEnd cancels the session's active agents: Claude Code ends them
// with its process (in -p mode it waits for them first, so none is left).
func (h *hook) sessionEnd(ctx context.Context) error {
	session, err := h.session()
	if err != nil {
		return err
	}
	reason := "Claude Code session ended"
	if r := oneLine(h.in.Reason, 64); r != "" {
		reason += " (" + r + ")"
	}
	return errors.Join(h.endAll(ctx, session, "cancel", reason), h.ackDue(ctx, session))
}

// endAll ends every active delegation of the session: with its
// notification when the transcript has one (it ended before its process),
// else by verb: "cancel" with why as the reason, or "fail" with why and
// the agent's last text as the error, so that its partial output is kept.
func (h *hook) endAll(ctx context.Context, session, verb, why string) error {
	ds, err := h.active(ctx, session)
	if err != nil || len(ds) == 0 {
		return err
	}
	ns, err := TranscriptNotifications(h.in.TranscriptPath)
	errs := []error{err}
	for _, d := range ds {
		if n, ok := lastFor(ns, d); ok {
			if err := h.end(ctx, d, n); err != nil && !errors.Is(err, fsm.ErrTerminal) {
				errs = append(errs, err)
			}
			continue
		}
		var out fsm.Delegation
		var req any = api.CancelRequest{ID: d.ID, Reason: cut(why, fsm.MaxReasonLen)}
		if verb == "fail" {
			text := why + "."
			if strings.TrimSpace(d.Progress) != "" {
				text += " Its last output:\n\n" + d.Progress
			}
			req = api.FailRequest{ID: d.ID, Error: cut(text, fsm.MaxErrorLen)}
		}
		if err := h.call(ctx, verb, req, &out); err != nil && !errors.Is(err, fsm.ErrTerminal) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// agents lists the Claude Code agent ids of the delegations the block
// names, which the block itself does not show: the model needs one to
// continue an agent (SendMessage) or to find its output.
func (h *hook) agents(ctx context.Context, session, block string) (string, error) {
	var active, unread api.Delegations
	if err := h.call(ctx, "active", api.ActiveRequest{RootSessionID: session}, &active); err != nil {
		return "", err
	}
	if err := h.call(ctx, "list", api.ListRequest{RootSessionID: session, Unread: true, Order: "time"}, &unread); err != nil {
		return "", err
	}
	var b strings.Builder
	for _, d := range append(active.Delegations, unread.Delegations...) {
		// Session ids passed their grammar: no markup can hide in them.
		if d.SessionID == "" || !strings.Contains(block, "`"+d.ID+"`") {
			continue
		}
		head := ""
		if b.Len() == 0 {
			head = "\n\nClaude Code agent ids of these delegations (for SendMessage):\n"
		}
		line := fmt.Sprintf("- `%s`: agent %s\n", d.ID, d.SessionID)
		if len(block)+b.Len()+len(head)+len(line) > MaxContextBytes {
			break // the budget holds the whole text
		}
		b.WriteString(head + line)
	}
	return strings.TrimSuffix(b.String(), "\n"), nil
}

// SessionStartOutput is the JSON a SessionStart hook prints to add text
// to the session's context.
func SessionStartOutput(text string) ([]byte, error) {
	type specific struct {
		HookEventName     string `json:"hookEventName"`
		AdditionalContext string `json:"additionalContext"`
	}
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	err := enc.Encode(struct {
		HookSpecificOutput specific `json:"hookSpecificOutput"`
	}{specific{"SessionStart", text}})
	return b.Bytes(), err
}

// cut shortens s to at most max bytes, at a rune boundary.
func cut(s string, max int) string { return textcut.Cut(s, max) }

// registerKey is the idempotency key of the registration of the Agent tool
// call toolUseID in session, which began at started (SessionStarted): the
// session's start, the session, the call. The store's index of keys is
// sorted (see projection.MaxIdempotencyKey): a tool_use_id alone is random
// and lands anywhere in it, while keys led by their session's start land
// together, a recent session's near its end (a session started days
// before, or a fork whose transcript begins with its origin's entries,
// lands among older keys: one page per session). Without a start the key
// is the call under its session; a tool_use_id too long to fit beside its
// session is the key alone.
//
// Two hooks of one call compute the same key as long as they read the
// same start: Claude Code appends to a transcript, and by the time an
// agent is launched its first entries are long written. One that cannot
// read it (another configuration directory, an error) registers the call
// a second time, under the key without the start; so would a release
// before this one, whose key had no start.
func registerKey(started, session, toolUseID string) string {
	if started != "" {
		if key := "claude:" + started + ":" + session + ":" + toolUseID; len(key) <= projection.MaxIdempotencyKey {
			return key
		}
	}
	if key := "claude:" + session + ":" + toolUseID; len(key) <= projection.MaxIdempotencyKey {
		return key
	}
	return toolUseID
}

// oneLine makes a name printable on one line (the store refuses control
// characters in names) and at most max bytes.
func oneLine(s string, max int) string {
	s = strings.Join(strings.FieldsFunc(s, func(r rune) bool { return r < ' ' || r == 0x7f }), " ")
	return strings.TrimSpace(cut(s, max))
}
