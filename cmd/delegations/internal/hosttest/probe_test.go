package hosttest_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/delegations/delegations/cmd/delegations/internal/hosttest"
)

// probe drives testdata/probe.ts: calls of the plugin's own SDK client,
// made from the plugin's background code.
type probe struct {
	t   *testing.T
	url string
}

type probeResult struct {
	MS     int             `json:"ms"`
	Data   json.RawMessage `json:"data"`
	Error  json.RawMessage `json:"error"`
	Status int             `json:"status"`
	Thrown string          `json:"thrown"`
}

func startProbe(t *testing.T, oc *hosttest.OpenCode) *probe {
	t.Helper()
	oc.ToolIDs() // loads the plugins
	b, err := os.ReadFile(filepath.Join(oc.Project, ".probe-url"))
	if err != nil {
		t.Fatalf("probe plugin did not start: %v", err)
	}
	return &probe{t: t, url: strings.TrimRight(strings.TrimSpace(string(b)), "/")}
}

// call runs method on the plugin's client; safe from any goroutine.
func (p *probe) call(ctx context.Context, method string, args any) (probeResult, error) {
	b, _ := json.Marshal(map[string]any{"method": method, "args": args})
	req, err := http.NewRequestWithContext(ctx, "POST", p.url+"/call", bytes.NewReader(b))
	if err != nil {
		return probeResult{}, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return probeResult{}, err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var r probeResult
	if err := json.Unmarshal(body, &r); err != nil {
		return r, err
	}
	return r, nil
}

func (p *probe) mustCall(ctx context.Context, method string, args any) probeResult {
	p.t.Helper()
	r, err := p.call(ctx, method, args)
	if err != nil {
		p.t.Fatalf("probe %s: %v", method, err)
	}
	if r.Thrown != "" || (len(r.Error) > 0 && string(r.Error) != "null") {
		p.t.Fatalf("probe %s: thrown %q error %s", method, r.Thrown, r.Error)
	}
	return r
}

func startWithProbe(t *testing.T, model *hosttest.OpenAI, cfg map[string]any) (*hosttest.OpenCode, *probe) {
	oc := hosttest.StartOpenCode(t, hosttest.OpenCodeOptions{
		Model:   model,
		Config:  cfg,
		Plugins: []string{filepath.Join("testdata", "probe.ts")},
	})
	return oc, startProbe(t, oc)
}

// notify is the plugin's notification call: a synthetic text part
// appended to session, with or without a reply.
func (p *probe) notify(ctx context.Context, session, text string, noReply bool) probeResult {
	p.t.Helper()
	return p.mustCall(ctx, "session.promptAsync", map[string]any{
		"path": map[string]any{"id": session},
		"body": map[string]any{"noReply": noReply, "parts": []any{map[string]any{"type": "text", "text": text, "synthetic": true}}},
	})
}
