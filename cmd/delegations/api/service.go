package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/delegations/delegations/compaction"
	"github.com/delegations/delegations/eventlog"
	"github.com/delegations/delegations/fsm"
	"github.com/delegations/delegations/projection"
)

// MaxWait bounds the wait of a blocking read or notifications call.
const MaxWait = 24 * time.Hour

// Service implements every verb over a store. It is safe for concurrent
// use; the daemon serves it on a socket and the CLI runs it in process
// (Local) when no daemon runs.
type Service struct {
	store *projection.Store
	// OnProgress, if set, sees the progress of long verbs (replay, verify,
	// import). The CLI sets it to draw on a terminal; the daemon does not.
	OnProgress func(done, total int)
}

// NewService returns the service of store s.
func NewService(s *projection.Store) *Service { return &Service{store: s} }

// Store returns the store the service runs on.
func (s *Service) Store() *projection.Store { return s.store }

// Register records a new delegation.
func (s *Service) Register(ctx context.Context, r RegisterRequest) (fsm.Delegation, error) {
	switch {
	case r.ProjectID != "" && r.ProjectDir != "":
		return fsm.Delegation{}, fmt.Errorf("%w: give projectId or projectDir, not both", fsm.ErrInvalid)
	case r.ProjectDir != "":
		if !filepath.IsAbs(r.ProjectDir) {
			return fsm.Delegation{}, fmt.Errorf("%w: projectDir %q is not absolute: the daemon does not share the caller's working directory", fsm.ErrInvalid, r.ProjectDir)
		}
		id, err := projection.ProjectID(ctx, r.ProjectDir)
		if err != nil {
			return fsm.Delegation{}, fmt.Errorf("%w: projectDir: %v", fsm.ErrInvalid, err)
		}
		r.ProjectID = id
	case r.ProjectID == "":
		return fsm.Delegation{}, fmt.Errorf("%w: give projectId, or projectDir to derive it", fsm.ErrInvalid)
	}
	if r.TimeoutMs < 0 {
		return fsm.Delegation{}, fmt.Errorf("%w: timeoutMs %d is negative; leave it out for the default", fsm.ErrInvalid, r.TimeoutMs)
	}
	if r.TimeoutMs > fsm.MaxTimeout.Milliseconds() { // before it overflows a Duration
		return fsm.Delegation{}, fmt.Errorf("%w: timeoutMs %d: want between 1s and 7 days", fsm.ErrInvalid, r.TimeoutMs)
	}
	return s.store.Register(ctx, projection.Registration{
		ProjectID:       r.ProjectID,
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

// Start marks a delegation running.
func (s *Service) Start(ctx context.Context, r StartRequest) (fsm.Delegation, error) {
	return s.store.Start(ctx, strings.TrimSpace(r.ID), r.SessionID)
}

// Progress records a heartbeat with the child's latest text.
func (s *Service) Progress(ctx context.Context, r ProgressRequest) (fsm.Delegation, error) {
	return s.store.Progress(ctx, strings.TrimSpace(r.ID), r.Message)
}

// Complete ends a delegation with its result.
func (s *Service) Complete(ctx context.Context, r CompleteRequest) (fsm.Delegation, error) {
	return s.store.Complete(ctx, strings.TrimSpace(r.ID), r.Result, r.Title, r.Description)
}

// Fail ends a delegation with an error.
func (s *Service) Fail(ctx context.Context, r FailRequest) (fsm.Delegation, error) {
	return s.store.Fail(ctx, strings.TrimSpace(r.ID), r.Error)
}

// Cancel ends a delegation before completion.
func (s *Service) Cancel(ctx context.Context, r CancelRequest) (fsm.Delegation, error) {
	return s.store.Cancel(ctx, strings.TrimSpace(r.ID), r.Reason)
}

// Show returns a delegation's record.
func (s *Service) Show(_ context.Context, r IDRequest) (fsm.Delegation, error) {
	return s.store.Get(strings.TrimSpace(r.ID))
}

// Read returns a delegation's result as delegation_read does.
func (s *Service) Read(ctx context.Context, r ReadRequest) (projection.ReadResult, error) {
	wait, err := waitOf(r.WaitMs)
	if err != nil {
		return projection.ReadResult{}, err
	}
	return s.store.Read(ctx, strings.TrimSpace(r.RootSessionID), r.ID, wait)
}

// List returns a root session's delegations.
func (s *Service) List(_ context.Context, r ListRequest) (Delegations, error) {
	var o projection.ListOptions
	switch r.Order {
	case "", "id":
	case "time":
		o.ByTime = true
	default:
		return Delegations{}, fmt.Errorf("%w: order is id or time, not %q", fsm.ErrInvalid, r.Order)
	}
	o.Unread = r.Unread
	if r.Status != "" {
		st, err := fsm.ParseState(r.Status)
		if err != nil {
			return Delegations{}, fmt.Errorf("%w: status: %v", fsm.ErrInvalid, err)
		}
		o.Status = st
	}
	ds, err := s.store.List(strings.TrimSpace(r.RootSessionID), o)
	return delegations(ds), err
}

// Active lists the active delegations, earliest deadline first: what a
// bridge that restarted reconciles against its host.
func (s *Service) Active(_ context.Context, r ActiveRequest) (Delegations, error) {
	ds, err := s.store.Active(projection.ActiveFilter{
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
	ns, err := s.store.WaitNotifications(ctx, strings.TrimSpace(r.ParentSessionID), wait)
	if ns == nil {
		ns = []projection.Notification{}
	}
	return Notifications{Notifications: ns}, err
}

// Ack records the delivery of a notification, or with Failed its failure.
func (s *Service) Ack(ctx context.Context, r AckRequest) (projection.AckResult, error) {
	if r.Failed != "" {
		return s.store.AckFailed(ctx, r.ID, r.Failed)
	}
	return s.store.Ack(ctx, r.ID)
}

// Compact renders the <delegation-context> block of a root session.
func (s *Service) Compact(_ context.Context, r CompactRequest) (CompactResponse, error) {
	if r.MaxUnread < 0 || r.MaxBytes < 0 {
		return CompactResponse{}, fmt.Errorf("%w: maxUnread and maxBytes must not be negative", fsm.ErrInvalid)
	}
	if r.MaxUnread == 0 {
		r.MaxUnread = compaction.DefaultMaxUnread
	}
	running, unread, err := s.store.Carried(strings.TrimSpace(r.RootSessionID), r.MaxUnread)
	if err != nil {
		return CompactResponse{}, err
	}
	res := compaction.Render(running, unread, compaction.Options{
		MaxUnread: r.MaxUnread, MaxBytes: r.MaxBytes, DataDir: s.store.Dir(), Brief: r.Brief,
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
		if _, err := s.store.Get(id); err != nil {
			return err
		}
	}
	log := s.store.Log()
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
	recs, err := s.store.Log().Stream(id)
	if err != nil {
		return err
	}
	if len(recs) == 0 {
		return fmt.Errorf("%w: delegation %q has no events in %s", fsm.ErrNotFound, id, s.store.Dir())
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
	return endpoint{
		limit:  limit,
		fields: jsonFields(reflect.TypeFor[Req]()),
		serve: func(ctx context.Context, s *Service, body []byte) (any, error) {
			var req Req
			if err := decode(body, &req, reflect.TypeFor[Req]()); err != nil {
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
	ep, ok := endpoints[name]
	if !ok {
		return nil, fmt.Errorf("%w: /v1/%s; the verbs are %s", errNoEndpoint, name, strings.Join(Verbs(), ", "))
	}
	body, err := io.ReadAll(io.LimitReader(r, ep.limit+1))
	if err != nil {
		return nil, fmt.Errorf("%w: read request body: %v", fsm.ErrInvalid, err)
	}
	if int64(len(body)) > ep.limit {
		return nil, fmt.Errorf("%w: the body of %s is limited to %d bytes; send long texts within the limits in README", errTooLarge, name, ep.limit)
	}
	return ep.serve(ctx, s, body)
}

// decode decodes one JSON object strictly: valid UTF-8, no unknown fields,
// nothing after it.
func decode(body []byte, v any, t reflect.Type) error {
	if len(bytes.TrimSpace(body)) == 0 {
		return fmt.Errorf("%w: empty request body; send a JSON object with the fields %s", fsm.ErrInvalid, strings.Join(jsonFields(t), ", "))
	}
	if !utf8.Valid(body) {
		return fmt.Errorf("%w: request body is not valid UTF-8", fsm.ErrInvalid)
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
		return fmt.Errorf("%w: %s; the fields are %s", fsm.ErrInvalid, strings.TrimPrefix(err.Error(), "json: "), strings.Join(jsonFields(t), ", "))
	default:
		return fmt.Errorf("%w: malformed JSON: %v; send one JSON object", fsm.ErrInvalid, err)
	}
	if dec.More() {
		return fmt.Errorf("%w: data after the JSON object; send exactly one", fsm.ErrInvalid)
	}
	return nil
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
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}
