package api

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"reflect"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/delegations/delegations/fsm"
)

// handler serves the API over HTTP.
type handler struct {
	svc      *Service
	status   Status
	logger   *slog.Logger
	stopping context.Context // done when the daemon stops: waits end
	keeper   *keeper         // reopens the log after a failed write
	// bodyTimeout bounds the reading of a POST body (Config.BodyTimeout).
	bodyTimeout time.Duration

	page       func(context.Context, *Service, string) (string, <-chan struct{}, error) // Config.Page
	pageMu     sync.Mutex
	pageURL    string          // the status page's address, while it serves
	pageDone   <-chan struct{} // closed when the page Page started has stopped
	pageClosed bool            // the daemon is stopping: no page starts
}

// currentStatus is the answer of GET /v1/status.
func (h *handler) currentStatus() Status {
	st := h.status
	st.LastSeq = h.svc.Store().Log().Last()
	h.keeper.state(&st)
	h.pageMu.Lock()
	st.UI = h.pageURL
	h.pageMu.Unlock()
	return st
}

// startPage starts the status page on addr unless it serves already (on
// whatever address) or the daemon is stopping. The page's address is
// forgotten when the page stops.
func (h *handler) startPage(addr string) error {
	h.pageMu.Lock()
	defer h.pageMu.Unlock()
	switch {
	case h.pageClosed || h.stopping.Err() != nil:
		return fmt.Errorf("%w: the daemon is stopping; run the command again to start another", errUnavailable)
	case h.pageURL != "":
		return nil
	case h.page == nil:
		return fmt.Errorf("%w: this daemon cannot serve a status page", errNoEndpoint)
	}
	url, done, err := h.page(h.stopping, h.svc, addr)
	if err != nil {
		return fmt.Errorf("start the status page: %w", err)
	}
	h.pageURL, h.pageDone = url, done
	go func() {
		<-done
		h.pageMu.Lock()
		defer h.pageMu.Unlock()
		if h.pageDone == done {
			h.pageURL = ""
		}
	}()
	return nil
}

// waitPage refuses new pages and waits until the page startPage started,
// if any, has stopped: before the store closes.
func (h *handler) waitPage() {
	h.pageMu.Lock()
	h.pageClosed = true
	done := h.pageDone
	h.pageMu.Unlock()
	if done != nil {
		<-done
	}
}

// waiting are the verbs that may wait; they end when the daemon stops.
// Every other verb runs to completion, so an in-flight commit finishes.
var waiting = map[string]bool{"read": true, "notifications": true}

// ServeHTTP serves one request. A panic (a bug) is answered with 500
// internal and a message saying the daemon is still running, and its stack
// logged, instead of net/http's dropped connection, which a client can only
// read as a daemon that died.
func (h *handler) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	w := &trackingWriter{ResponseWriter: rw}
	defer func() {
		v := recover()
		if v == nil || v == http.ErrAbortHandler {
			if v != nil {
				panic(v)
			}
			return
		}
		h.logger.Error("a request panicked (a bug); the daemon goes on serving",
			"method", r.Method, "path", r.URL.Path, "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
		if w.wrote {
			panic(http.ErrAbortHandler) // mid-answer: only closing the connection tells the client
		}
		h.fail(w, r, fmt.Errorf("the daemon hit a bug serving %s %s (panic: %v) and is still running; "+
			"the command may or may not have taken effect: check with show or events, and report the daemon's log", r.Method, r.URL.Path, v))
	}()
	h.serve(w, r)
}

// trackingWriter notes whether the answer has begun.
type trackingWriter struct {
	http.ResponseWriter
	wrote bool
}

func (t *trackingWriter) WriteHeader(code int) { t.wrote = true; t.ResponseWriter.WriteHeader(code) }
func (t *trackingWriter) Write(b []byte) (int, error) {
	t.wrote = true
	return t.ResponseWriter.Write(b)
}
func (t *trackingWriter) Flush() {
	t.wrote = true
	http.NewResponseController(t.ResponseWriter).Flush()
}
func (t *trackingWriter) Unwrap() http.ResponseWriter { return t.ResponseWriter }

func (h *handler) serve(w http.ResponseWriter, r *http.Request) {
	name, ok := strings.CutPrefix(r.URL.Path, "/v1/")
	if !ok || strings.Contains(name, "/") {
		h.fail(w, r, fmt.Errorf("%w: %s; the API is under /v1/ (see README)", errNoEndpoint, r.URL.Path))
		return
	}
	switch name {
	case "events":
		h.get(w, r, h.events)
	case "stream":
		h.get(w, r, h.stream)
	case "status":
		h.get(w, r, func(w http.ResponseWriter, r *http.Request) {
			h.reply(w, r, h.currentStatus())
		})
	case "page":
		h.post(w, r, func(w http.ResponseWriter, r *http.Request) {
			var req PageRequest
			if err := decodeBody(r, &req); err != nil {
				h.fail(w, r, err)
				return
			}
			if err := h.startPage(req.Addr); err != nil {
				h.fail(w, r, err)
				return
			}
			h.reply(w, r, h.currentStatus())
		})
	default:
		h.post(w, r, func(w http.ResponseWriter, r *http.Request) {
			ctx := r.Context()
			if waiting[name] {
				var cancel context.CancelFunc
				ctx, cancel = context.WithCancel(ctx)
				defer context.AfterFunc(h.stopping, cancel)()
				defer cancel()
			}
			// The body has its deadline. net/http clears it when it reads
			// the body's end (its watch for a hang-up must not end a wait).
			http.NewResponseController(w).SetReadDeadline(time.Now().Add(h.bodyTimeout))
			ep, body, err := readRequest(name, r.Body)
			if err != nil {
				w.Header().Set("Connection", "close") // what is left of the body is unread
				h.fail(w, r, err)
				return
			}
			out, err := ep.serve(ctx, h.svc, body)
			if err != nil {
				h.fail(w, r, err)
				return
			}
			h.reply(w, r, out)
		})
	}
}

func (h *handler) post(w http.ResponseWriter, r *http.Request, serve http.HandlerFunc) {
	h.method(w, r, http.MethodPost, serve)
}

func (h *handler) get(w http.ResponseWriter, r *http.Request, serve http.HandlerFunc) {
	h.method(w, r, http.MethodGet, serve)
}

func (h *handler) method(w http.ResponseWriter, r *http.Request, method string, serve http.HandlerFunc) {
	if r.Method != method {
		w.Header().Set("Allow", method)
		h.fail(w, r, fmt.Errorf("%w: %s %s; use %s", errMethod, r.Method, r.URL.Path, method))
		return
	}
	serve(w, r)
}

// decodeBody decodes a small request body strictly.
func decodeBody[T any](r *http.Request, v *T) error {
	body, err := io.ReadAll(io.LimitReader(r.Body, small+1))
	switch {
	case err != nil:
		return fmt.Errorf("%w: read request body: %v", fsm.ErrInvalid, err)
	case len(body) > small:
		return fmt.Errorf("%w: the body of %s is limited to %d bytes", errTooLarge, r.URL.Path, small)
	}
	return decode(body, v, jsonFields(reflect.TypeFor[T]()))
}

func (h *handler) reply(w http.ResponseWriter, r *http.Request, v any) {
	b, err := marshal(v)
	if err != nil {
		h.fail(w, r, fmt.Errorf("encode answer: %w", err))
		return
	}
	w.Header().Set("Content-Type", "application/json")
	// A length, not chunks: the client reads a large answer in one piece.
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.Write(b)
}

// fail writes err as the API's JSON error.
func (h *handler) fail(w http.ResponseWriter, r *http.Request, err error) {
	switch {
	case h.stopping.Err() != nil && errors.Is(err, context.Canceled):
		err = fmt.Errorf("%w: the daemon is stopping; run the command again", errUnavailable)
	case r.Context().Err() != nil && errors.Is(err, context.Canceled):
		h.logger.Debug("client hung up", "method", r.Method, "path", r.URL.Path)
		return // nobody reads the answer
	}
	err = h.keeper.failed(err)
	code := Code(err)
	status := statusOf(code)
	if status >= 500 {
		h.logger.Error("request failed", "method", r.Method, "path", r.URL.Path, "code", code, "err", err)
	} else {
		h.logger.Debug("request refused", "method", r.Method, "path", r.URL.Path, "code", code, "err", err)
	}
	b, _ := marshal(errorBody{Error: &Error{Code: code, Message: err.Error()}})
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(b)
}

// events serves GET /v1/events?from=SEQ&delegation=ID&follow=1 as JSON
// lines. An error after the first line ends the stream with a line
// {"streamError":{...}}.
func (h *handler) events(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	var req EventsRequest
	var err error
	if req.From, err = uintParam(q.Get("from")); err != nil {
		h.fail(w, r, fmt.Errorf("%w: from: %v", fsm.ErrInvalid, err))
		return
	}
	req.Delegation = q.Get("delegation")
	req.Follow = q.Get("follow") == "1" || q.Get("follow") == "true"
	ctx, cancel := context.WithCancel(r.Context())
	defer context.AfterFunc(h.stopping, cancel)()
	defer cancel()
	flusher, _ := w.(http.Flusher)
	started := false
	err = h.svc.Events(ctx, req, func(ev Event) error {
		if !started {
			w.Header().Set("Content-Type", "application/x-ndjson")
			started = true
		}
		b, err := marshal(ev)
		if err != nil {
			return err
		}
		if _, err := w.Write(b); err != nil {
			return err
		}
		if req.Follow && flusher != nil {
			flusher.Flush()
		}
		return nil
	})
	if err == nil && req.Follow && h.stopping.Err() != nil {
		err = fmt.Errorf("%w: the daemon is stopping; follow again from the last sequence number", errUnavailable)
	}
	switch {
	case err != nil && !started:
		h.fail(w, r, err)
	case err != nil:
		b, _ := marshal(map[string]*Error{"streamError": {Code: Code(err), Message: err.Error()}})
		w.Write(b)
	case !started:
		w.Header().Set("Content-Type", "application/x-ndjson")
		w.WriteHeader(http.StatusOK)
	}
}

// stream serves GET /v1/stream?from=SEQ&parentSessionID=P as server-sent
// events: "event" for each new record (its id is the sequence number, so
// a reconnecting EventSource resumes with Last-Event-ID) and
// "notification" for each notification when it becomes due, again when a
// failed delivery keeps it due, and once more on every new connection
// until acknowledged. Without from, the stream starts at the next record.
func (h *handler) stream(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	log := h.svc.Store().Log()
	next := log.Last() + 1
	from := q.Get("from")
	if id := r.Header.Get("Last-Event-ID"); id != "" && from == "" {
		last, err := uintParam(id)
		if err != nil {
			h.fail(w, r, fmt.Errorf("%w: Last-Event-ID: %v", fsm.ErrInvalid, err))
			return
		}
		if last == math.MaxUint64 {
			// last+1 would wrap to 0 and replay the whole log.
			h.fail(w, r, fmt.Errorf("%w: Last-Event-ID %d is the largest sequence number; no event can follow it (reconnect without Last-Event-ID, or with from=SEQ)", fsm.ErrInvalid, last))
			return
		}
		from = strconv.FormatUint(last+1, 10)
	}
	if from != "" {
		n, err := uintParam(from)
		if err != nil {
			h.fail(w, r, fmt.Errorf("%w: from: %v", fsm.ErrInvalid, err))
			return
		}
		next = max(n, 1)
	}
	parent := q.Get("parentSessionID")
	if _, _, err := h.svc.Store().Due(parent); err != nil {
		h.fail(w, r, err) // an invalid parent session id
		return
	}
	flusher, ok := w.(http.Flusher)
	if !ok {
		h.fail(w, r, errors.New("streaming is not supported by this connection"))
		return
	}
	ctx, cancel := context.WithCancel(r.Context())
	defer context.AfterFunc(h.stopping, cancel)()
	defer cancel()
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	flusher.Flush()

	sent := map[string]int{} // notification id → failures when last sent
	for {
		mark := h.svc.Store().Mark() // before the pass: what happens during it ends the wait
		for rec, err := range log.Records(next) {
			if err != nil {
				h.sse(w, "error", "", &Error{Code: Code(err), Message: err.Error()})
				return
			}
			next = rec.Seq + 1
			ev, err := NewEvent(rec)
			if err != nil {
				h.sse(w, "error", "", &Error{Code: Code(err), Message: err.Error()})
				return
			}
			if !h.sse(w, "event", strconv.FormatUint(rec.Seq, 10), ev) {
				return
			}
		}
		due, nextDue, err := h.svc.Store().Due(parent)
		if err != nil {
			h.sse(w, "error", "", &Error{Code: Code(err), Message: err.Error()})
			return
		}
		still := make(map[string]bool, len(due))
		for _, n := range due {
			still[n.ID] = true
			if f, ok := sent[n.ID]; ok && f == n.Failures {
				continue
			}
			if !h.sse(w, "notification", "", n) {
				return
			}
			sent[n.ID] = n.Failures
		}
		for id := range sent {
			if !still[id] {
				delete(sent, id) // acknowledged
			}
		}
		flusher.Flush()
		if err := h.svc.Store().Wait(ctx, mark, nextDue); err != nil {
			return // the client left or the daemon stops
		}
	}
}

// sse writes one server-sent event; false when the client is gone.
func (h *handler) sse(w http.ResponseWriter, event, id string, v any) bool {
	b, err := marshal(v)
	if err != nil {
		return false
	}
	var head string
	if id != "" {
		head = "id: " + id + "\n"
	}
	_, err = fmt.Fprintf(w, "%sevent: %s\ndata: %s\n", head, event, b) // b ends with "\n"
	return err == nil
}

func uintParam(s string) (uint64, error) {
	if s == "" {
		return 0, nil
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("want a sequence number (0 or more), got %q", s)
	}
	return n, nil
}
