package main

// End-to-end tests of what clients send: requests the daemon must refuse,
// and the CLI giving the same answers with and without a daemon. The
// harness is in e2e_test.go.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/delegations/delegations/cmd/delegations/api"
	"github.com/delegations/delegations/fsm"
)

// Body limits of the verbs, as service.go sets them: verbs without long
// texts take 64 KiB; the others 6 bytes per byte of their longest texts
// (the worst JSON escape) plus 64 KiB.
const smallLimit = 64 << 10

func textLimitOf(max int) int { return 6*max + smallLimit }

var verbLimits = map[string]int{
	"register":      textLimitOf(fsm.MaxPromptLen),
	"start":         smallLimit,
	"progress":      textLimitOf(fsm.MaxMessageLen),
	"complete":      textLimitOf(fsm.MaxResultLen + fsm.MaxDescriptionLen + fsm.MaxTitleLen),
	"fail":          textLimitOf(fsm.MaxErrorLen),
	"cancel":        textLimitOf(fsm.MaxReasonLen),
	"show":          smallLimit,
	"read":          smallLimit,
	"list":          smallLimit,
	"active":        smallLimit,
	"notifications": smallLimit,
	"ack":           textLimitOf(fsm.MaxErrorLen),
	"compact":       smallLimit,
	"replay":        smallLimit,
	"verify":        smallLimit,
	"timeline":      smallLimit,
	"import":        smallLimit,
	"backup":        smallLimit,
}

// bodyOfSize is a JSON object of exactly n bytes with one unknown field.
func bodyOfSize(n int) []byte {
	b := make([]byte, 0, n)
	b = append(b, `{"padding":"`...)
	for len(b) < n-2 {
		b = append(b, 'a')
	}
	return append(b, `"}`...)
}

// TestBadRequests sends the real daemon requests it must refuse: each
// gets its 4xx status, stable code and a message saying what is wrong,
// and none changes the log or the data directory.
func TestBadRequests(t *testing.T) {
	t.Parallel()
	data := t.TempDir()
	d := startDaemon(t, data)
	var active, done fsm.Delegation
	d.call("register", registration("ses_root", "ses_parent", "stays active"), &active)
	d.call("start", api.StartRequest{ID: active.ID}, &active)
	d.call("register", registration("ses_root", "ses_parent", "finished"), &done)
	d.call("complete", api.CompleteRequest{ID: done.ID, Result: "ok"}, &done)
	known := active.ID

	type tc struct {
		name         string
		method, path string
		body         string
		status       int
		code         string
		msg          string // the message contains this
	}
	post := func(name, verb, body string, status int, code, msg string) tc {
		return tc{name, http.MethodPost, "/v1/" + verb, body, status, code, msg}
	}
	const (
		bad       = http.StatusBadRequest
		notFound  = http.StatusNotFound
		idGrammar = "want adjective-color-animal"
		sesGramm  = "it is used as a directory name"
	)
	reg := func(edit func(*api.RegisterRequest)) string {
		r := registration("ses_root", "ses_parent", "p")
		edit(&r)
		b, _ := json.Marshal(r)
		return string(b)
	}
	cases := []tc{
		// Malformed and empty bodies.
		post("malformed JSON", "show", `{"id":`, bad, "invalid", "malformed JSON"),
		post("malformed JSON at a byte", "register", `{"agent": x}`, bad, "invalid", "malformed JSON at byte"),
		post("empty body", "show", "", bad, "invalid", "empty request body; send a JSON object with the fields id"),
		post("blank body", "list", " \n", bad, "invalid", "empty request body"),
		post("two objects", "show", `{"id":"`+known+`"}{}`, bad, "invalid", "data after the JSON object"),
		post("wrong type", "read", `{"rootSessionID":"ses_root","id":"`+known+`","waitMs":"10"}`, bad, "invalid", `field "waitMs": want a JSON int64, got string`),
		post("array", "show", `["`+known+`"]`, bad, "invalid", "want a JSON"),
		post("unknown field", "show", `{"id":"`+known+`","bogus":1}`, bad, "invalid", `unknown field "bogus"; the fields are id`),
		post("misspelt field", "progress", `{"id":"`+known+`","mesage":"x"}`, bad, "invalid", `unknown field "mesage"; the fields are id, message`),
		// Missing fields.
		post("register without project", "register", `{"rootSessionID":"r","parentSessionID":"p","agent":"a"}`, bad, "invalid", "give projectId, or projectDir"),
		post("register without root", "register", reg(func(r *api.RegisterRequest) { r.RootSessionID = "" }), bad, "invalid", "root session id: required"),
		post("register without agent", "register", reg(func(r *api.RegisterRequest) { r.Agent = "" }), bad, "invalid", "agent: required"),
		post("register with both projects", "register", reg(func(r *api.RegisterRequest) { r.ProjectDir = "/tmp" }), bad, "invalid", "not both"),
		post("register with a relative project dir", "register", reg(func(r *api.RegisterRequest) { r.ProjectID, r.ProjectDir = "", "rel/dir" }), bad, "invalid", "is not absolute"),
		post("show without id", "show", `{}`, bad, "invalid", "delegation id: required"),
		post("start without id", "start", `{}`, bad, "invalid", "delegation id: required"),
		post("read without root", "read", `{"id":"`+known+`"}`, bad, "invalid", "root session id: required"),
		post("list without root", "list", `{}`, bad, "invalid", "root session id: required"),
		post("compact without root", "compact", `{}`, bad, "invalid", "root session id: required"),
		post("ack without id", "ack", `{}`, bad, "invalid", "notification id"),
		// Unknown ids: 404, nothing recorded.
		post("show unknown", "show", `{"id":"unknown-grey-owl"}`, notFound, "not_found", `delegation "unknown-grey-owl" not found in `+data),
		post("start unknown", "start", `{"id":"unknown-grey-owl"}`, notFound, "not_found", `"unknown-grey-owl" not found`),
		post("progress unknown", "progress", `{"id":"unknown-grey-owl","message":"x"}`, notFound, "not_found", `"unknown-grey-owl" not found`),
		post("complete unknown", "complete", `{"id":"unknown-grey-owl","result":"x"}`, notFound, "not_found", `"unknown-grey-owl" not found`),
		post("fail unknown", "fail", `{"id":"unknown-grey-owl","error":"x"}`, notFound, "not_found", `"unknown-grey-owl" not found`),
		post("cancel unknown", "cancel", `{"id":"unknown-grey-owl"}`, notFound, "not_found", `"unknown-grey-owl" not found`),
		post("read unknown", "read", `{"rootSessionID":"ses_root","id":"unknown-grey-owl"}`, notFound, "not_found", `Delegation "unknown-grey-owl" not found.`),
		post("read from another root", "read", `{"rootSessionID":"ses_other","id":"`+done.ID+`"}`, notFound, "not_found", `Delegation "`+done.ID+`" not found.`),
		post("ack unknown", "ack", `{"id":"terminal:unknown-grey-owl"}`, notFound, "not_found", "unknown-grey-owl"),
		post("ack unknown kind", "ack", `{"id":"bogus:x"}`, bad, "invalid", "notification id"),
		// Ids and session ids that would leave the data directory.
		post("show ../", "show", `{"id":"../../etc/passwd"}`, bad, "invalid", idGrammar),
		post("start ../", "start", `{"id":"../x-y-z"}`, bad, "invalid", idGrammar),
		post("complete ../", "complete", `{"id":"a-b-c/../../d","result":"x"}`, bad, "invalid", idGrammar),
		post("read id ../", "read", `{"rootSessionID":"ses_root","id":"../`+known+`"}`, bad, "invalid", idGrammar),
		post("read root ../", "read", `{"rootSessionID":"../ses_root","id":"`+known+`"}`, bad, "invalid", sesGramm),
		post("register root ../", "register", reg(func(r *api.RegisterRequest) { r.RootSessionID = "../../x" }), bad, "invalid", sesGramm),
		post("register root ..", "register", reg(func(r *api.RegisterRequest) { r.RootSessionID = ".." }), bad, "invalid", sesGramm),
		post("register parent ../", "register", reg(func(r *api.RegisterRequest) { r.ParentSessionID = "../p" }), bad, "invalid", sesGramm),
		post("register session ../", "register", reg(func(r *api.RegisterRequest) { r.SessionID = "a/../../b" }), bad, "invalid", sesGramm),
		post("register project ../", "register", reg(func(r *api.RegisterRequest) { r.ProjectID = "../../etc" }), bad, "invalid", sesGramm),
		post("start session ../", "start", `{"id":"`+known+`","sessionID":"../child"}`, bad, "invalid", sesGramm),
		post("list root ../", "list", `{"rootSessionID":"../x"}`, bad, "invalid", sesGramm),
		post("active root ../", "active", `{"rootSessionID":"../"}`, bad, "invalid", sesGramm),
		post("active parent ../", "active", `{"parentSessionID":"x/../y"}`, bad, "invalid", sesGramm),
		post("notifications parent ../", "notifications", `{"parentSessionID":"../p"}`, bad, "invalid", sesGramm),
		post("compact root ../", "compact", `{"rootSessionID":"../r"}`, bad, "invalid", sesGramm),
		post("ack ../", "ack", `{"id":"terminal:../../x"}`, bad, "invalid", idGrammar),
		post("timeline ../", "timeline", `{"id":"../x"}`, bad, "invalid", idGrammar),
		post("timeline unknown", "timeline", `{"id":"unknown-grey-owl"}`, notFound, "not_found", "unknown-grey-owl"),
		post("import a relative dir", "import", `{"dir":"../legacy"}`, bad, "invalid", "is not absolute"),
		post("import without dir", "import", `{}`, bad, "invalid", "dir"),
		post("replay until garbage", "replay", `{"until":"yesterday"}`, bad, "invalid", "want a sequence number, or an RFC 3339 time"),
		// NUL bytes and invalid UTF-8.
		post("NUL in progress", "progress", `{"id":"`+known+`","message":"a\u0000b"}`, bad, "invalid", "NUL byte at offset 1"),
		post("NUL in result", "complete", `{"id":"`+known+`","result":"ok\u0000"}`, bad, "invalid", "NUL byte"),
		post("NUL in prompt", "register", reg(func(r *api.RegisterRequest) { r.Prompt = "x\x00y" }), bad, "invalid", "NUL byte"),
		post("NUL in id", "show", `{"id":"a-b-c\u0000"}`, bad, "invalid", idGrammar),
		post("NUL in agent", "register", reg(func(r *api.RegisterRequest) { r.Agent = "a\x00" }), bad, "invalid", "non-printable"),
		post("invalid UTF-8", "progress", "{\"id\":\""+known+"\",\"message\":\"\xff\xfe\"}", bad, "invalid", "not valid UTF-8"),
		post("invalid UTF-8 in id", "show", "{\"id\":\"\xc3\"}", bad, "invalid", "not valid UTF-8"),
		// Negative and out-of-range numbers.
		post("negative waitMs read", "read", `{"rootSessionID":"ses_root","id":"`+known+`","waitMs":-1}`, bad, "invalid", "waitMs -1 is outside 0..86400000"),
		post("huge waitMs read", "read", `{"rootSessionID":"ses_root","id":"`+known+`","waitMs":86400001}`, bad, "invalid", "waitMs 86400001 is outside"),
		post("negative waitMs notifications", "notifications", `{"waitMs":-5}`, bad, "invalid", "waitMs -5 is outside"),
		post("negative timeoutMs", "register", reg(func(r *api.RegisterRequest) { r.TimeoutMs = -1 }), bad, "invalid", "timeoutMs -1 is negative"),
		post("timeoutMs under a second", "register", reg(func(r *api.RegisterRequest) { r.TimeoutMs = 500 }), bad, "invalid", "want between 1s and 7 days"),
		post("timeoutMs over a week", "register", reg(func(r *api.RegisterRequest) { r.TimeoutMs = 8 * 24 * 3600 * 1000 }), bad, "invalid", "want between 1s and 7 days"),
		post("negative maxUnread", "compact", `{"rootSessionID":"ses_root","maxUnread":-1}`, bad, "invalid", "must not be negative"),
		post("bad list status", "list", `{"rootSessionID":"ses_root","status":"bogus"}`, bad, "invalid", "status"),
		post("bad list order", "list", `{"rootSessionID":"ses_root","order":"size"}`, bad, "invalid", `order is id or time, not "size"`),
		// Wrong methods and unknown endpoints.
		{"GET a verb", http.MethodGet, "/v1/show", "", http.StatusMethodNotAllowed, "method_not_allowed", "GET /v1/show; use POST"},
		{"PUT a verb", http.MethodPut, "/v1/register", "{}", http.StatusMethodNotAllowed, "method_not_allowed", "use POST"},
		{"POST events", http.MethodPost, "/v1/events", "{}", http.StatusMethodNotAllowed, "method_not_allowed", "POST /v1/events; use GET"},
		{"POST stream", http.MethodPost, "/v1/stream", "", http.StatusMethodNotAllowed, "method_not_allowed", "use GET"},
		{"DELETE status", http.MethodDelete, "/v1/status", "", http.StatusMethodNotAllowed, "method_not_allowed", "use GET"},
		post("unknown verb", "frobnicate", "{}", notFound, "no_endpoint", "/v1/frobnicate; the verbs are ack, active, backup, cancel"),
		post("serve is not a verb", "serve", "{}", notFound, "no_endpoint", "the verbs are"),
		post("clock, a test build's", "clock", `{"advanceMs":1}`, notFound, "no_endpoint", "/v1/clock; the verbs are"),
		{"root path", http.MethodGet, "/", "", notFound, "no_endpoint", "the API is under /v1/"},
		{"v2", http.MethodPost, "/v2/show", "{}", notFound, "no_endpoint", "the API is under /v1/"},
		{"nested path", http.MethodPost, "/v1/show/extra", "{}", notFound, "no_endpoint", "/v1/show/extra"},
		// The streams' parameters.
		{"events from", http.MethodGet, "/v1/events?from=x", "", bad, "invalid", "from: "},
		{"events from negative", http.MethodGet, "/v1/events?from=-1", "", bad, "invalid", "from: "},
		{"events delegation ../", http.MethodGet, "/v1/events?delegation=../x", "", bad, "invalid", idGrammar},
		{"events unknown delegation", http.MethodGet, "/v1/events?delegation=unknown-grey-owl", "", notFound, "not_found", `delegation "unknown-grey-owl" has no events`},
		{"stream parent ../", http.MethodGet, "/v1/stream?parentSessionID=../p", "", bad, "invalid", sesGramm},
		{"stream from", http.MethodGet, "/v1/stream?from=x", "", bad, "invalid", "from: "},
		{"stream Last-Event-ID", http.MethodGet, "/v1/stream", "", bad, "invalid", "Last-Event-ID"},
	}
	// Oversized bodies: one byte over each verb's limit is refused before
	// decoding; a body of exactly the limit is decoded (and refused for
	// its unknown field).
	// The daemon here is a release build; this test binary may be a test
	// build (-tags delegationstest), whose verbs add the clock.
	served := slices.DeleteFunc(api.Verbs(), func(v string) bool { return v == "clock" })
	if got := slices.Sorted(maps.Keys(verbLimits)); !slices.Equal(got, served) {
		t.Errorf("the limits table covers %v; the daemon serves %v", got, served)
	}
	for _, verb := range slices.Sorted(maps.Keys(verbLimits)) {
		limit := verbLimits[verb]
		if testing.Short() && limit > 8<<20 {
			continue
		}
		cases = append(cases,
			post(verb+" over the limit", verb, string(bodyOfSize(limit+1)), http.StatusRequestEntityTooLarge, "too_large",
				fmt.Sprintf("the body of %s is limited to %d bytes", verb, limit)),
			post(verb+" at the limit", verb, string(bodyOfSize(limit)), bad, "invalid", `unknown field "padding"`))
	}

	seq, files := d.lastSeq(), dirState(t, data)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var body []byte
			if c.method != http.MethodGet {
				body = []byte(c.body)
			}
			req, err := http.NewRequest(c.method, "http://delegations"+c.path, bytes.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			if c.name == "stream Last-Event-ID" {
				req.Header.Set("Last-Event-ID", "nope")
			}
			resp, err := d.hc.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			raw, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				t.Fatal(err)
			}
			var eb struct{ Error *api.Error }
			if err := json.Unmarshal(raw, &eb); err != nil || eb.Error == nil {
				t.Fatalf("%d: the answer is not a JSON error: %q (%v)", resp.StatusCode, raw, err)
			}
			if resp.StatusCode != c.status || eb.Error.Code != c.code || !strings.Contains(eb.Error.Message, c.msg) {
				t.Errorf("%d %s %q\nwant %d %s and a message with %q", resp.StatusCode, eb.Error.Code, eb.Error.Message, c.status, c.code, c.msg)
			}
			if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type %q", ct)
			}
			if c.status == http.StatusMethodNotAllowed && resp.Header.Get("Allow") == "" {
				t.Errorf("405 without an Allow header")
			}
			if got := d.lastSeq(); got != seq {
				t.Fatalf("the log changed: lastSeq %d, was %d", got, seq)
			}
			if got := dirState(t, data); got != files {
				t.Fatalf("the data directory changed:\n%s\nwas\n%s", got, files)
			}
		})
	}
	// None of it disturbed the delegations.
	var r fsm.Delegation
	d.call("show", api.IDRequest{ID: known}, &r)
	if r.State != fsm.Running || r.Version != active.Version {
		t.Errorf("the active delegation changed: %+v", r)
	}
}

// cliStep is one command of TestCLISameWithAndWithoutDaemon's script.
// Arguments may name the ids registered before as {1}, {2}.
type cliStep struct {
	stdin string
	args  []string
	code  int
}

// What differs between two runs of the same script besides the ids.
var (
	isoTime     = regexp.MustCompile(`\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z`)
	artifactNum = regexp.MustCompile(`"artifact(Size|Hash)":("[0-9a-f]+"|\d+)`)
	hashText    = regexp.MustCompile(`\d+ bytes, xxhash [0-9a-f]{16}`)
	msField     = regexp.MustCompile(`"(\w+Ms)":\d+`)
	duration    = regexp.MustCompile(`\b(\d+(\.\d+)?(h|m|s|ms|µs|ns))+\b`)
	spaces      = regexp.MustCompile(` {2,}`)
)

// TestCLISameWithAndWithoutDaemon runs one script of CLI commands twice,
// once on a data directory without a daemon (the CLI opens the log) and
// once through a daemon serving another: stdout, stderr and exit codes
// are the same once ids, times and the directory are normalised.
func TestCLISameWithAndWithoutDaemon(t *testing.T) {
	t.Parallel()
	reg := func(extra ...string) []string {
		return append([]string{"register", "--root-session", "ses_root", "--parent-session", "ses_parent",
			"--agent", "researcher", "--project", "0123456789abcdef"}, extra...)
	}
	script := []cliStep{
		{args: reg("--idempotency-key", "k1", "--prompt", "Find the flaky test")},
		{args: append([]string{"--json"}, reg("--idempotency-key", "k1", "--prompt", "Find the flaky test")...)},
		{stdin: "Second task\nfrom stdin\n", args: append([]string{"--json"}, reg("--idempotency-key", "k2", "--timeout", "1h", "--model", "m1")...)},
		{args: []string{"start", "--session", "ses_child1", "{1}"}},
		{args: []string{"--json", "start", "{2}"}},
		{args: []string{"progress", "--message", "half way", "{1}"}},
		{stdin: "reading the logs\n", args: []string{"progress", "{2}"}},
		{stdin: "The cache races.\nDetails follow.", args: []string{"complete", "--title", "The cache races", "{1}"}},
		{args: []string{"--json", "show", "{1}"}},
		{args: []string{"show", "{1}"}},
		{args: []string{"show", "{2}"}},
		{args: []string{"--json", "read", "--root-session", "ses_root", "{2}"}},
		{args: []string{"read", "--root-session", "ses_root", "{2}"}},
		// The default order is by id, and the ids differ between the runs.
		{args: []string{"list", "--root-session", "ses_root", "--order", "time"}},
		{args: []string{"--json", "list", "--root-session", "ses_root", "--order", "time"}},
		{args: []string{"notifications"}},
		{args: []string{"--json", "notifications", "--parent-session", "ses_parent"}},
		{args: []string{"ack", "terminal:{1}"}},
		{args: []string{"--json", "ack", "terminal:{1}"}},
		{args: []string{"--json", "list", "--root-session", "ses_root", "--unread"}},
		{args: []string{"list", "--root-session", "ses_root", "--unread"}},
		{args: []string{"compact", "--root-session", "ses_root"}},
		{args: []string{"--json", "compact", "--root-session", "ses_root", "--brief"}},
		{args: []string{"active"}},
		{args: []string{"--json", "active", "--root-session", "ses_root"}},
		{args: []string{"read", "--root-session", "ses_root", "{1}"}},
		{args: []string{"--json", "read", "--root-session", "ses_root", "{1}"}},
		{args: []string{"fail", "--error", "boom", "{2}"}},
		{args: []string{"--json", "notifications"}},
		{args: []string{"ack", "--failed", "host busy", "terminal:{2}"}},
		{args: []string{"--json", "notifications"}},
		{args: []string{"compact", "--root-session", "ses_root"}},
		// Refusals.
		{args: []string{"show", "unknown-grey-owl"}, code: 1},
		{args: []string{"--json", "show", "unknown-grey-owl"}, code: 1},
		{args: []string{"complete", "--result", "x", "unknown-grey-owl"}, code: 1},
		{args: []string{"progress", "--message", "too late", "{1}"}, code: 1},
		{args: []string{"--json", "cancel", "{1}"}, code: 1},
		{args: []string{"show", "../../etc/passwd"}, code: 1},
		{args: []string{"--json", "read", "--root-session", "../x", "{1}"}, code: 1},
		{args: []string{"read", "--root-session", "ses_other", "{1}"}, code: 1},
		{args: []string{"--json", "read", "--root-session", "ses_other", "{1}"}, code: 1},
		{args: []string{"ack", "terminal:unknown-grey-owl"}, code: 1},
		{args: []string{"--json", "register", "--root-session", "r", "--parent-session", "p", "--agent", "a", "--project", "p", "--timeout", "9000h"}, code: 1},
		{args: []string{"list", "--root-session", "ses_root", "--status", "bogus"}, code: 2},
		{args: []string{"events", "--delegation", "unknown-grey-owl"}, code: 1},
		// The log, refusals included.
		{args: []string{"events"}},
		{args: []string{"--json", "events", "--delegation", "{1}"}},
		{args: []string{"events", "--from", "5", "--delegation", "{2}"}},
		{args: []string{"--json", "show", "{1}"}},
		// The inspection verbs.
		{args: []string{"timeline", "{1}"}},
		{args: []string{"--json", "timeline", "{2}"}},
		{args: []string{"verify"}},
		{args: []string{"--json", "verify"}},
		{args: []string{"replay"}},
		{args: []string{"--json", "replay"}},
		{args: []string{"timeline", "unknown-grey-owl"}, code: 1},
	}

	embedded, served := t.TempDir(), t.TempDir()
	d := startDaemon(t, served)
	a := runScript(t, embedded, script)
	b := runScript(t, served, script)
	for i, st := range script {
		if a[i] != b[i] {
			t.Errorf("step %d (%s) differs\nwithout a daemon: %+v\nthrough a daemon: %+v", i, strings.Join(st.args, " "), a[i], b[i])
		}
		if a[i].code != st.code {
			t.Errorf("step %d (%s): exit %d, want %d\n%+v", i, strings.Join(st.args, " "), a[i].code, st.code, a[i])
		}
	}
	// The daemon served them: the embedded runs would have found the log
	// locked. And it saw no errors of its own.
	if lg := d.log.String(); strings.Contains(lg, "level=ERROR") || strings.Contains(lg, "level=WARN") {
		t.Errorf("the daemon logged trouble:\n%s", lg)
	}
	if res := runBin(t, "", "--data", embedded, "events", "--follow"); res.code != 1 || !strings.Contains(res.stderr, "needs a running daemon") {
		t.Errorf("events --follow without a daemon: %+v", res)
	}
}

// runScript runs the script on data and returns each step's outcome,
// normalised: the ids it registered become ID1, ID2; times, durations,
// artifact sizes and hashes (the artifact holds the id), the data
// directory and runs of spaces (padding after ids of other lengths) become
// placeholders.
func runScript(t *testing.T, data string, script []cliStep) []cliRun {
	var ids []string
	out := make([]cliRun, len(script))
	for i, st := range script {
		args := []string{"--data", data}
		for _, a := range st.args {
			for n, id := range ids {
				a = strings.ReplaceAll(a, fmt.Sprintf("{%d}", n+1), id)
			}
			args = append(args, a)
		}
		res := runBin(t, st.stdin, args...)
		if i < 3 && res.code == 0 { // the registrations
			id := strings.TrimSpace(res.stdout)
			if strings.HasPrefix(id, "{") {
				var d fsm.Delegation
				if err := json.Unmarshal([]byte(id), &d); err != nil {
					t.Fatalf("step %d: %v", i, err)
				}
				id = d.ID
			}
			if !slices.Contains(ids, id) {
				ids = append(ids, id)
			}
		}
		norm := func(s string) string {
			s = strings.ReplaceAll(s, data, "DATA")
			for n, id := range ids {
				s = strings.ReplaceAll(s, id, fmt.Sprintf("ID%d", n+1))
			}
			s = isoTime.ReplaceAllString(s, "TIME")
			s = artifactNum.ReplaceAllString(s, `"artifact$1":N`)
			s = hashText.ReplaceAllString(s, "N bytes, xxhash H")
			s = msField.ReplaceAllString(s, `"$1":N`)
			s = duration.ReplaceAllString(s, "DURATION")
			return spaces.ReplaceAllString(s, " ")
		}
		out[i] = cliRun{norm(res.stdout), norm(res.stderr), res.code}
	}
	if len(ids) != 2 {
		t.Fatalf("the script registered %v, want two ids", ids)
	}
	return out
}
