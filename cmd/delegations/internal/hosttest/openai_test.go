package hosttest_test

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/delegations/delegations/cmd/delegations/internal/hosttest"
)

// post sends a chat request to the fake and returns the data lines of its
// answer (the whole body when it is not a stream).
func post(t *testing.T, ctx context.Context, o *hosttest.OpenAI, body string) []string {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctx, "POST", o.URL+"/v1/chat/completions", strings.NewReader(body))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var lines []string
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if l := sc.Text(); l != "" {
			lines = append(lines, strings.TrimPrefix(l, "data: "))
		}
	}
	return lines
}

const chatBody = `{"model":"fake-model","stream":true,"messages":[
 {"role":"system","content":"You are helpful."},
 {"role":"user","content":[{"type":"text","text":"first"},{"type":"text","text":"second"}]},
 {"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function","function":{"name":"echo","arguments":"{\"text\":\"x\"}"}}]},
 {"role":"tool","tool_call_id":"call_1","content":"x"}],
 "tools":[{"type":"function","function":{"name":"echo","description":"Echo.","parameters":{"type":"object"}}}]}`

func TestOpenAIDecodeAndStream(t *testing.T) {
	ctx := testContext(t)
	o := hosttest.NewOpenAI(t, func(r *hosttest.ChatRequest) hosttest.Reply {
		return hosttest.Reply{Partial: "a", Text: "b", ToolCalls: []hosttest.ToolCall{{ID: "call_2", Name: "echo", Arguments: `{"text":"y"}`}}}
	})
	lines := post(t, ctx, o, chatBody)
	r := o.Await(ctx, nil)
	if r.System() != "You are helpful." || r.LastUser() != "first\nsecond" || !equal(r.ToolNames(), "echo") {
		t.Errorf("decoded %+v", r)
	}
	if out, ok := r.ToolResult("call_1"); !ok || out != "x" {
		t.Errorf("ToolResult = %q, %v", out, ok)
	}
	if tc := r.Messages[2].ToolCalls; len(tc) != 1 || tc[0] != (hosttest.ToolCall{ID: "call_1", Name: "echo", Arguments: `{"text":"x"}`}) {
		t.Errorf("tool calls %+v", tc)
	}
	if lines[len(lines)-1] != "[DONE]" {
		t.Fatalf("stream does not end with [DONE]: %q", lines)
	}
	var text, finish string
	var calls []string
	for _, l := range lines[:len(lines)-1] {
		var c struct {
			Object  string `json:"object"`
			Choices []struct {
				Delta struct {
					Content   string `json:"content"`
					ToolCalls []struct {
						Index    int    `json:"index"`
						ID       string `json:"id"`
						Type     string `json:"type"`
						Function struct{ Name, Arguments string }
					} `json:"tool_calls"`
				} `json:"delta"`
				FinishReason *string `json:"finish_reason"`
			} `json:"choices"`
		}
		if err := json.Unmarshal([]byte(l), &c); err != nil || c.Object != "chat.completion.chunk" {
			t.Fatalf("chunk %q: %v", l, err)
		}
		text += c.Choices[0].Delta.Content
		for _, tc := range c.Choices[0].Delta.ToolCalls {
			calls = append(calls, tc.ID+" "+tc.Type+" "+tc.Function.Name+" "+tc.Function.Arguments)
		}
		if f := c.Choices[0].FinishReason; f != nil {
			finish = *f
		}
	}
	if text != "ab" || finish != "tool_calls" || !equal(calls, `call_2 function echo {"text":"y"}`) {
		t.Errorf("streamed text %q, finish %q, calls %q", text, finish, calls)
	}
}

// Partial is sent before Hold is closed: a client sees it while the reply
// is held.
func TestOpenAIHold(t *testing.T) {
	ctx := testContext(t)
	hold := make(chan struct{})
	o := hosttest.NewOpenAI(t, func(r *hosttest.ChatRequest) hosttest.Reply {
		return hosttest.Reply{Partial: "partial", Hold: hold, Text: "rest"}
	})
	req, _ := http.NewRequestWithContext(ctx, "POST", o.URL+"/v1/chat/completions", strings.NewReader(`{"stream":true,"messages":[{"role":"user","content":"hi"}]}`))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	if !sc.Scan() || !strings.Contains(sc.Text(), `"content":"partial"`) {
		t.Fatalf("first line %q", sc.Text())
	}
	close(hold)
	var rest strings.Builder
	for sc.Scan() {
		rest.WriteString(sc.Text())
	}
	if !strings.Contains(rest.String(), `"content":"rest"`) || !strings.HasSuffix(rest.String(), "[DONE]") {
		t.Errorf("after hold: %q", rest.String())
	}
}

func TestOpenAINonStreaming(t *testing.T) {
	ctx := testContext(t)
	o := hosttest.NewOpenAI(t, nil)
	lines := post(t, ctx, o, `{"model":"m","messages":[{"role":"user","content":"hi"}]}`)
	var c struct {
		Choices []struct {
			Message      struct{ Role, Content string }
			FinishReason string `json:"finish_reason"`
		}
	}
	if err := json.Unmarshal([]byte(strings.Join(lines, "")), &c); err != nil || c.Choices[0].Message.Content != "ok" || c.Choices[0].FinishReason != "stop" {
		t.Errorf("answer %q: %v", lines, err)
	}
}

// Title requests are answered by the fake itself, recorded all the same.
func TestOpenAITitle(t *testing.T) {
	ctx := testContext(t)
	o := hosttest.NewOpenAI(t, func(r *hosttest.ChatRequest) hosttest.Reply {
		t.Errorf("script called for %q", r.System())
		return hosttest.Reply{}
	})
	post(t, ctx, o, `{"stream":true,"messages":[{"role":"system","content":"You are a title generator. You output ONLY a thread title. Nothing else."},{"role":"user","content":"hi"}]}`)
	if r := o.Await(ctx, (*hosttest.ChatRequest).IsTitle); r == nil {
		t.Error("title request not recorded")
	}
}

func FuzzDecodeChatRequest(f *testing.F) {
	f.Add([]byte(chatBody))
	f.Add([]byte(`{"messages":[{"role":"user","content":[{"type":"image_url"}]}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := hosttest.DecodeChatRequest(b)
		if err == nil {
			r.System()
			r.LastUser()
			r.ToolNames()
			r.IsTitle()
		}
	})
}

func equal(got []string, want ...string) bool {
	if len(got) != len(want) {
		return false
	}
	for i := range got {
		if got[i] != want[i] {
			return false
		}
	}
	return true
}
