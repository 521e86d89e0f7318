package hosttest

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// FakeModelID is the model the fake OpenAI server announces; StartOpenCode
// configures it as provider "fake", so OpenCode knows it as "fake/fake-model".
const FakeModelID = "fake-model"

// OpenAI is a fake OpenAI-compatible chat model on 127.0.0.1: it answers
// POST /v1/chat/completions (streaming or not) from a script and records
// every request.
type OpenAI struct {
	// URL is the server's root, http://127.0.0.1:PORT; the API is under URL+"/v1".
	URL string

	tb     testing.TB
	script func(*ChatRequest) Reply
	srv    *httptest.Server
	closed chan struct{}

	mu       sync.Mutex
	reqs     []*ChatRequest
	taken    map[*ChatRequest]bool // returned by Await
	changed  chan struct{}         // closed and replaced at every new request
	failures []string
}

// Reply is the script's answer to one request. The server streams Partial
// first (flushed), then waits until Hold is closed (if not nil) or the
// request ends, then streams Text and ToolCalls and finishes with
// finish_reason "tool_calls" when there are tool calls, else "stop".
type Reply struct {
	Partial   string
	Hold      <-chan struct{}
	Text      string
	ToolCalls []ToolCall
}

// ToolCall is a call the model makes, or one it made earlier as seen in a
// request's history. Arguments is JSON text.
type ToolCall struct {
	ID, Name, Arguments string
}

// Say is a Reply of just text.
func Say(text string) Reply { return Reply{Text: text} }

// Call is a Reply making one tool call; args is marshalled to JSON.
func Call(id, name string, args any) Reply {
	b, err := json.Marshal(args)
	if err != nil {
		panic(fmt.Sprintf("hosttest.Call: %v", err))
	}
	return Reply{ToolCalls: []ToolCall{{ID: id, Name: name, Arguments: string(b)}}}
}

// ChatRequest is one decoded POST /v1/chat/completions.
type ChatRequest struct {
	Seq      int // 1-based arrival order
	Model    string
	Stream   bool
	Messages []ChatMessage
	Tools    []ToolSpec
	Raw      json.RawMessage // the body as sent
}

// ChatMessage is one entry of a request's messages, its content flattened
// to text (the text parts of an array, joined by newlines).
type ChatMessage struct {
	Role       string // system, user, assistant, tool
	Content    string
	ToolCalls  []ToolCall
	ToolCallID string
}

// ToolSpec is a tool offered to the model.
type ToolSpec struct {
	Name        string
	Description string
	Parameters  json.RawMessage // JSON Schema
}

// System returns the text of all system messages, joined by newlines.
func (r *ChatRequest) System() string {
	var parts []string
	for _, m := range r.Messages {
		if m.Role == "system" {
			parts = append(parts, m.Content)
		}
	}
	return strings.Join(parts, "\n")
}

// LastUser returns the text of the last user message ("" if none).
func (r *ChatRequest) LastUser() string {
	for i := len(r.Messages) - 1; i >= 0; i-- {
		if r.Messages[i].Role == "user" {
			return r.Messages[i].Content
		}
	}
	return ""
}

// Users returns the texts of all user messages, in order.
func (r *ChatRequest) Users() []string {
	var out []string
	for _, m := range r.Messages {
		if m.Role == "user" {
			out = append(out, m.Content)
		}
	}
	return out
}

// ToolNames returns the names of the tools offered, in the request's order.
func (r *ChatRequest) ToolNames() []string {
	names := make([]string, len(r.Tools))
	for i, t := range r.Tools {
		names[i] = t.Name
	}
	return names
}

// Tool returns the offered tool of that name.
func (r *ChatRequest) Tool(name string) (ToolSpec, bool) {
	for _, t := range r.Tools {
		if t.Name == name {
			return t, true
		}
	}
	return ToolSpec{}, false
}

// ToolResult returns the content of the tool message answering callID.
func (r *ChatRequest) ToolResult(callID string) (string, bool) {
	for _, m := range r.Messages {
		if m.Role == "tool" && m.ToolCallID == callID {
			return m.Content, true
		}
	}
	return "", false
}

// titlePrompt starts the system prompt of OpenCode's title generator
// (1.18.33: "You are a title generator. You output ONLY a thread title...").
const titlePrompt = "You are a title generator"

// IsTitle reports whether this is OpenCode's session-title request, which it
// sends beside the first turn of every session.
func (r *ChatRequest) IsTitle() bool {
	return strings.Contains(r.System(), titlePrompt)
}

// NewOpenAI starts a fake model answering from script, stopped at the end
// of the test. The script runs for every request but title requests, which
// the server answers itself with "Test session" (they are recorded all the
// same). A nil script answers "ok" to everything. A script must not call
// tb.Fatal (it runs on the server's goroutine); use Errorf.
func NewOpenAI(tb testing.TB, script func(*ChatRequest) Reply) *OpenAI {
	tb.Helper()
	if script == nil {
		script = func(*ChatRequest) Reply { return Say("ok") }
	}
	o := &OpenAI{tb: tb, script: script, closed: make(chan struct{}), taken: map[*ChatRequest]bool{}, changed: make(chan struct{})}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/chat/completions", o.chat)
	mux.HandleFunc("GET /v1/models", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, map[string]any{"object": "list", "data": []any{map[string]any{"id": FakeModelID, "object": "model", "created": 0, "owned_by": "hosttest"}}})
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		o.fail("unexpected request %s %s", r.Method, r.URL)
		http.NotFound(w, r)
	})
	o.srv = httptest.NewServer(mux) // 127.0.0.1:0
	o.URL = o.srv.URL
	tb.Cleanup(func() {
		close(o.closed)
		o.srv.Close()
		o.mu.Lock()
		defer o.mu.Unlock()
		for _, f := range o.failures {
			tb.Errorf("fake model: %s", f)
		}
	})
	return o
}

func (o *OpenAI) fail(format string, args ...any) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.failures = append(o.failures, fmt.Sprintf(format, args...))
}

// Requests returns every request so far, in arrival order.
func (o *OpenAI) Requests() []*ChatRequest {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]*ChatRequest(nil), o.reqs...)
}

// Await returns the earliest request matching pred (nil matches all) that no
// earlier Await returned, waiting for one to arrive. It returns nil when ctx
// ends first. Requests that arrived before the call count: nothing is lost
// to a race between a prompt and its Await.
func (o *OpenAI) Await(ctx context.Context, pred func(*ChatRequest) bool) *ChatRequest {
	for {
		o.mu.Lock()
		for _, r := range o.reqs {
			if !o.taken[r] && (pred == nil || pred(r)) {
				o.taken[r] = true
				o.mu.Unlock()
				return r
			}
		}
		changed := o.changed
		o.mu.Unlock()
		select {
		case <-changed:
		case <-ctx.Done():
			return nil
		}
	}
}

// NotTitle is a predicate for Await: every request but title requests.
func NotTitle(r *ChatRequest) bool { return !r.IsTitle() }

func (o *OpenAI) record(r *ChatRequest) {
	o.mu.Lock()
	defer o.mu.Unlock()
	r.Seq = len(o.reqs) + 1
	o.reqs = append(o.reqs, r)
	close(o.changed)
	o.changed = make(chan struct{})
}

// wire formats of the OpenAI chat API.
type (
	wireRequest struct {
		Model    string        `json:"model"`
		Stream   bool          `json:"stream"`
		Messages []wireMessage `json:"messages"`
		Tools    []struct {
			Type     string `json:"type"`
			Function struct {
				Name        string          `json:"name"`
				Description string          `json:"description"`
				Parameters  json.RawMessage `json:"parameters"`
			} `json:"function"`
		} `json:"tools"`
	}
	wireMessage struct {
		Role       string          `json:"role"`
		Content    json.RawMessage `json:"content"`
		ToolCalls  []wireToolCall  `json:"tool_calls,omitempty"`
		ToolCallID string          `json:"tool_call_id,omitempty"`
	}
	wireToolCall struct {
		Index    *int   `json:"index,omitempty"`
		ID       string `json:"id,omitempty"`
		Type     string `json:"type,omitempty"`
		Function struct {
			Name      string `json:"name,omitempty"`
			Arguments string `json:"arguments"`
		} `json:"function"`
	}
)

// DecodeChatRequest decodes a chat-completions body.
func DecodeChatRequest(body []byte) (*ChatRequest, error) {
	var w wireRequest
	if err := json.Unmarshal(body, &w); err != nil {
		return nil, err
	}
	r := &ChatRequest{Model: w.Model, Stream: w.Stream, Raw: json.RawMessage(body)}
	for _, m := range w.Messages {
		text, err := flatten(m.Content)
		if err != nil {
			return nil, fmt.Errorf("message %d content: %w", len(r.Messages), err)
		}
		cm := ChatMessage{Role: m.Role, Content: text, ToolCallID: m.ToolCallID}
		for _, tc := range m.ToolCalls {
			cm.ToolCalls = append(cm.ToolCalls, ToolCall{ID: tc.ID, Name: tc.Function.Name, Arguments: tc.Function.Arguments})
		}
		r.Messages = append(r.Messages, cm)
	}
	for _, t := range w.Tools {
		r.Tools = append(r.Tools, ToolSpec{Name: t.Function.Name, Description: t.Function.Description, Parameters: t.Function.Parameters})
	}
	return r, nil
}

// flatten turns content, a string or an array of parts, into text.
func flatten(raw json.RawMessage) (string, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return "", nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		return s, nil
	}
	var parts []struct {
		Type string `json:"type"`
		Text string `json:"text"`
	}
	if err := json.Unmarshal(raw, &parts); err != nil {
		return "", err
	}
	var texts []string
	for _, p := range parts {
		if p.Text != "" {
			texts = append(texts, p.Text)
		}
	}
	return strings.Join(texts, "\n"), nil
}

func (o *OpenAI) chat(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return
	}
	req, err := DecodeChatRequest(body)
	if err != nil {
		o.fail("decode request: %v: %s", err, body)
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	o.record(req)
	var reply Reply
	if req.IsTitle() {
		reply = Say("Test session")
	} else {
		reply = o.script(req)
	}
	id := fmt.Sprintf("chatcmpl-%d", req.Seq)
	created := time.Now().Unix()
	if !req.Stream {
		if !o.hold(r.Context(), reply.Hold) {
			return
		}
		msg := map[string]any{"role": "assistant", "content": reply.Partial + reply.Text}
		if len(reply.ToolCalls) > 0 {
			msg["tool_calls"] = wireCalls(reply.ToolCalls, false)
		}
		writeJSON(w, map[string]any{
			"id": id, "object": "chat.completion", "created": created, "model": req.Model,
			"choices": []any{map[string]any{"index": 0, "message": msg, "finish_reason": finishReason(reply)}},
			"usage":   usage(),
		})
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	fl, _ := w.(http.Flusher)
	send := func(v any) {
		b, _ := json.Marshal(v)
		fmt.Fprintf(w, "data: %s\n\n", b)
		if fl != nil {
			fl.Flush()
		}
	}
	chunk := func(delta map[string]any, finish any) map[string]any {
		return map[string]any{
			"id": id, "object": "chat.completion.chunk", "created": created, "model": req.Model,
			"choices": []any{map[string]any{"index": 0, "delta": delta, "finish_reason": finish}},
		}
	}
	send(chunk(map[string]any{"role": "assistant", "content": reply.Partial}, nil))
	if !o.hold(r.Context(), reply.Hold) {
		return
	}
	if reply.Text != "" {
		send(chunk(map[string]any{"content": reply.Text}, nil))
	}
	if len(reply.ToolCalls) > 0 {
		send(chunk(map[string]any{"tool_calls": wireCalls(reply.ToolCalls, true)}, nil))
	}
	last := chunk(map[string]any{}, finishReason(reply))
	last["usage"] = usage()
	send(last)
	fmt.Fprint(w, "data: [DONE]\n\n")
	if fl != nil {
		fl.Flush()
	}
}

// hold waits for the reply's Hold; false when the request or the server
// ended first.
func (o *OpenAI) hold(ctx context.Context, hold <-chan struct{}) bool {
	if hold == nil {
		return true
	}
	select {
	case <-hold:
		return true
	case <-ctx.Done():
	case <-o.closed:
	}
	return false
}

func wireCalls(calls []ToolCall, indexed bool) []wireToolCall {
	out := make([]wireToolCall, len(calls))
	for i, c := range calls {
		wc := wireToolCall{ID: c.ID, Type: "function"}
		if indexed {
			wc.Index = &i
		}
		wc.Function.Name, wc.Function.Arguments = c.Name, c.Arguments
		out[i] = wc
	}
	return out
}

func finishReason(r Reply) string {
	if len(r.ToolCalls) > 0 {
		return "tool_calls"
	}
	return "stop"
}

func usage() map[string]any {
	return map[string]any{"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}
