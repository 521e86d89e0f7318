package hosttest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
)

// Anthropic is a scripted fake of the Anthropic Messages API on 127.0.0.1,
// enough for Claude Code: POST /v1/messages with stream: true, answered
// with the Messages server-sent events (message_start,
// content_block_start/delta/stop, message_delta, message_stop), text
// blocks and tool_use blocks. Every request is recorded. Point the host at
// it with AnthropicEnv.
type Anthropic struct {
	URL string

	script func(*MessagesRequest) AnthropicReply

	mu       sync.Mutex
	requests []*MessagesRequest
	changed  chan struct{} // closed and replaced on every request
	n        int           // message ids
}

// AnthropicReply is what the fake model answers: text, then tool calls (a reply
// with tool calls stops with "tool_use", else "end_turn").
type AnthropicReply struct {
	Text  string
	Tools []ToolUse
}

// ToolUse is one tool call in a AnthropicReply. An empty ID gets a fresh one.
type ToolUse struct {
	ID    string
	Name  string
	Input any
}

// MessagesRequest is one request the host sent, decoded.
type MessagesRequest struct {
	Path     string // with the query, e.g. /v1/messages?beta=true
	Body     []byte
	Model    string
	Stream   bool
	System   []string // the system blocks' texts
	Messages []AnthropicMessage
	Tools    []string // the tools offered, by name
}

// AnthropicMessage is one entry of a request's messages. Content blocks are kept
// raw; Text joins the text (and tool_result) blocks.
type AnthropicMessage struct {
	Role    string
	Content []ContentBlock
}

// ContentBlock is one block of a message.
type ContentBlock struct {
	Type      string          `json:"type"`
	Text      string          `json:"text,omitempty"`
	ID        string          `json:"id,omitempty"`
	Name      string          `json:"name,omitempty"`
	Input     json.RawMessage `json:"input,omitempty"`
	ToolUseID string          `json:"tool_use_id,omitempty"`
	Content   json.RawMessage `json:"content,omitempty"` // tool_result: a string or blocks
}

// StartAnthropic starts a fake Messages API answering with script, which
// sees each request in turn (calls are serialised). It stops at the end of
// the test.
func StartAnthropic(tb testing.TB, script func(*MessagesRequest) AnthropicReply) *Anthropic {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("fake Anthropic API: %v", err)
	}
	a := &Anthropic{URL: "http://" + ln.Addr().String(), script: script, changed: make(chan struct{})}
	srv := &http.Server{Handler: a}
	go srv.Serve(ln)
	tb.Cleanup(func() { srv.Close() })
	return a
}

// AnthropicEnv is the environment that points Claude Code at the fake:
// its base URL, a fake key, and no traffic anywhere else.
func (a *Anthropic) AnthropicEnv() []string {
	return []string{
		"ANTHROPIC_BASE_URL=" + a.URL,
		"ANTHROPIC_API_KEY=fake",
		"DISABLE_TELEMETRY=1",
		"DISABLE_ERROR_REPORTING=1",
		"DISABLE_AUTOUPDATER=1",
		"CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1",
	}
}

// Requests returns the requests received so far, in order.
func (a *Anthropic) Requests() []*MessagesRequest {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]*MessagesRequest(nil), a.requests...)
}

func (a *Anthropic) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	req := &MessagesRequest{Path: r.URL.RequestURI(), Body: body}
	if r.Method != http.MethodPost || r.URL.Path != "/v1/messages" {
		a.record(req)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusNotFound)
		fmt.Fprintf(w, `{"type":"error","error":{"type":"not_found_error","message":"the fake serves only POST /v1/messages, not %s %s"}}`, r.Method, r.URL.Path)
		return
	}
	if err := req.decode(); err != nil {
		a.record(req)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		fmt.Fprintf(w, `{"type":"error","error":{"type":"invalid_request_error","message":%q}}`, err.Error())
		return
	}
	a.mu.Lock()
	reply := a.script(req)
	a.n++
	msgID := fmt.Sprintf("msg_fake%04d", a.n)
	a.requests = append(a.requests, req)
	close(a.changed)
	a.changed = make(chan struct{})
	a.mu.Unlock()
	if !req.Stream {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(message(msgID, req.Model, reply))
		return
	}
	writeStream(w, msgID, req.Model, reply)
}

func (a *Anthropic) record(req *MessagesRequest) {
	a.mu.Lock()
	a.requests = append(a.requests, req)
	close(a.changed)
	a.changed = make(chan struct{})
	a.mu.Unlock()
}

func (r *MessagesRequest) decode() error {
	var body struct {
		Model    string          `json:"model"`
		Stream   bool            `json:"stream"`
		System   json.RawMessage `json:"system"`
		Messages []struct {
			Role    string          `json:"role"`
			Content json.RawMessage `json:"content"`
		} `json:"messages"`
		Tools []struct {
			Name string `json:"name"`
		} `json:"tools"`
	}
	if err := json.Unmarshal(r.Body, &body); err != nil {
		return fmt.Errorf("decode the request: %v", err)
	}
	r.Model, r.Stream = body.Model, body.Stream
	sys, err := blocks(body.System)
	if err != nil {
		return fmt.Errorf("system: %v", err)
	}
	for _, b := range sys {
		r.System = append(r.System, b.Text)
	}
	for i, m := range body.Messages {
		c, err := blocks(m.Content)
		if err != nil {
			return fmt.Errorf("messages[%d]: %v", i, err)
		}
		r.Messages = append(r.Messages, AnthropicMessage{Role: m.Role, Content: c})
	}
	for _, t := range body.Tools {
		r.Tools = append(r.Tools, t.Name)
	}
	return nil
}

// blocks decodes content that is a string or an array of blocks.
func blocks(raw json.RawMessage) ([]ContentBlock, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	if raw[0] == '"' {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return nil, err
		}
		return []ContentBlock{{Type: "text", Text: s}}, nil
	}
	var bs []ContentBlock
	err := json.Unmarshal(raw, &bs)
	return bs, err
}

// Subagent reports whether a sub-agent sent the request: Claude Code marks
// it with cc_is_subagent=true; in the first system block.
func (r *MessagesRequest) Subagent() bool {
	return len(r.System) > 0 && strings.Contains(r.System[0], "cc_is_subagent=true;")
}

// Text joins a message's text and tool results.
func (m AnthropicMessage) Text() string {
	var b strings.Builder
	for _, c := range m.Content {
		switch c.Type {
		case "text":
			b.WriteString(c.Text)
		case "tool_result":
			if bs, err := blocks(c.Content); err == nil {
				for _, x := range bs {
					b.WriteString(x.Text)
				}
			}
		}
	}
	return b.String()
}

// LastUser returns the last user message (entries with role "system",
// which carry the environment and hook contexts, are not users).
func (r *MessagesRequest) LastUser() (AnthropicMessage, bool) {
	for i := len(r.Messages) - 1; i >= 0; i-- {
		if r.Messages[i].Role == "user" {
			return r.Messages[i], true
		}
	}
	return AnthropicMessage{}, false
}

// LastText is the text of the last block of the last user message: the
// prompt just typed, a tool's result, or a notification (Claude Code puts
// reminders in earlier blocks of the same message).
func (r *MessagesRequest) LastText() string {
	u, ok := r.LastUser()
	if !ok || len(u.Content) == 0 {
		return ""
	}
	return AnthropicMessage{Content: u.Content[len(u.Content)-1:]}.Text()
}

// LastToolResult returns the tool_use_id of the last tool result in the
// last user message, if it holds one (Claude Code may add text blocks
// after the results, e.g. when ToolSearch loaded a tool).
func (r *MessagesRequest) LastToolResult() (string, bool) {
	u, ok := r.LastUser()
	for i := len(u.Content) - 1; ok && i >= 0; i-- {
		if u.Content[i].Type == "tool_result" {
			return u.Content[i].ToolUseID, true
		}
	}
	return "", false
}

// ToolResult returns the result of the tool call id in the request, if
// there is one.
func (r *MessagesRequest) ToolResult(id string) (string, bool) {
	for _, m := range r.Messages {
		for _, c := range m.Content {
			if c.Type == "tool_result" && c.ToolUseID == id {
				return AnthropicMessage{Content: []ContentBlock{c}}.Text(), true
			}
		}
	}
	return "", false
}

// Contains reports whether the raw request body holds s (JSON-escaped as
// the body would carry it).
func (r *MessagesRequest) Contains(s string) bool {
	q, _ := marshalNoHTML(s)
	return bytes.Contains(r.Body, q[1:len(q)-1])
}

// Count is how many times the raw request body holds s (JSON-escaped).
func (r *MessagesRequest) Count(s string) int {
	q, _ := marshalNoHTML(s)
	return bytes.Count(r.Body, q[1:len(q)-1])
}

func marshalNoHTML(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	err := enc.Encode(v)
	return bytes.TrimSuffix(b.Bytes(), []byte("\n")), err
}

// HasTool reports whether the request offers the tool name.
func (r *MessagesRequest) HasTool(name string) bool {
	for _, t := range r.Tools {
		if t == name {
			return true
		}
	}
	return false
}

func (r AnthropicReply) stopReason() string {
	if len(r.Tools) > 0 {
		return "tool_use"
	}
	return "end_turn"
}

func toolID(msgID string, i int, t ToolUse) string {
	if t.ID != "" {
		return t.ID
	}
	return fmt.Sprintf("toolu_%s_%d", strings.TrimPrefix(msgID, "msg_"), i)
}

func anthropicUsage() map[string]int { return map[string]int{"input_tokens": 10, "output_tokens": 10} }

// message is a non-streamed answer.
func message(id, model string, r AnthropicReply) map[string]any {
	var content []map[string]any
	if r.Text != "" {
		content = append(content, map[string]any{"type": "text", "text": r.Text})
	}
	for i, t := range r.Tools {
		content = append(content, map[string]any{"type": "tool_use", "id": toolID(id, i, t), "name": t.Name, "input": t.Input})
	}
	return map[string]any{
		"id": id, "type": "message", "role": "assistant", "model": model, "content": content,
		"stop_reason": r.stopReason(), "stop_sequence": nil, "usage": anthropicUsage(),
	}
}

// writeStream answers with the Messages streaming events.
func writeStream(w http.ResponseWriter, id, model string, r AnthropicReply) {
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	event := func(name string, data map[string]any) {
		data["type"] = name
		b, _ := json.Marshal(data)
		fmt.Fprintf(w, "event: %s\ndata: %s\n\n", name, b)
	}
	event("message_start", map[string]any{"message": map[string]any{
		"id": id, "type": "message", "role": "assistant", "model": model, "content": []any{},
		"stop_reason": nil, "stop_sequence": nil, "usage": map[string]int{"input_tokens": 10, "output_tokens": 1},
	}})
	index := 0
	if r.Text != "" {
		event("content_block_start", map[string]any{"index": index, "content_block": map[string]any{"type": "text", "text": ""}})
		event("content_block_delta", map[string]any{"index": index, "delta": map[string]any{"type": "text_delta", "text": r.Text}})
		event("content_block_stop", map[string]any{"index": index})
		index++
	}
	for i, t := range r.Tools {
		input, _ := json.Marshal(t.Input)
		event("content_block_start", map[string]any{"index": index, "content_block": map[string]any{
			"type": "tool_use", "id": toolID(id, i, t), "name": t.Name, "input": map[string]any{},
		}})
		event("content_block_delta", map[string]any{"index": index, "delta": map[string]any{"type": "input_json_delta", "partial_json": string(input)}})
		event("content_block_stop", map[string]any{"index": index})
		index++
	}
	event("message_delta", map[string]any{
		"delta": map[string]any{"stop_reason": r.stopReason(), "stop_sequence": nil},
		"usage": map[string]int{"output_tokens": 10},
	})
	event("message_stop", map[string]any{})
	if f, ok := w.(http.Flusher); ok {
		f.Flush()
	}
}
