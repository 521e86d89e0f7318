package ui

import (
	"bytes"
	"context"
	"embed"
	"encoding/json"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/delegations/delegations/cmd/delegations/api"
	"github.com/delegations/delegations/fsm"
	"github.com/delegations/delegations/projection"
	"github.com/delegations/delegations/projection/artifact"
	"github.com/delegations/delegations/replay"
)

//go:embed templates/*.html static
var files embed.FS

var templates = template.Must(template.New("").Funcs(template.FuncMap{
	"ago":      ago,
	"duration": duration,
	"when":     when,
	"markdown": Markdown,
	"elapsed":  elapsed,
	"query":    query,
	"add":      func(a, b int) int { return a + b },
}).ParseFS(files, "templates/*.html"))

func (s *Server) routes() {
	static, _ := fs.Sub(files, "static")
	m := http.NewServeMux()
	m.Handle("GET /static/", http.StripPrefix("/static/", http.FileServerFS(static)))
	m.HandleFunc("GET /{$}", s.boardPage)
	m.HandleFunc("GET /board", s.boardFragment)
	m.HandleFunc("GET /api/board", s.boardJSON)
	m.HandleFunc("GET /events", s.events)
	m.HandleFunc("GET /d/{id}", s.delegationPage)
	m.HandleFunc("GET /d/{id}/raw", s.raw)
	m.HandleFunc("GET /api/d/{id}", s.delegationJSON)
	m.HandleFunc("GET /d/{id}/{action}", s.confirm)
	m.HandleFunc("POST /d/{id}/{action}", s.act)
	s.mux = m
}

// filterOf reads the board's filter from the query.
func filterOf(r *http.Request) Filter {
	q := r.URL.Query()
	f := Filter{Project: q.Get("project"), Root: q.Get("root"), Group: q.Get("group")}
	if _, ok := groupTitles[f.Group]; !ok {
		f.Group = ""
	}
	f.Page, _ = strconv.Atoi(q.Get("page"))
	return f
}

// boardView is what the board templates get.
type boardView struct {
	Board
	Now time.Time
}

func (s *Server) board0(r *http.Request) (boardView, error) {
	select {
	case <-s.board.loaded:
	case <-r.Context().Done():
		return boardView{}, r.Context().Err()
	}
	now := s.now()
	return boardView{Board: s.board.page(filterOf(r), now), Now: now}, nil
}

func (s *Server) boardPage(w http.ResponseWriter, r *http.Request) {
	v, err := s.board0(r)
	if err != nil {
		return
	}
	s.render(w, "board.html", v)
}

func (s *Server) boardFragment(w http.ResponseWriter, r *http.Request) {
	v, err := s.board0(r)
	if err != nil {
		return
	}
	s.render(w, "groups", v)
}

func (s *Server) boardJSON(w http.ResponseWriter, r *http.Request) {
	v, err := s.board0(r)
	if err != nil {
		return
	}
	writeJSON(w, v.Board)
}

func (s *Server) render(w http.ResponseWriter, name string, v any) {
	var b bytes.Buffer
	if err := templates.ExecuteTemplate(&b, name, v); err != nil {
		s.logger.Error("status page: template", "name", name, "err", err)
		http.Error(w, "internal error: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Write(b.Bytes())
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", " ")
	enc.Encode(v)
}

// fail answers an error of the API with its status.
func (s *Server) fail(w http.ResponseWriter, err error) {
	status := http.StatusInternalServerError
	switch api.Code(err) {
	case "invalid":
		status = http.StatusBadRequest
	case "not_found":
		status = http.StatusNotFound
	case "terminal", "exists", "conflict":
		status = http.StatusConflict
	}
	http.Error(w, err.Error(), status)
}

// Detail is a delegation's page.
type Detail struct {
	Delegation fsm.Delegation   `json:"delegation"`
	Summary    Summary          `json:"summary"`
	Artifact   string           `json:"artifact"`
	ArtifactOK bool             `json:"artifactWritten"`
	ArtifactNo string           `json:"artifactProblem,omitempty"`
	Timeline   *replay.Timeline `json:"timeline"`
	Findings   []replay.Finding `json:"findings"`
	// Due is the terminal notification still waiting for its delivery.
	Due *projection.Notification `json:"due,omitempty"`
}

// detail reads what a delegation's page shows: nothing here writes (the
// artifact is read from its file, not through the read verb).
func (s *Server) detail(ctx context.Context, id string) (Detail, error) {
	d, err := s.svc.Show(ctx, api.IDRequest{ID: id})
	if err != nil {
		return Detail{}, err
	}
	store := s.svc.Store()
	out := Detail{Delegation: d, Summary: summarize(&d), Findings: []replay.Finding{}}
	if sum, ok := s.board.get(id); ok {
		out.Summary = sum
	}
	switch {
	case d.ArtifactPath == "":
		out.ArtifactNo = "not written yet"
		if d.State.Terminal() {
			out.ArtifactNo = "terminal but not written yet (the daemon retries the write)"
		}
	default:
		b, err := artifact.Read(store.Dir(), d.ArtifactPath)
		if err != nil {
			out.ArtifactNo = err.Error()
		} else {
			out.Artifact, out.ArtifactOK = string(b), true
		}
	}
	if out.Timeline, err = replay.ReadTimeline(ctx, store.Log(), id); err != nil {
		return Detail{}, err
	}
	var last uint64
	if n := len(out.Timeline.Steps); n > 0 {
		last = out.Timeline.Steps[n-1].Seq
	}
	fs, err := s.diagnose(ctx, id, last)
	if err != nil {
		return Detail{}, err
	}
	out.Findings = append(out.Findings, fs...)
	out.Due, _ = s.due(&d) // the page goes without the action
	return out, nil
}

// due returns d's terminal notification while it waits for its delivery,
// else nil.
func (s *Server) due(d *fsm.Delegation) (*projection.Notification, error) {
	due, _, err := s.svc.Store().Due(d.ParentSessionID)
	if err != nil {
		return nil, err
	}
	for i := range due {
		if due[i].ID == projection.TerminalNotificationID(d.ID) {
			return &due[i], nil
		}
	}
	return nil, nil
}

type detailView struct {
	Detail
	Now time.Time
	Seq uint64 // the board's record when the page was read: its event stream starts there
}

func (s *Server) delegationPage(w http.ResponseWriter, r *http.Request) {
	// The sequence number first: a change after it, even one the page
	// already shows, refreshes it; none is missed.
	select {
	case <-s.board.loaded:
	case <-r.Context().Done():
		return
	}
	s.board.mu.RLock()
	seq := s.board.seq
	s.board.mu.RUnlock()
	d, err := s.detail(r.Context(), r.PathValue("id"))
	if err != nil {
		s.fail(w, err)
		return
	}
	name := "delegation.html"
	if r.URL.Query().Get("fragment") != "" {
		name = "detail"
	}
	s.render(w, name, detailView{Detail: d, Now: s.now(), Seq: seq})
}

func (s *Server) delegationJSON(w http.ResponseWriter, r *http.Request) {
	d, err := s.detail(r.Context(), r.PathValue("id"))
	if err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, d)
}

// raw answers the artifact as it is, as plain text: never rendered as
// HTML, whatever it holds.
func (s *Server) raw(w http.ResponseWriter, r *http.Request) {
	d, err := s.svc.Show(r.Context(), api.IDRequest{ID: r.PathValue("id")})
	if err != nil {
		s.fail(w, err)
		return
	}
	if d.ArtifactPath == "" {
		http.Error(w, "the artifact of "+d.ID+" is not written yet", http.StatusNotFound)
		return
	}
	b, err := artifact.Read(s.svc.Store().Dir(), d.ArtifactPath)
	if err != nil {
		s.fail(w, err)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Write(b)
}

// The actions: each needs a confirmation page, then a POST with the CSRF
// token.
var actions = map[string]string{
	"cancel":    "Cancel this delegation",
	"redeliver": "Deliver its notification again",
}

type confirmView struct {
	ID, Action, Label, CSRF string
	Delegation              fsm.Delegation
}

func (s *Server) confirm(w http.ResponseWriter, r *http.Request) {
	id, action := r.PathValue("id"), r.PathValue("action")
	label, ok := actions[action]
	if !ok {
		http.NotFound(w, r)
		return
	}
	d, err := s.svc.Show(r.Context(), api.IDRequest{ID: id})
	if err != nil {
		s.fail(w, err)
		return
	}
	s.render(w, "confirm.html", confirmView{ID: id, Action: action, Label: label, CSRF: s.csrf, Delegation: d})
}

// RedeliverReason is the failure an asked-for redelivery records.
const RedeliverReason = "delivery asked again from the status page"

func (s *Server) act(w http.ResponseWriter, r *http.Request) {
	id, action := r.PathValue("id"), r.PathValue("action")
	var err error
	switch action {
	case "cancel":
		_, err = s.svc.Cancel(r.Context(), api.CancelRequest{ID: id, Reason: "cancelled from the status page"})
	case "redeliver":
		// Only a notification still due can be delivered again; an
		// acknowledged one would take the failure as a no-op.
		var d fsm.Delegation
		var n *projection.Notification
		if d, err = s.svc.Show(r.Context(), api.IDRequest{ID: id}); err == nil {
			if n, err = s.due(&d); err == nil {
				if n == nil {
					err = fmt.Errorf("%w: its terminal notification is not due (not written yet, or already delivered and acknowledged)", fsm.ErrNotFound)
				} else {
					_, err = s.svc.Ack(r.Context(), api.AckRequest{ID: n.ID, Failed: RedeliverReason})
				}
			}
		}
	default:
		http.NotFound(w, r)
		return
	}
	if err != nil {
		s.fail(w, fmt.Errorf("%s %s: %w", action, id, err))
		return
	}
	http.Redirect(w, r, "/d/"+url.PathEscape(id), http.StatusSeeOther)
}

// events is the page's server-sent event stream: one `change` event per
// record the board applied ({seq, id, kind}; the id: line is the sequence
// number, so a reconnecting EventSource resumes), and `reload` when the
// stream fell too far behind.
func (s *Server) events(w http.ResponseWriter, r *http.Request) {
	flusher, ok := w.(http.Flusher)
	if !ok {
		http.Error(w, "streaming is not supported", http.StatusInternalServerError)
		return
	}
	select {
	case <-s.board.loaded:
	case <-r.Context().Done():
		return
	}
	s.board.mu.RLock()
	seq := s.board.seq
	s.board.mu.RUnlock()
	if id := r.Header.Get("Last-Event-ID"); id != "" {
		if n, err := strconv.ParseUint(id, 10, 64); err == nil && n <= seq {
			seq = n
		}
	} else if from := r.URL.Query().Get("after"); from != "" {
		if n, err := strconv.ParseUint(from, 10, 64); err == nil && n <= seq {
			seq = n
		}
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.WriteHeader(http.StatusOK)
	fmt.Fprintf(w, "retry: 1000\n\n")
	flusher.Flush()
	for {
		changes, last, ok, next := s.board.since(seq)
		if !ok {
			fmt.Fprintf(w, "event: reload\ndata: {}\n\n")
			flusher.Flush()
			return
		}
		for _, c := range changes {
			b, _ := json.Marshal(c)
			if _, err := fmt.Fprintf(w, "event: change\nid: %d\ndata: %s\n\n", c.Seq, b); err != nil {
				return
			}
		}
		seq = last
		flusher.Flush()
		select {
		case <-next:
		case <-r.Context().Done():
			return
		}
	}
}

// Template helpers.

func ago(now, t time.Time) string {
	if t.IsZero() {
		return "—"
	}
	return duration(now.Sub(t)) + " ago"
}

func when(t time.Time) string {
	if t.IsZero() {
		return "—"
	}
	return fsm.FormatTime(t)
}

func duration(d time.Duration) string {
	switch {
	case d < 0:
		return "-" + duration(-d)
	case d < time.Second:
		return strconv.FormatInt(d.Milliseconds(), 10) + "ms"
	case d < time.Minute:
		return strconv.FormatFloat(d.Seconds(), 'f', 1, 64) + "s"
	case d < time.Hour:
		return fmt.Sprintf("%dm%02ds", int(d.Minutes()), int(d.Seconds())%60)
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
	default:
		return fmt.Sprintf("%dd", int(d.Hours()/24))
	}
}

// elapsed is how long s ran: until now while active.
func elapsed(now time.Time, s Summary) string {
	start := s.StartedAt
	if start.IsZero() {
		start = s.CreatedAt
	}
	end := s.CompletedAt
	if s.Status.Active() || end.IsZero() {
		end = now
	}
	return duration(end.Sub(start))
}

// query is the board's address with f changed by key/value pairs.
func query(f Filter, kv ...any) template.URL {
	q := url.Values{}
	set := func(k, v string) {
		if v != "" {
			q.Set(k, v)
		}
	}
	set("project", f.Project)
	set("root", f.Root)
	set("group", f.Group)
	if f.Page > 1 {
		q.Set("page", strconv.Itoa(f.Page))
	}
	for i := 0; i+1 < len(kv); i += 2 {
		k := fmt.Sprint(kv[i])
		v := fmt.Sprint(kv[i+1])
		q.Del(k)
		if v != "" && v != "0" {
			q.Set(k, v)
		}
	}
	if len(q) == 0 {
		return "/"
	}
	return template.URL("/?" + q.Encode())
}
