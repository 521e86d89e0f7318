package opencode_test

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/delegations/delegations/cmd/delegations/internal/hosttest"
)

// BenchmarkOpenCodeNotify measures, with the real OpenCode and the plugin,
// what a user waits for and what the plugin adds, one delegation per
// iteration:
//
//   - ms/idle-to-notified-p50, -p99: from the child session going idle to
//     the terminal notification's text reaching the parent (both seen on
//     OpenCode's event stream by this process). It includes the child's
//     last messages being read, a small-model request for the title, the
//     complete command (two durable commits and the artifact's fsyncs),
//     the daemon's stream, and OpenCode storing the message.
//   - ms/direct-delivery-p50: the baseline: the same kind of message sent
//     to the parent by this process (prompt_async, noReply), to its text
//     reaching the parent. notified/direct is the ratio of the p50s.
//   - ms/delegate-tool-p50 against ms/echo-tool-p50: the delegate tool's
//     execution as OpenCode times it (register, child session created and
//     prompted, start, active), against a tool that does nothing (the
//     import-free echo plugin); delegate/echo is the plugin's added cost
//     per delegation, as the parent's turn sees it.
//
// Run: bash .ci/hosts opencode, then
// go test ./cmd/delegations/opencode -run '^$' -bench OpenCodeNotify -benchtime 20x
func BenchmarkOpenCodeNotify(b *testing.B) {
	echo := filepath.Join(hosttest.RepoRoot(b), "cmd", "delegations", "internal", "hosttest", "testdata", "echo.ts")
	w := newWorld(b, worldOptions{plugins: []string{echo}})
	parent := w.oc.CreateSession("parent")

	// Event times as this process receives them.
	var mu sync.Mutex
	idleAt := map[string]time.Time{} // session → first idle
	textAt := map[string]time.Time{} // a marker → when a parent part first held it
	var markers []string             // what to look for in the parent's parts
	changed := make(chan struct{})   // closed and replaced at every event
	watch := func(m string) { mu.Lock(); markers = append(markers, m); mu.Unlock() }
	go func() {
		for ev := range w.oc.Events(w.ctx) {
			now := time.Now()
			var p struct {
				SessionID string `json:"sessionID"`
				Part      struct {
					SessionID string `json:"sessionID"`
					Type      string `json:"type"`
					Text      string `json:"text"`
				} `json:"part"`
			}
			json.Unmarshal(ev.Properties, &p)
			mu.Lock()
			switch {
			case ev.Type == "session.idle":
				if _, ok := idleAt[p.SessionID]; !ok {
					idleAt[p.SessionID] = now
				}
			case ev.Type == "message.part.updated" && p.Part.SessionID == parent && p.Part.Type == "text":
				for _, m := range markers {
					if _, ok := textAt[m]; !ok && strings.Contains(p.Part.Text, m) {
						textAt[m] = now
					}
				}
			}
			close(changed)
			changed = make(chan struct{})
			mu.Unlock()
		}
	}()
	// await waits until cond holds over the maps the event goroutine fills.
	await := func(what string, cond func() bool) {
		b.Helper()
		for {
			mu.Lock()
			ok, ch := cond(), changed
			mu.Unlock()
			if ok {
				return
			}
			select {
			case <-ch:
			case <-w.ctx.Done():
				b.Fatalf("%s never happened", what)
			}
		}
	}

	var notified, direct []time.Duration
	b.ResetTimer()
	for i := range b.N {
		name := fmt.Sprintf("b%d", i)
		id := w.delegate(parent, name)
		watch("<task-id>" + id + "</task-id>")
		w.awaitWake(parent)
		child := w.show(id).SessionID
		await("the notification of "+id, func() bool {
			_, a := idleAt[child]
			_, b := textAt["<task-id>"+id+"</task-id>"]
			return a && b
		})
		mu.Lock()
		notified = append(notified, textAt["<task-id>"+id+"</task-id>"].Sub(idleAt[child]))
		mu.Unlock()

		mark := fmt.Sprintf("DIRECT-%d", i)
		watch(mark)
		sent := time.Now()
		w.oc.PromptAsync(parent, mark, hosttest.PromptOptions{NoReply: true, Synthetic: true})
		await("the direct message "+mark, func() bool { _, ok := textAt[mark]; return ok })
		mu.Lock()
		direct = append(direct, textAt[mark].Sub(sent))
		mu.Unlock()

		w.oc.PromptAsync(parent, fmt.Sprintf("echo: %d", i), hosttest.PromptOptions{})
		if w.model.Await(w.ctx, func(r *hosttest.ChatRequest) bool { _, ok := r.ToolResult(fmt.Sprintf("call_echo_%d", i)); return ok }) == nil {
			b.Fatal("no request after echo")
		}
		if err := w.oc.AwaitIdle(w.ctx, parent); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	delegateTool, echoTool := toolTimes(w.oc.Messages(parent))
	if len(delegateTool) != b.N || len(echoTool) != b.N {
		b.Fatalf("timed %d delegate and %d echo tool calls, want %d each", len(delegateTool), len(echoTool), b.N)
	}
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	b.ReportMetric(ms(pct(notified, 50)), "ms/idle-to-notified-p50")
	b.ReportMetric(ms(pct(notified, 99)), "ms/idle-to-notified-p99")
	b.ReportMetric(ms(pct(direct, 50)), "ms/direct-delivery-p50")
	b.ReportMetric(float64(pct(notified, 50))/float64(pct(direct, 50)), "notified/direct")
	b.ReportMetric(ms(pct(delegateTool, 50)), "ms/delegate-tool-p50")
	b.ReportMetric(ms(pct(echoTool, 50)), "ms/echo-tool-p50")
	b.ReportMetric(float64(pct(delegateTool, 50))/float64(pct(echoTool, 50)), "delegate/echo")
}

// toolTimes returns how long OpenCode timed each delegate and echo call.
func toolTimes(msgs []hosttest.Message) (delegate, echo []time.Duration) {
	for _, m := range msgs {
		for _, p := range m.Parts {
			var tp struct {
				Type  string `json:"type"`
				Tool  string `json:"tool"`
				State struct {
					Status string `json:"status"`
					Time   struct {
						Start, End int64
					} `json:"time"`
				} `json:"state"`
			}
			if json.Unmarshal(p.Raw, &tp) != nil || tp.Type != "tool" || tp.State.Status != "completed" {
				continue
			}
			d := time.Duration(tp.State.Time.End-tp.State.Time.Start) * time.Millisecond
			switch tp.Tool {
			case "delegate":
				delegate = append(delegate, d)
			case "echo":
				echo = append(echo, d)
			}
		}
	}
	return delegate, echo
}

// pct is the p-th percentile of ds (nearest rank).
func pct(ds []time.Duration, p int) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	i := (len(s)*p + 99) / 100
	return s[max(i-1, 0)]
}
