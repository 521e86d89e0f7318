package ui

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/delegations/delegations/cmd/delegations/api"
	"github.com/delegations/delegations/fsm"
	"github.com/delegations/delegations/projection"
	"github.com/delegations/delegations/replay"
)

// page is a status page on a real store, served on loopback.
type page struct {
	t    testing.TB
	svc  *api.Service
	srv  *Server
	base string // http://127.0.0.1:PORT
	url  string // the page's address with its token
	c    *http.Client
}

func newPage(t testing.TB, opts ...Options) *page {
	t.Helper()
	store, err := projection.Open(t.TempDir(), projection.Options{})
	if err != nil {
		t.Fatal(err)
	}
	svc := api.NewService(store)
	ln, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	o := Options{}
	if len(opts) > 0 {
		o = opts[0]
	}
	srv := New(svc, ln, o)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
		store.Close()
	})
	jar, _ := cookiejar.New(nil)
	p := &page{t: t, svc: svc, srv: srv, base: "http://" + ln.Addr().String(), url: PageURL(ln, srv.token), c: &http.Client{
		Jar:           jar,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
	return p
}

// login opens the page's URL with its token, as the browser does.
func (p *page) login() {
	p.t.Helper()
	resp := p.do("GET", p.url, nil, nil)
	if resp.StatusCode != http.StatusSeeOther {
		p.t.Fatalf("GET with the token: %s", resp.Status)
	}
}

func (p *page) do(method, u string, body io.Reader, hdr map[string]string) *http.Response {
	p.t.Helper()
	req, err := http.NewRequest(method, u, body)
	if err != nil {
		p.t.Fatal(err)
	}
	for k, v := range hdr {
		if k == "Host" {
			req.Host = v
			continue
		}
		req.Header.Set(k, v)
	}
	resp, err := p.c.Do(req)
	if err != nil {
		p.t.Fatal(err)
	}
	p.t.Cleanup(func() { resp.Body.Close() })
	return resp
}

func (p *page) register(root string) fsm.Delegation {
	p.t.Helper()
	d, err := p.svc.Register(context.Background(), api.RegisterRequest{
		RootSessionID: root, ParentSessionID: root, Agent: "researcher", ProjectID: "proj1", Model: "m1",
		Prompt: "Find the flaky test",
	})
	if err != nil {
		p.t.Fatal(err)
	}
	return d
}

func TestListenRefusesOtherAddresses(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:0", ":0", "192.168.1.10:0", "[::]:0", "example.com:80", "10.0.0.1:8080"} {
		ln, err := Listen(addr)
		if err == nil {
			ln.Close()
			t.Errorf("Listen(%q) listened", addr)
			continue
		}
		if !errors.Is(err, ErrNotLoopback) {
			t.Errorf("Listen(%q): %v, want ErrNotLoopback", addr, err)
		}
	}
	for _, addr := range []string{"127.0.0.1:0", "localhost:0"} {
		ln, err := Listen(addr)
		if err != nil {
			t.Errorf("Listen(%q): %v", addr, err)
			continue
		}
		ln.Close()
	}
}

func TestTokenAndCookie(t *testing.T) {
	p := newPage(t)
	if r := p.do("GET", p.base+"/", nil, nil); r.StatusCode != http.StatusUnauthorized {
		t.Errorf("no token: %s, want 401", r.Status)
	}
	if r := p.do("GET", p.base+"/?token=wrong", nil, nil); r.StatusCode != http.StatusForbidden {
		t.Errorf("wrong token: %s, want 403", r.Status)
	}
	if r := p.do("GET", p.base+"/api/board", nil, map[string]string{"Cookie": p.srv.cookieName() + "=wrong"}); r.StatusCode != http.StatusUnauthorized {
		t.Errorf("wrong cookie: %s, want 401", r.Status)
	}
	r := p.do("GET", p.url, nil, nil)
	if r.StatusCode != http.StatusSeeOther || r.Header.Get("Location") != "/" {
		t.Fatalf("with the token: %s to %q, want 303 to /", r.Status, r.Header.Get("Location"))
	}
	sc := r.Header.Get("Set-Cookie")
	for _, want := range []string{"HttpOnly", "SameSite=Strict", "Path=/", "Max-Age="} {
		if !strings.Contains(sc, want) {
			t.Errorf("Set-Cookie %q lacks %s", sc, want)
		}
	}
	r = p.do("GET", p.base+"/", nil, nil)
	if r.StatusCode != http.StatusOK {
		t.Fatalf("with the cookie: %s", r.Status)
	}
	for k := range r.Header {
		if strings.HasPrefix(k, "Access-Control-") {
			t.Errorf("CORS header %s sent", k)
		}
	}
	if csp := r.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") || !strings.Contains(csp, "frame-ancestors 'none'") {
		t.Errorf("Content-Security-Policy %q", csp)
	}
}

func TestHostHeader(t *testing.T) {
	p := newPage(t)
	p.login()
	port := p.srv.port
	for host, want := range map[string]int{
		"127.0.0.1:" + port:       http.StatusOK,
		"localhost:" + port:       http.StatusOK,
		"[::1]:" + port:           http.StatusOK,
		"evil.example:" + port:    http.StatusMisdirectedRequest, // DNS rebinding
		"localhost":               http.StatusMisdirectedRequest,
		"127.0.0.1:1":             http.StatusMisdirectedRequest,
		"localhost.evil:" + port:  http.StatusMisdirectedRequest,
		"127.0.0.1." + ":" + port: http.StatusMisdirectedRequest,
	} {
		// The cookie jar keys on the URL's host; send the cookie by hand.
		r := p.do("GET", p.base+"/api/board", nil, map[string]string{"Host": host, "Cookie": p.srv.cookieName() + "=" + p.srv.token})
		if r.StatusCode != want {
			t.Errorf("Host %q: %s, want %d", host, r.Status, want)
		}
	}
	// Even the token does not get past a wrong Host.
	r := p.do("GET", p.url, nil, map[string]string{"Host": "evil.example:" + port})
	if r.StatusCode != http.StatusMisdirectedRequest || r.Header.Get("Set-Cookie") != "" {
		t.Errorf("token with a wrong Host: %s, cookie %q", r.Status, r.Header.Get("Set-Cookie"))
	}
}

func TestActionsNeedCSRF(t *testing.T) {
	p := newPage(t)
	p.login()
	d := p.register("ses_root")
	form := func(csrf string) io.Reader { return strings.NewReader(url.Values{"csrf": {csrf}}.Encode()) }
	ct := map[string]string{"Content-Type": "application/x-www-form-urlencoded"}
	with := func(extra map[string]string) map[string]string {
		h := map[string]string{"Content-Type": "application/x-www-form-urlencoded"}
		for k, v := range extra {
			h[k] = v
		}
		return h
	}
	cancelURL := p.base + "/d/" + d.ID + "/cancel"
	for name, tc := range map[string]struct {
		body io.Reader
		hdr  map[string]string
	}{
		"no csrf token":    {form(""), ct},
		"wrong csrf token": {form("nope"), ct},
		"the login token":  {form(p.srv.token), ct},
		"cross-site":       {form(p.srv.csrf), with(map[string]string{"Sec-Fetch-Site": "cross-site"})},
		"other origin":     {form(p.srv.csrf), with(map[string]string{"Origin": "http://evil.example"})},
		"null origin":      {form(p.srv.csrf), with(map[string]string{"Origin": "null"})},
	} {
		if r := p.do("POST", cancelURL, tc.body, tc.hdr); r.StatusCode != http.StatusForbidden {
			t.Errorf("%s: %s, want 403", name, r.Status)
		}
	}
	// Without the cookie, even the CSRF token is not enough.
	anon := &http.Client{CheckRedirect: p.c.CheckRedirect}
	if r, err := anon.Post(cancelURL, "application/x-www-form-urlencoded", form(p.srv.csrf)); err != nil || r.StatusCode != http.StatusUnauthorized {
		t.Errorf("no cookie: %v %v, want 401", r.Status, err)
	}
	if got, _ := p.svc.Show(context.Background(), api.IDRequest{ID: d.ID}); got.State != fsm.Registered {
		t.Fatalf("a refused action changed the delegation: %s", got.State)
	}
	// A GET never writes: it asks for a confirmation.
	r := p.do("GET", cancelURL, nil, nil)
	body, _ := io.ReadAll(r.Body)
	if r.StatusCode != http.StatusOK || !strings.Contains(string(body), `name="csrf" value="`+p.srv.csrf+`"`) {
		t.Errorf("confirmation page: %s\n%s", r.Status, body)
	}
	if got, _ := p.svc.Show(context.Background(), api.IDRequest{ID: d.ID}); got.State != fsm.Registered {
		t.Fatalf("GET changed the delegation: %s", got.State)
	}
	r = p.do("POST", cancelURL, form(p.srv.csrf), with(map[string]string{"Origin": p.base, "Sec-Fetch-Site": "same-origin"}))
	if r.StatusCode != http.StatusSeeOther {
		t.Fatalf("confirmed cancel: %s", r.Status)
	}
	if got, _ := p.svc.Show(context.Background(), api.IDRequest{ID: d.ID}); got.State != fsm.Cancelled {
		t.Fatalf("after cancel: %s", got.State)
	}
}

func TestRedeliver(t *testing.T) {
	p := newPage(t)
	p.login()
	ctx := context.Background()
	d := p.register("ses_root")
	if _, err := p.svc.Complete(ctx, api.CompleteRequest{ID: d.ID, Result: "done"}); err != nil {
		t.Fatal(err)
	}
	r := p.do("POST", p.base+"/d/"+d.ID+"/redeliver", strings.NewReader("csrf="+p.srv.csrf), map[string]string{"Content-Type": "application/x-www-form-urlencoded"})
	if r.StatusCode != http.StatusSeeOther {
		b, _ := io.ReadAll(r.Body)
		t.Fatalf("redeliver: %s %s", r.Status, b)
	}
	due, err := p.svc.Notifications(ctx, api.NotificationsRequest{ParentSessionID: "ses_root"})
	if err != nil || len(due.Notifications) != 1 || due.Notifications[0].LastError != RedeliverReason {
		t.Fatalf("after redeliver: %+v %v", due, err)
	}
	// Once acknowledged there is nothing to deliver again: refused.
	if _, err := p.svc.Ack(ctx, api.AckRequest{ID: due.Notifications[0].ID}); err != nil {
		t.Fatal(err)
	}
	r = p.do("POST", p.base+"/d/"+d.ID+"/redeliver", strings.NewReader("csrf="+p.srv.csrf), map[string]string{"Content-Type": "application/x-www-form-urlencoded"})
	if r.StatusCode != http.StatusNotFound {
		t.Errorf("redeliver after the ack: %s, want 404", r.Status)
	}
}

// boardOf reads the board's JSON.
func (p *page) boardOf(q string) Board {
	p.t.Helper()
	r := p.do("GET", p.base+"/api/board"+q, nil, nil)
	var b Board
	if err := json.NewDecoder(r.Body).Decode(&b); err != nil {
		p.t.Fatal(err)
	}
	return b
}

// waitSeq blocks until the board has applied the log up to its last
// record, through its own event stream.
func (p *page) waitSeq() {
	p.t.Helper()
	want := p.svc.Store().Log().Last()
	for {
		_, last, _, next := p.srv.board.since(want)
		if last >= want {
			return
		}
		<-next
	}
}

func TestBoardGroups(t *testing.T) {
	p := newPage(t)
	p.login()
	ctx := context.Background()
	running := p.register("ses_a")
	p.svc.Start(ctx, api.StartRequest{ID: running.ID})
	unread := p.register("ses_a")
	p.svc.Complete(ctx, api.CompleteRequest{ID: unread.ID, Result: "r"})
	read := p.register("ses_b")
	p.svc.Complete(ctx, api.CompleteRequest{ID: read.ID, Result: "r"})
	p.svc.Ack(ctx, api.AckRequest{ID: projection.TerminalNotificationID(read.ID)})
	if _, err := p.svc.Read(ctx, api.ReadRequest{RootSessionID: "ses_b", ID: read.ID}); err != nil {
		t.Fatal(err)
	}
	failed := p.register("ses_b")
	p.svc.Complete(ctx, api.CompleteRequest{ID: failed.ID, Result: "r"})
	p.svc.Ack(ctx, api.AckRequest{ID: projection.TerminalNotificationID(failed.ID), Failed: "parent busy"})
	p.waitSeq()

	groups := func(b Board) map[string][]string {
		out := map[string][]string{}
		for _, g := range b.Groups {
			for _, s := range g.Items {
				out[g.Name] = append(out[g.Name], s.ID)
			}
		}
		return out
	}
	got := groups(p.boardOf(""))
	want := map[string][]string{
		GroupRunning: {running.ID}, GroupUnread: {unread.ID}, GroupRecent: {read.ID}, GroupFailed: {failed.ID},
	}
	for g, ids := range want {
		if strings.Join(got[g], ",") != strings.Join(ids, ",") {
			t.Errorf("group %s: %v, want %v", g, got[g], ids)
		}
	}
	if b := p.boardOf("?root=ses_a"); b.Total != 2 {
		t.Errorf("root filter: %d delegations, want 2", b.Total)
	}
	if b := p.boardOf("?project=other"); b.Total != 0 {
		t.Errorf("project filter: %d delegations, want 0", b.Total)
	}
	if b := p.boardOf("?group=unread"); len(b.Groups) != 1 || b.Groups[0].Total != 1 {
		t.Errorf("group filter: %+v", b.Groups)
	}
	// The page is read-only: showing a delegation does not mark it read.
	r := p.do("GET", p.base+"/d/"+unread.ID, nil, nil)
	if b, _ := io.ReadAll(r.Body); r.StatusCode != http.StatusOK || !strings.Contains(string(b), "timeline") {
		t.Fatalf("delegation page: %s", r.Status)
	}
	if d, _ := p.svc.Show(ctx, api.IDRequest{ID: unread.ID}); !d.ReadAt.IsZero() {
		t.Errorf("the page marked %s read", unread.ID)
	}
}

func TestEventStream(t *testing.T) {
	p := newPage(t)
	p.login()
	d := p.register("ses_root")
	p.waitSeq()
	r := p.do("GET", p.base+"/events", nil, nil)
	if ct := r.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("Content-Type %q", ct)
	}
	lines := bufio.NewScanner(r.Body)
	if _, err := p.svc.Complete(context.Background(), api.CompleteRequest{ID: d.ID, Result: "done"}); err != nil {
		t.Fatal(err)
	}
	for lines.Scan() {
		if l := lines.Text(); strings.HasPrefix(l, "data: ") && strings.Contains(l, `"kind":"completed"`) {
			if !strings.Contains(l, `"id":"`+d.ID+`"`) {
				t.Errorf("change %s names another delegation", l)
			}
			return
		}
	}
	t.Fatalf("stream ended: %v", lines.Err())
}

func TestMarkdownIsInert(t *testing.T) {
	for _, src := range []string{
		"<script>alert(1)</script>",
		"# <img src=x onerror=alert(1)>",
		"**<b>x</b>**",
		"`<i>`",
		"```\n</code></pre><script>x</script>\n```",
		"- <a href=javascript:alert(1)>x</a>",
		"\"'&<>",
	} {
		out := string(Markdown(src))
		for _, bad := range []string{"<script", "<img", "<b>", "<i>", "<a ", "javascript:alert(1)>"} {
			if strings.Contains(out, bad) {
				t.Errorf("Markdown(%q) = %q holds %s", src, out, bad)
			}
		}
	}
	got := string(Markdown("## Title\n\nSome **bold** and `code`.\n\n```\nx := 1 < 2\n```\n- one\n- two"))
	want := "<h3>Title</h3>\n<p>Some <strong>bold</strong> and <code>code</code>.</p>\n<pre><code>x := 1 &lt; 2\n</code></pre>\n<ul>\n<li>one</li>\n<li>two</li>\n</ul>\n"
	if got != want {
		t.Errorf("Markdown:\n%s\nwant\n%s", got, want)
	}
}

func TestRawIsPlainText(t *testing.T) {
	p := newPage(t)
	p.login()
	d := p.register("ses_root")
	if _, err := p.svc.Complete(context.Background(), api.CompleteRequest{ID: d.ID, Result: "<script>alert(1)</script>"}); err != nil {
		t.Fatal(err)
	}
	r := p.do("GET", p.base+"/d/"+d.ID+"/raw", nil, nil)
	b, _ := io.ReadAll(r.Body)
	if ct := r.Header.Get("Content-Type"); ct != "text/plain; charset=utf-8" || r.Header.Get("X-Content-Type-Options") != "nosniff" {
		t.Errorf("raw: Content-Type %q", ct)
	}
	if !strings.Contains(string(b), "<script>alert(1)</script>") {
		t.Errorf("raw is not the artifact as it is:\n%s", b)
	}
}

// TestPageURL: the printed address is the listener's, whatever loopback
// address it is on.
func TestPageURL(t *testing.T) {
	for _, addr := range []string{"127.0.0.1:0", "127.0.0.2:0", "[::1]:0"} {
		ln, err := Listen(addr)
		if err != nil {
			t.Logf("%s: %v (skipped)", addr, err)
			continue
		}
		want := "http://" + ln.Addr().String() + "/?token=abc"
		if got := PageURL(ln, "abc"); got != want {
			t.Errorf("PageURL on %s = %q, want %q", addr, got, want)
		}
		ln.Close()
	}
}

// TestLoginRedirectStaysHere: the redirect that drops the token goes to a
// path of this page, never to another host (//evil.example/x).
func TestLoginRedirectStaysHere(t *testing.T) {
	p := newPage(t)
	for path, want := range map[string]string{
		"//evil.example/x":    "/evil.example/x",
		"///evil.example/":    "/evil.example/",
		"/d/x":                "/d/x",
		"/%5C%5Cevil.example": "/%5C%5Cevil.example",
	} {
		r := p.do("GET", p.base+path+"?token="+p.srv.token+"&group=unread", nil, nil)
		if loc := r.Header.Get("Location"); r.StatusCode != http.StatusSeeOther || loc != want+"?group=unread" {
			t.Errorf("GET %s with the token: %s to %q, want 303 to %q", path, r.Status, loc, want+"?group=unread")
		}
	}
}

// TestCrossSiteReads: another site's page (another port of 127.0.0.1 is
// the same site, so the cookie goes along) cannot read the page or hold
// its event stream; a link that navigates a tab here still works.
func TestCrossSiteReads(t *testing.T) {
	p := newPage(t)
	p.login()
	h := func(site, mode, dest string) map[string]string {
		return map[string]string{"Sec-Fetch-Site": site, "Sec-Fetch-Mode": mode, "Sec-Fetch-Dest": dest}
	}
	for _, tc := range []struct {
		path string
		hdr  map[string]string
		want int
	}{
		{"/api/board", h("same-site", "cors", "empty"), http.StatusForbidden},
		{"/api/board", h("cross-site", "no-cors", "script"), http.StatusForbidden},
		{"/events", h("same-site", "cors", "empty"), http.StatusForbidden},
		{"/", h("same-site", "navigate", "iframe"), http.StatusForbidden},
		{"/static/app.js", h("same-site", "no-cors", "script"), http.StatusForbidden},
		{"/", h("same-site", "navigate", "document"), http.StatusOK},
		{"/", h("cross-site", "navigate", "document"), http.StatusOK},
		{"/api/board", h("same-origin", "cors", "empty"), http.StatusOK},
		{"/", h("none", "navigate", "document"), http.StatusOK},
		{"/api/board", nil, http.StatusOK},
	} {
		if r := p.do("GET", p.base+tc.path, nil, tc.hdr); r.StatusCode != tc.want {
			t.Errorf("GET %s %v: %s, want %d", tc.path, tc.hdr, r.Status, tc.want)
		}
	}
}

// TestRunWaitsForRequests: Run returns only once the requests being served
// have finished: they read the store, which the daemon closes next.
func TestRunWaitsForRequests(t *testing.T) {
	store, err := projection.Open(t.TempDir(), projection.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	ln, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := New(api.NewService(store), ln, Options{})
	started, finished := make(chan struct{}), make(chan struct{})
	srv.mux.HandleFunc("GET /slow", func(w http.ResponseWriter, r *http.Request) {
		close(started)
		time.Sleep(200 * time.Millisecond)
		close(finished)
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx, ln) }()
	go func() {
		req, _ := http.NewRequest("GET", "http://"+ln.Addr().String()+"/slow", nil)
		req.AddCookie(&http.Cookie{Name: srv.cookieName(), Value: srv.token})
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
		}
	}()
	<-started
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	select {
	case <-finished:
	default:
		t.Fatal("Run returned while a request was being served")
	}
}

// TestDetailFindings: a delegation's page diagnoses it from its own
// events: the findings follow its stream and, with the stream unchanged,
// the clock.
func TestDetailFindings(t *testing.T) {
	var mu sync.Mutex
	now := time.Now()
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	p := newPage(t, Options{Now: clock})
	p.login()
	ctx := context.Background()
	d := p.register("ses_root")
	other := p.register("ses_root") // its events must not matter
	findings := func() []replay.Finding {
		t.Helper()
		var det Detail
		if err := json.NewDecoder(p.do("GET", p.base+"/api/d/"+d.ID, nil, nil).Body).Decode(&det); err != nil {
			t.Fatal(err)
		}
		return det.Findings
	}
	if fs := findings(); len(fs) != 0 {
		t.Errorf("a fresh delegation: %+v", fs)
	}
	if _, err := p.svc.Complete(ctx, api.CompleteRequest{ID: d.ID, Result: "done"}); err != nil {
		t.Fatal(err)
	}
	if _, err := p.svc.Cancel(ctx, api.CancelRequest{ID: other.ID}); err != nil {
		t.Fatal(err)
	}
	fs := findings()
	if len(fs) != 1 || fs[0].Code != replay.CodeNotNotified || fs[0].Severity != replay.SeverityInfo || fs[0].Delegation != d.ID {
		t.Fatalf("completed, not delivered: %+v", fs)
	}
	advance(48 * time.Hour) // the stream is the same; the notification is now stale
	if fs := findings(); len(fs) != 1 || fs[0].Severity != replay.SeverityError {
		t.Fatalf("two days later: %+v", fs)
	}
	if _, err := p.svc.Ack(ctx, api.AckRequest{ID: projection.TerminalNotificationID(d.ID)}); err != nil {
		t.Fatal(err)
	}
	if fs := findings(); len(fs) != 1 || fs[0].Code != replay.CodeUnread {
		t.Fatalf("delivered: %+v", fs)
	}
}

// TestSummaryBounds: the board keeps at most maxText runes of a title and
// of a delivery error, whether it loaded them or followed them.
func TestSummaryBounds(t *testing.T) {
	p := newPage(t)
	p.login()
	ctx := context.Background()
	long := strings.Repeat("é", 250) // the title's limit is 512 bytes
	d := p.register("ses_root")
	if _, err := p.svc.Complete(ctx, api.CompleteRequest{ID: d.ID, Result: "done", Title: long}); err != nil {
		t.Fatal(err)
	}
	if _, err := p.svc.Ack(ctx, api.AckRequest{ID: projection.TerminalNotificationID(d.ID), Failed: long}); err != nil {
		t.Fatal(err)
	}
	check := func(when string) {
		p.waitSeq()
		s, ok := p.srv.board.get(d.ID)
		if !ok || utf8.RuneCountInString(s.Title) != maxText || utf8.RuneCountInString(s.DeliveryError) != maxText || !strings.HasSuffix(s.Title, "…") {
			t.Errorf("%s: title %d runes, error %d runes, want %d", when, utf8.RuneCountInString(s.Title), utf8.RuneCountInString(s.DeliveryError), maxText)
		}
	}
	check("followed")
	if _, err := p.srv.board.load(p.svc.Store()); err != nil {
		t.Fatal(err)
	}
	check("loaded")
}

// TestFollowBacksOff: a tail that keeps failing is loaded again less and
// less often; one that ran a while starts over.
func TestFollowBacksOff(t *testing.T) {
	var waits []time.Duration
	var w time.Duration
	for range 9 {
		w = nextRetry(w, 10*time.Millisecond)
		waits = append(waits, w)
	}
	want := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 16 * time.Second, 32 * time.Second, time.Minute, time.Minute, time.Minute}
	if !slices.Equal(waits, want) {
		t.Errorf("waits %v, want %v", waits, want)
	}
	if w := nextRetry(time.Minute, time.Hour); w != time.Second {
		t.Errorf("after a tail that ran an hour: %v, want 1s", w)
	}
}

// TestApplyUnreadableRecord: an event whose record cannot be read is not
// dropped: apply fails, so that the board loads again.
func TestApplyUnreadableRecord(t *testing.T) {
	store, err := projection.Open(t.TempDir(), projection.Options{})
	if err != nil {
		t.Fatal(err)
	}
	svc := api.NewService(store)
	d, err := svc.Register(context.Background(), api.RegisterRequest{RootSessionID: "ses_r", ParentSessionID: "ses_r", Agent: "a", ProjectID: "p", Prompt: "x"})
	if err != nil {
		t.Fatal(err)
	}
	store.Close() // every read fails
	b := newBoard()
	if err := b.apply(svc, api.Event{Seq: 1, ID: d.ID, Kind: "registered"}); err == nil || b.seq != 0 {
		t.Errorf("apply with an unreadable record: %v, seq %d; want an error and nothing applied", err, b.seq)
	}
	if err := b.apply(svc, api.Event{Seq: 2, ID: "parent/ses_r", Kind: "all_complete_notified"}); err != nil {
		t.Errorf("a parent's event: %v", err)
	}
}

// TestDetailSeq: a delegation's page names the record it was read at, so
// that its event stream starts there (no change between the page and the
// stream is missed).
func TestDetailSeq(t *testing.T) {
	p := newPage(t)
	p.login()
	d := p.register("ses_root")
	p.waitSeq()
	b, _ := io.ReadAll(p.do("GET", p.base+"/d/"+d.ID, nil, nil).Body)
	want := fmt.Sprintf(`data-seq="%d"`, p.svc.Store().Log().Last())
	if !strings.Contains(string(b), want) {
		t.Errorf("the page lacks %s:\n%s", want, b)
	}
}
