package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/delegations/delegations/compaction"
	"github.com/delegations/delegations/eventlog"
	"github.com/delegations/delegations/fsm"
	"github.com/delegations/delegations/projection"
	"github.com/delegations/delegations/projection/artifact"
	"github.com/delegations/delegations/projection/projectid"
)

// MaxWait bounds the wait of a blocking read or notifications call.
const MaxWait = 24 * time.Hour

// Service implements every verb over a store. It is safe for concurrent
// use; the daemon serves it on a socket and the CLI runs it in process
// (Local) when no daemon runs.
type Service struct {
	// store is the store the service runs on; the daemon replaces it when
	// it reopens the log after a failed write.
	store atomic.Pointer[projection.Store]
	// reopening is held while the daemon closes the store and opens it
	// again, so that a wait the closing ended learns the outcome.
	reopening sync.RWMutex
	// OnProgress, if set, sees the progress of long verbs (replay, verify,
	// import). The CLI sets it to draw on a terminal; the daemon does not.
	OnProgress func(done, total int)
}

// NewService returns the service of store s.
func NewService(s *projection.Store) *Service {
	svc := &Service{}
	svc.store.Store(s)
	return svc
}

// Store returns the store the service runs on.
func (s *Service) Store() *projection.Store { return s.store.Load() }

// Register records a new delegation.
func (s *Service) Register(ctx context.Context, r RegisterRequest) (fsm.Delegation, error) {
	project, err := projectOf(ctx, r.ProjectID, r.ProjectDir, true)
	if err != nil {
		return fsm.Delegation{}, err
	}
	if r.TimeoutMs < 0 {
		return fsm.Delegation{}, fmt.Errorf("%w: timeoutMs %d is negative; leave it out for the default", fsm.ErrInvalid, r.TimeoutMs)
	}
	if r.TimeoutMs > fsm.MaxTimeout.Milliseconds() { // before it overflows a Duration
		return fsm.Delegation{}, fmt.Errorf("%w: timeoutMs %d: want between 1s and 7 days", fsm.ErrInvalid, r.TimeoutMs)
	}
	return s.Store().Register(ctx, projection.Registration{
		ProjectID:       project,
		RootSessionID:   r.RootSessionID,
		ParentSessionID: r.ParentSessionID,
		ParentMessageID: r.ParentMessageID,
		ParentAgent:     r.ParentAgent,
		SessionID:       r.SessionID,
		Agent:           r.Agent,
		Model:           r.Model,
		Prompt:          r.Prompt,
		Timeout:         time.Duration(r.TimeoutMs) * time.Millisecond,
		IdempotencyKey:  r.IdempotencyKey,
	})
}

// projectOf resolves a request's project: the id as given, or derived from
// an absolute directory as the plugin derives it. Both empty is an error
// only when required.
func projectOf(ctx context.Context, id, dir string, required bool) (string, error) {
	switch {
	case id != "" && dir != "":
		return "", fmt.Errorf("%w: give projectId or projectDir, not both", fsm.ErrInvalid)
	case dir != "":
		if !filepath.IsAbs(dir) {
			return "", fmt.Errorf("%w: projectDir %q is not absolute: the daemon does not share the caller's working directory", fsm.ErrInvalid, dir)
		}
		id, err := projectid.Of(ctx, dir)
		if err != nil {
			if ctx.Err() != nil {
				return "", err // the caller's end (it wraps it), not the directory's fault
			}
			return "", fmt.Errorf("%w: projectDir: %v", fsm.ErrInvalid, err)
		}
		return id, nil
	case id == "" && required:
		return "", fmt.Errorf("%w: give projectId, or projectDir to derive it", fsm.ErrInvalid)
	}
	return id, nil
}

// Start marks a delegation running.
func (s *Service) Start(ctx context.Context, r StartRequest) (fsm.Delegation, error) {
	return s.Store().Start(ctx, strings.TrimSpace(r.ID), r.SessionID)
}

// Progress records a heartbeat with the child's latest text.
func (s *Service) Progress(ctx context.Context, r ProgressRequest) (fsm.Delegation, error) {
	return s.Store().Progress(ctx, strings.TrimSpace(r.ID), r.Message)
}

// Complete ends a delegation with its result.
func (s *Service) Complete(ctx context.Context, r CompleteRequest) (fsm.Delegation, error) {
	return s.Store().Complete(ctx, strings.TrimSpace(r.ID), r.Result, r.Title, r.Description)
}

// Fail ends a delegation with an error.
func (s *Service) Fail(ctx context.Context, r FailRequest) (fsm.Delegation, error) {
	return s.Store().Fail(ctx, strings.TrimSpace(r.ID), r.Error)
}

// Cancel ends a delegation before completion.
func (s *Service) Cancel(ctx context.Context, r CancelRequest) (fsm.Delegation, error) {
	return s.Store().Cancel(ctx, strings.TrimSpace(r.ID), r.Reason)
}

// Show returns a delegation's record.
func (s *Service) Show(_ context.Context, r IDRequest) (fsm.Delegation, error) {
	return s.Store().Get(strings.TrimSpace(r.ID))
}

// Read returns a delegation's result as delegation_read does.
func (s *Service) Read(ctx context.Context, r ReadRequest) (projection.ReadResult, error) {
	wait, err := waitOf(r.WaitMs)
	if err != nil {
		return projection.ReadResult{}, err
	}
	for {
		st := s.Store()
		res, err := st.Read(ctx, strings.TrimSpace(r.RootSessionID), r.ID, wait)
		if s.replaced(st, err) {
			continue // the daemon reopened the log: wait on the new one
		}
		return res, err
	}
}

// replaced reports whether err came from store st closing because the
// daemon reopened the log, so that a wait can go on on the new one.
func (s *Service) replaced(st *projection.Store, err error) bool {
	if !errors.Is(err, eventlog.ErrClosed) {
		return false
	}
	s.reopening.RLock()
	defer s.reopening.RUnlock()
	return s.Store() != st
}

// List returns a root session's delegations, and delegation_list's text.
func (s *Service) List(_ context.Context, r ListRequest) (List, error) {
	var o projection.ListOptions
	switch r.Order {
	case "", "id":
	case "time":
		o.ByTime = true
	default:
		return List{}, fmt.Errorf("%w: order is id or time, not %q", fsm.ErrInvalid, r.Order)
	}
	o.Unread = r.Unread
	if r.Status != "" {
		st, err := fsm.ParseState(r.Status)
		if err != nil {
			return List{}, fmt.Errorf("%w: status: %v", fsm.ErrInvalid, err)
		}
		o.Status = st
	}
	if r.Limit < 0 {
		return List{}, fmt.Errorf("%w: limit %d is negative; leave it out for all", fsm.ErrInvalid, r.Limit)
	}
	o.After = strings.TrimSpace(r.After)
	if r.Limit > 0 {
		o.Limit = min(r.Limit, math.MaxInt-1) + 1 // one more says whether a next page exists
	}
	// The text is rendered as the summaries come: a textOnly listing
	// holds none of them.
	var (
		ds         []fsm.Delegation
		text       artifact.ListTextBuilder
		n          int
		last, next string
	)
	sized := func(n int) {
		text.Grow(n)
		if !r.TextOnly {
			ds = make([]fsm.Delegation, 0, n)
		}
	}
	err := s.Store().EachSummary(strings.TrimSpace(r.RootSessionID), o, sized, func(d *fsm.Delegation) error {
		if n++; r.Limit > 0 && n > r.Limit {
			next = last
			return nil
		}
		text.Add(d)
		if !r.TextOnly {
			ds = append(ds, *d)
		}
		last = d.ID
		return nil
	})
	if err != nil {
		return List{}, err
	}
	return List{Delegations: delegations(ds).Delegations, Text: text.String(), Next: next}, nil
}

// Active lists the active delegations, earliest deadline first: what a
// bridge that restarted reconciles against its host.
func (s *Service) Active(ctx context.Context, r ActiveRequest) (Delegations, error) {
	project, err := projectOf(ctx, strings.TrimSpace(r.ProjectID), r.ProjectDir, false)
	if err != nil {
		return Delegations{}, err
	}
	ds, err := s.Store().Active(projection.ActiveFilter{
		ProjectID:     project,
		RootSessionID: strings.TrimSpace(r.RootSessionID), ParentSessionID: strings.TrimSpace(r.ParentSessionID),
	})
	return delegations(ds), err
}

func delegations(ds []fsm.Delegation) Delegations {
	if ds == nil {
		ds = []fsm.Delegation{} // [] rather than null for clients
	}
	return Delegations{Delegations: ds}
}

// Notifications returns the due notifications, waiting up to WaitMs for
// one when none is due.
func (s *Service) Notifications(ctx context.Context, r NotificationsRequest) (Notifications, error) {
	wait, err := waitOf(r.WaitMs)
	if err != nil {
		return Notifications{}, err
	}
	st := s.Store()
	ns, err := st.WaitNotifications(ctx, strings.TrimSpace(r.ParentSessionID), wait)
	for s.replaced(st, err) {
		st = s.Store()
		ns, err = st.WaitNotifications(ctx, strings.TrimSpace(r.ParentSessionID), wait)
	}
	if ns == nil {
		ns = []projection.Notification{}
	}
	return Notifications{Notifications: ns}, err
}

// Ack records the delivery of a notification, or with Failed its failure.
func (s *Service) Ack(ctx context.Context, r AckRequest) (projection.AckResult, error) {
	if r.Failed != "" {
		return s.Store().AckFailed(ctx, r.ID, r.Failed)
	}
	return s.Store().Ack(ctx, r.ID)
}

// Compact renders the <delegation-context> block of a root session.
func (s *Service) Compact(_ context.Context, r CompactRequest) (CompactResponse, error) {
	if r.MaxUnread < 0 || r.MaxBytes < 0 {
		return CompactResponse{}, fmt.Errorf("%w: maxUnread and maxBytes must not be negative", fsm.ErrInvalid)
	}
	if r.MaxUnread == 0 {
		r.MaxUnread = compaction.DefaultMaxUnread
	}
	running, unread, err := s.Store().Carried(strings.TrimSpace(r.RootSessionID), r.MaxUnread)
	if err != nil {
		return CompactResponse{}, err
	}
	res := compaction.Render(running, unread, compaction.Options{
		MaxUnread: r.MaxUnread, MaxBytes: r.MaxBytes, DataDir: s.Store().Dir(), Brief: r.Brief,
	})
	return CompactResponse{Block: res.Text, Running: res.Running, Unread: res.Unread, Omitted: res.Omitted}, nil
}

// Events calls emit for every record from r.From on (of r.Delegation
// only, when set), oldest first. With r.Follow it then waits for new
// records until ctx ends, which is a clean end (nil).
func (s *Service) Events(ctx context.Context, r EventsRequest, emit func(Event) error) error {
	if r.From == 0 {
		r.From = 1
	}
	id := strings.TrimSpace(r.Delegation)
	if id != "" {
		if err := fsm.ValidateID(id); err != nil {
			return err
		}
		if !r.Follow {
			return s.streamEvents(id, r.From, emit)
		}
		// Ids come from register, so one without events never gets any.
		if _, err := s.Store().Get(id); err != nil {
			return err
		}
	}
	log := s.Store().Log()
	next := r.From
	for {
		for rec, err := range log.Records(next) {
			if err != nil {
				return err
			}
			next = rec.Seq + 1
			if id != "" && rec.Stream != id {
				continue
			}
			if err := emitRecord(rec, emit); err != nil {
				return err
			}
		}
		if !r.Follow {
			return nil
		}
		if _, err := log.Wait(ctx, next-1); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
	}
}

// streamEvents emits one delegation's events through its stream index.
func (s *Service) streamEvents(id string, from uint64, emit func(Event) error) error {
	recs, err := s.Store().Log().Stream(id)
	if err != nil {
		return err
	}
	if len(recs) == 0 {
		return fmt.Errorf("%w: delegation %q has no events in %s", fsm.ErrNotFound, id, s.Store().Dir())
	}
	for _, rec := range recs {
		if rec.Seq < from {
			continue
		}
		if err := emitRecord(rec, emit); err != nil {
			return err
		}
	}
	return nil
}

// emitRecord decodes a record and passes it to emit.
func emitRecord(rec eventlog.Record, emit func(Event) error) error {
	ev, err := NewEvent(rec)
	if err != nil {
		return err
	}
	return emit(ev)
}

func waitOf(ms int64) (time.Duration, error) {
	if ms < 0 || ms > MaxWait.Milliseconds() {
		return 0, fmt.Errorf("%w: waitMs %d is outside 0..%d", fsm.ErrInvalid, ms, MaxWait.Milliseconds())
	}
	return time.Duration(ms) * time.Millisecond, nil
}

// endpoint is one verb: how large its body may be and how to serve it.
type endpoint struct {
	limit  int64
	fields []string // the request's JSON fields, for error messages
	serve  func(ctx context.Context, s *Service, body []byte) (any, error)
}

// verb builds the endpoint of a Service method.
func verb[Req, Resp any](limit int64, method func(*Service, context.Context, Req) (Resp, error)) endpoint {
	fields := jsonFields(reflect.TypeFor[Req]())
	return endpoint{
		limit:  limit,
		fields: fields,
		serve: func(ctx context.Context, s *Service, body []byte) (any, error) {
			var req Req
			if err := decode(body, &req, fields); err != nil {
				return nil, err
			}
			return method(s, ctx, req)
		},
	}
}

// small is the body limit of verbs without long texts.
const small = 64 << 10

// textLimit is the body limit of a verb whose longest text may be max
// bytes: JSON escapes at most six bytes per byte ("\u0000").
func textLimit(max int) int64 { return int64(6*max) + small }

// endpoints are the verbs, by name: POST /v1/<name>.
var endpoints = map[string]endpoint{
	"register":      verb(textLimit(fsm.MaxPromptLen), (*Service).Register),
	"start":         verb(small, (*Service).Start),
	"progress":      verb(textLimit(fsm.MaxMessageLen), (*Service).Progress),
	"complete":      verb(textLimit(fsm.MaxResultLen+fsm.MaxDescriptionLen+fsm.MaxTitleLen), (*Service).Complete),
	"fail":          verb(textLimit(fsm.MaxErrorLen), (*Service).Fail),
	"cancel":        verb(textLimit(fsm.MaxReasonLen), (*Service).Cancel),
	"show":          verb(small, (*Service).Show),
	"read":          verb(small, (*Service).Read),
	"list":          verb(small, (*Service).List),
	"active":        verb(small, (*Service).Active),
	"notifications": verb(small, (*Service).Notifications),
	"ack":           verb(textLimit(fsm.MaxErrorLen), (*Service).Ack),
	"compact":       verb(small, (*Service).Compact),
	"replay":        verb(small, (*Service).Replay),
	"verify":        verb(small, (*Service).Verify),
	"timeline":      verb(small, (*Service).Timeline),
	"import":        verb(small, (*Service).Import),
	"backup":        verb(small, (*Service).Backup),
}

// Verbs returns the names of the POST endpoints, sorted.
func Verbs() []string {
	names := make([]string, 0, len(endpoints))
	for n := range endpoints {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// call runs a verb on a request body read from r.
func (s *Service) call(ctx context.Context, name string, r io.Reader) (any, error) {
	ep, body, err := readRequest(name, r)
	if err != nil {
		return nil, err
	}
	return ep.serve(ctx, s, body)
}

// readRequest finds a verb's endpoint and reads its request body, within
// the verb's limit.
func readRequest(name string, r io.Reader) (endpoint, []byte, error) {
	ep, ok := endpoints[name]
	if !ok {
		return endpoint{}, nil, fmt.Errorf("%w: /v1/%s; the verbs are %s", errNoEndpoint, name, strings.Join(Verbs(), ", "))
	}
	body, err := io.ReadAll(io.LimitReader(r, ep.limit+1))
	if err != nil {
		return endpoint{}, nil, fmt.Errorf("%w: read request body: %v", fsm.ErrInvalid, err)
	}
	if int64(len(body)) > ep.limit {
		return endpoint{}, nil, fmt.Errorf("%w: the body of %s is limited to %d bytes; send long texts within the limits in README", errTooLarge, name, ep.limit)
	}
	return ep, body, nil
}

// decode decodes one JSON object strictly: valid UTF-8, no unknown fields
// (fields are the struct's JSON names), nothing after it. What a client
// sends almost always (see plainObject) is decoded in one pass; anything
// else goes the long way, decodeStrict, which says what is wrong.
func decode(body []byte, v any, fields []string) error {
	if plainObject(body, fields) && utf8.Valid(body) && checkSurrogates(body) == nil {
		if json.Unmarshal(body, v) == nil {
			return nil
		}
		reflect.ValueOf(v).Elem().SetZero()
	}
	return decodeStrict(body, v, fields)
}

// decodeStrict is decode with every check spelt out.
func decodeStrict(body []byte, v any, fields []string) error {
	if len(bytes.TrimSpace(body)) == 0 {
		return fmt.Errorf("%w: empty request body; send a JSON object with the fields %s", fsm.ErrInvalid, strings.Join(fields, ", "))
	}
	if !utf8.Valid(body) {
		return fmt.Errorf("%w: request body is not valid UTF-8", fsm.ErrInvalid)
	}
	if err := checkSurrogates(body); err != nil {
		return err
	}
	if err := checkRaw(body, fields); err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	var syntax *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case err == nil:
	case errors.As(err, &syntax):
		return fmt.Errorf("%w: malformed JSON at byte %d: %v", fsm.ErrInvalid, syntax.Offset, syntax)
	case errors.As(err, &typ) && typ.Field == "":
		return fmt.Errorf("%w: want a JSON object, got %s", fsm.ErrInvalid, typ.Value)
	case errors.As(err, &typ):
		return fmt.Errorf("%w: field %q: want a JSON %s, got %s", fsm.ErrInvalid, typ.Field, typ.Type, typ.Value)
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		return fmt.Errorf("%w: %s; the fields are %s", fsm.ErrInvalid, strings.TrimPrefix(err.Error(), "json: "), strings.Join(fields, ", "))
	default:
		return fmt.Errorf("%w: malformed JSON: %v; send one JSON object", fsm.ErrInvalid, err)
	}
	// Token, not More: More reports a stray '}' or ']' as the end.
	if _, err := dec.Token(); err != io.EOF {
		return fmt.Errorf("%w: data after the JSON object; send exactly one", fsm.ErrInvalid)
	}
	return nil
}

// checkRaw refuses what encoding/json would accept silently and change:
// a field name in another case (it matches case-insensitively) and a
// field given twice (the last one wins); checkSurrogates refuses an
// escaped lone surrogate such as "\ud800" (stored as U+FFFD, not as
// sent). Malformed JSON is left to the decoder, which says where it is.
func checkRaw(body []byte, fields []string) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	// One frame per open object or array; in an object, a string token is
	// a key when the frame expects one.
	type frame struct {
		object, wantKey bool
		seen            map[string]bool
	}
	var stack []frame
	for {
		tok, err := dec.Token()
		if err != nil {
			return nil // the end, or malformed JSON for the decoder to report
		}
		if n := len(stack); n > 0 && stack[n-1].object && stack[n-1].wantKey {
			key, ok := tok.(string)
			if !ok {
				continue // the closing brace
			}
			top := &stack[n-1]
			top.wantKey = false
			if n == 1 {
				if !slices.Contains(fields, key) {
					if i := slices.IndexFunc(fields, func(f string) bool { return strings.EqualFold(f, key) }); i >= 0 {
						return fmt.Errorf("%w: unknown field %q; field names are case-sensitive: did you mean %q?", fsm.ErrInvalid, key, fields[i])
					}
					return fmt.Errorf("%w: unknown field %q; the fields are %s", fsm.ErrInvalid, key, strings.Join(fields, ", "))
				}
			}
			if top.seen[key] {
				return fmt.Errorf("%w: field %q appears twice; give each field once", fsm.ErrInvalid, key)
			}
			top.seen[key] = true
			continue
		}
		switch tok {
		case json.Delim('{'):
			stack = append(stack, frame{object: true, wantKey: true, seen: map[string]bool{}})
			continue
		case json.Delim('['):
			stack = append(stack, frame{})
			continue
		case json.Delim('}'), json.Delim(']'):
			stack = stack[:len(stack)-1]
		}
		// A value ended: an object now expects its next key.
		if n := len(stack); n > 0 && stack[n-1].object {
			stack[n-1].wantKey = true
		}
	}
}

// plainObject reports whether body is one JSON object, with nothing but
// whitespace around it, whose keys are written without escapes, are
// distinct and are all among fields, and whose values are strings,
// numbers, true, false or null, none of them an object or array. Such a
// body passes checkRaw, and decodes with json.Unmarshal exactly as with
// the strict decoder: decode takes that shorter way when Unmarshal
// accepts it (the values' own syntax is Unmarshal's to check).
func plainObject(body []byte, fields []string) bool {
	if len(fields) > 64 {
		return false
	}
	var seen uint64 // a bit per field
	return fsm.WalkPlainObject(body, func(key []byte, i int) (int, bool) {
		k := slices.Index(fields, string(key))
		if k < 0 || seen&(1<<k) != 0 {
			return i, false
		}
		seen |= 1 << k
		switch {
		case i == len(body) || body[i] == '{' || body[i] == '[':
			return i, false
		case body[i] == '"':
			j := i + 1
			for j < len(body) && body[j] != '"' {
				if body[j] == '\\' {
					j++
				}
				j++
			}
			return j + 1, j < len(body)
		}
		j := i
		for j < len(body) && body[j] != ',' && body[j] != '}' && body[j] != ' ' && body[j] != '\t' && body[j] != '\n' && body[j] != '\r' {
			j++
		}
		return j, j > i
	})
}

// checkSurrogates refuses a \uXXXX escape of a UTF-16 surrogate that is not
// half of a pair (a high one followed by a low one). Bodies are valid
// UTF-8, so raw bytes never encode a surrogate; only escapes can.
func checkSurrogates(body []byte) error {
	inString := false
	for i := 0; i < len(body); i++ {
		c := body[i]
		switch {
		case !inString:
			inString = c == '"'
		case c == '"':
			inString = false
		case c == '\\' && i+1 < len(body):
			i++
			if body[i] != 'u' {
				continue
			}
			r, ok := hex4(body, i+1)
			if !ok {
				continue // malformed: the decoder says so
			}
			i += 4
			switch {
			case r >= 0xDC00 && r <= 0xDFFF:
				return fmt.Errorf("%w: the escape \\u%04x at byte %d is a lone low surrogate, which no text can hold; send the character itself, or a surrogate pair", fsm.ErrInvalid, r, i-5)
			case r >= 0xD800 && r <= 0xDBFF:
				if i+2 < len(body) && body[i+1] == '\\' && body[i+2] == 'u' {
					if lo, ok := hex4(body, i+3); ok && lo >= 0xDC00 && lo <= 0xDFFF {
						i += 6
						continue
					}
				}
				return fmt.Errorf("%w: the escape \\u%04x at byte %d is a lone high surrogate, which no text can hold; send the character itself, or a surrogate pair", fsm.ErrInvalid, r, i-5)
			}
		}
	}
	return nil
}

// hex4 parses the four hex digits at b[i:].
func hex4(b []byte, i int) (rune, bool) {
	if i+4 > len(b) {
		return 0, false
	}
	var r rune
	for _, c := range b[i : i+4] {
		switch {
		case c >= '0' && c <= '9':
			r = r<<4 | rune(c-'0')
		case c >= 'a' && c <= 'f':
			r = r<<4 | rune(c-'a'+10)
		case c >= 'A' && c <= 'F':
			r = r<<4 | rune(c-'A'+10)
		default:
			return 0, false
		}
	}
	return r, true
}

// jsonFields lists the JSON names of a struct's fields.
func jsonFields(t reflect.Type) []string {
	var names []string
	for f := range t.Fields() {
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name != "" && name != "-" {
			names = append(names, name)
		}
	}
	return names
}

// Local runs verbs in process, through the same JSON encoding as the
// socket, so that its answers are byte for byte the daemon's.
type Local struct {
	Service *Service
}

// Call runs verb with request req and decodes its answer into resp.
func (l Local) Call(ctx context.Context, verb string, req, resp any) error {
	body, err := json.Marshal(req)
	if err != nil {
		return fmt.Errorf("encode %s request: %w", verb, err)
	}
	out, err := l.Service.call(ctx, verb, bytes.NewReader(body))
	if err != nil {
		return err
	}
	b, err := marshal(out)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, resp)
}

// Events runs the events verb in process.
func (l Local) Events(ctx context.Context, r EventsRequest, emit func(Event) error) error {
	return l.Service.Events(ctx, r, emit)
}

// marshal encodes v as the API does: no HTML escaping, one line.
func marshal(v any) ([]byte, error) {
	// The answers of the lifecycle verbs, written directly: encoding/json
	// would call the record's MarshalJSON, then check and copy its bytes.
	switch a := v.(type) {
	case jsonAppender:
		return append(a.appendJSON(nil), '\n'), nil
	case fsm.Delegation:
		return append(a.AppendJSON(nil), '\n'), nil
	case projection.ReadResult:
		b := fsm.AppendJSONString(append(make([]byte, 0, 1024+len(a.Text)), `{"text":`...), a.Text, false)
		b = strconv.AppendBool(append(b, `,"artifact":`...), a.Artifact)
		b = a.Delegation.AppendJSON(append(b, `,"delegation":`...))
		return append(b, "}\n"...), nil
	}
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}
