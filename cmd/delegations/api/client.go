package api

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/delegations/delegations/fsm"
)

// ErrNoDaemon means no daemon is running: it does not exist, or
// it was left by a daemon that died.
var ErrNoDaemon = errors.New("no daemon is running")

// ErrNotAnswering means a daemon holds the socket but does not answer
// within the client's deadlines: it is stopped (SIGSTOP), or stuck.
var ErrNotAnswering = errors.New("the daemon does not answer")

// Defaults of ClientOptions.
const (
	// DefaultConnectTimeout bounds connecting to the socket.
	DefaultConnectTimeout = 2 * time.Second
	// DefaultResponseTimeout bounds the wait for an answer to a call that
	// does not wait by design; a blocking call (read or notifications with
	// waitMs) gets its own wait plus this.
	DefaultResponseTimeout = 10 * time.Second
)

// ClientOptions tune a Client; zero fields take the defaults.
type ClientOptions struct {
	ConnectTimeout  time.Duration
	ResponseTimeout time.Duration
}

// Client calls a daemon over its unix socket. Every call has deadlines:
// connecting, and answering (see ClientOptions). When an answer is late,
// the client asks the daemon for its status on a new connection: a daemon
// that answers that is busy (a long verify), and the call goes on waiting;
// one that does not fails the call with an error wrapping ErrNotAnswering
// that names its pid and what to do.
type Client struct {
	socket string
	hc     *http.Client
	pid    int // the daemon's, from the socket's peer credentials; 0 when unknown
	opts   ClientOptions
}

// Dial connects to the daemon on socket with the default deadlines; see
// DialWith.
func Dial(ctx context.Context, socket string) (*Client, error) {
	return DialWith(ctx, socket, ClientOptions{})
}

// DialWith connects to the daemon on socket. It returns an error wrapping
// ErrNoDaemon when nothing listens there, so the caller can work on the
// log itself.
func DialWith(ctx context.Context, socket string, o ClientOptions) (*Client, error) {
	o.ConnectTimeout = cmp.Or(o.ConnectTimeout, DefaultConnectTimeout)
	o.ResponseTimeout = cmp.Or(o.ResponseTimeout, DefaultResponseTimeout)
	if len(socket) > maxSocketPath {
		// Serve refuses such a path, so no daemon listens there.
		return nil, fmt.Errorf("%w: %s is too long for a socket", ErrNoDaemon, socket)
	}
	if filepath.Dir(socket) == ShortSocketDir() {
		if err := checkPrivateDir(filepath.Dir(socket)); err != nil {
			return nil, err
		}
	}
	conn, err := dial(ctx, socket, o.ConnectTimeout)
	switch {
	case err == nil:
	case errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ENOTDIR):
		return nil, fmt.Errorf("%w on %s", ErrNoDaemon, socket)
	case errors.Is(err, ErrNotAnswering):
		return nil, err
	default:
		return nil, fmt.Errorf("connect to the daemon on %s: %w", socket, err)
	}
	pid, uid, known := peer(conn)
	conn.Close()
	if known && uid != os.Getuid() {
		// Whoever listens there would read every prompt and result, and
		// could forge notifications: only our own daemon is trusted.
		return nil, fmt.Errorf("the daemon on %s runs as uid %d, not as this user (uid %d); refusing to talk to it: choose another socket with --socket or $DELEGATIONS_SOCKET", socket, uid, os.Getuid())
	}
	c := &Client{socket: socket, pid: pid, opts: o}
	c.hc = &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return dial(ctx, socket, c.opts.ConnectTimeout)
		},
		DisableCompression: true,
	}}
	return c, nil
}

// dial connects to the daemon's socket within limit. A connect that meets
// a full backlog, or that the limit ends, is a daemon that does not answer
// (ErrNotAnswering). net reports the limit as context.DeadlineExceeded, as
// it does the caller's own deadline, which stays the caller's. (The HTTP
// transport dials with a context the caller's deadline does not reach;
// lost tells the caller's end first.)
func dial(ctx context.Context, socket string, limit time.Duration) (net.Conn, error) {
	conn, err := (&net.Dialer{Timeout: limit}).DialContext(ctx, "unix", socket)
	if err != nil && (errors.Is(err, syscall.EAGAIN) || ctx.Err() == nil && (errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded))) {
		return nil, fmt.Errorf("connect to the daemon on %s: %w (its connection backlog is full: it serves too many clients, or is stopped)", socket, ErrNotAnswering)
	}
	return conn, err
}

// Close releases the client's idle connections.
func (c *Client) Close() error {
	c.hc.CloseIdleConnections()
	return nil
}

// Socket returns the socket the client talks to.
func (c *Client) Socket() string { return c.socket }

// Call runs verb on the daemon with request req and decodes its answer
// into resp. An error the daemon reports is an *Error.
func (c *Client) Call(ctx context.Context, verb string, req, resp any) error {
	body, err := json.Marshal(req)
	if err != nil {
		return fmt.Errorf("encode %s request: %w", verb, err)
	}
	ctx, done := c.deadline(ctx, c.opts.ResponseTimeout+waitOfRequest(req))
	defer done()
	r, err := c.do(ctx, http.MethodPost, "/v1/"+verb, nil, bytes.NewReader(body))
	if err != nil {
		return err
	}
	defer r.Body.Close()
	if err := decodeAnswer(r, resp); err != nil {
		return c.lost(ctx, fmt.Errorf("decode the answer to %s: %w", verb, err))
	}
	return nil
}

// decodeAnswer decodes the JSON answer r carries into resp. An answer of a
// known length (the daemon sends one) is read into one buffer of that
// size, rather than into one that doubles as it fills.
func decodeAnswer(r *http.Response, resp any) error {
	if r.ContentLength <= 0 || r.ContentLength > maxAnswer {
		return json.NewDecoder(r.Body).Decode(resp)
	}
	b := make([]byte, r.ContentLength)
	if _, err := io.ReadFull(r.Body, b); err != nil {
		return err
	}
	if d, ok := resp.(*fsm.Delegation); ok {
		// Its decoder is json.Unmarshal: skip the scan of the whole
		// answer json.Unmarshal would make before calling it.
		return d.UnmarshalJSON(b)
	}
	return json.Unmarshal(b, resp)
}

// maxAnswer bounds the buffer decodeAnswer makes from a length it is told.
const maxAnswer = 1 << 30

// waitOfRequest is how long a request asks the daemon to wait.
func waitOfRequest(req any) time.Duration {
	var ms int64
	switch r := req.(type) {
	case ReadRequest:
		ms = r.WaitMs
	case *ReadRequest:
		ms = r.WaitMs
	case NotificationsRequest:
		ms = r.WaitMs
	case *NotificationsRequest:
		ms = r.WaitMs
	}
	return time.Duration(max(0, min(ms, MaxWait.Milliseconds()))) * time.Millisecond
}

// Status returns what the daemon says about itself.
func (c *Client) Status(ctx context.Context) (Status, error) {
	ctx, done := c.deadline(ctx, c.opts.ResponseTimeout)
	defer done()
	var st Status
	r, err := c.do(ctx, http.MethodGet, "/v1/status", nil, nil)
	if err != nil {
		return st, err
	}
	defer r.Body.Close()
	if err := json.NewDecoder(r.Body).Decode(&st); err != nil {
		return st, c.lost(ctx, fmt.Errorf("decode the status: %w", err))
	}
	return st, nil
}

// PID returns the daemon's process id, or 0 when the platform does not
// tell it.
func (c *Client) PID() int { return c.pid }

// deadline returns a context that ends, with ErrNotAnswering as its cause,
// when after d the daemon does not answer a status request on a new
// connection within the response timeout; while it does, the deadline
// moves on by d. done releases it.
func (c *Client) deadline(ctx context.Context, d time.Duration) (context.Context, func()) {
	ctx, cancel := context.WithCancelCause(ctx)
	// A timer, not a goroutine waiting on one: most calls end long before
	// it fires, and then cost no goroutine.
	var mu sync.Mutex
	stopped := false
	mu.Lock()
	var t *time.Timer
	t = time.AfterFunc(d, func() {
		if ctx.Err() != nil {
			return
		}
		if !c.answers(ctx) {
			cancel(c.notAnswering())
			return
		}
		mu.Lock()
		defer mu.Unlock()
		if !stopped {
			t.Reset(d)
		}
	})
	mu.Unlock()
	return ctx, func() {
		mu.Lock()
		stopped = true
		mu.Unlock()
		t.Stop()
		cancel(nil)
	}
}

// answers reports whether the daemon answers GET /v1/status on a
// connection of its own within the response timeout.
func (c *Client) answers(ctx context.Context) bool {
	ctx, cancel := context.WithTimeout(ctx, c.opts.ResponseTimeout)
	defer cancel()
	hc := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return dial(ctx, c.socket, c.opts.ConnectTimeout)
		},
		DisableKeepAlives: true,
	}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://delegations/v1/status", nil)
	if err != nil {
		return false
	}
	r, err := hc.Do(req)
	if err != nil {
		return false
	}
	defer r.Body.Close()
	_, err = io.Copy(io.Discard, r.Body)
	return err == nil && r.StatusCode == http.StatusOK
}

// notAnswering says which daemon does not answer.
func (c *Client) notAnswering() error {
	return &NotAnsweringError{PID: c.pid, Socket: c.socket}
}

// NotAnsweringError names a daemon that does not answer and says what to
// do. It wraps ErrNotAnswering.
type NotAnsweringError struct {
	PID    int // 0 when unknown
	Socket string
}

func (e *NotAnsweringError) Error() string {
	if e.PID == 0 {
		return fmt.Sprintf("the daemon on %s does not answer; if it is stopped (SIGSTOP), continue it with `kill -CONT PID`, or stop it and run the command again", e.Socket)
	}
	return fmt.Sprintf("the daemon (pid %d) on %s does not answer; if it is stopped (SIGSTOP), continue it with `kill -CONT %d`, or stop it and run the command again", e.PID, e.Socket, e.PID)
}

func (e *NotAnsweringError) Unwrap() error { return ErrNotAnswering }

// Events calls emit for each event the daemon streams; see
// Service.Events.
func (c *Client) Events(ctx context.Context, req EventsRequest, emit func(Event) error) error {
	q := url.Values{}
	if req.From > 0 {
		q.Set("from", strconv.FormatUint(req.From, 10))
	}
	if req.Delegation != "" {
		q.Set("delegation", req.Delegation)
	}
	if req.Follow {
		q.Set("follow", "1")
	}
	// Without follow the answer is due at once; with it the first line
	// may be a long time coming, and the wait is the caller's to end.
	if !req.Follow {
		var done func()
		ctx, done = c.deadline(ctx, c.opts.ResponseTimeout)
		defer done()
	}
	r, err := c.do(ctx, http.MethodGet, "/v1/events", q, nil)
	if err != nil {
		return err
	}
	defer r.Body.Close()
	sc := bufio.NewScanner(r.Body)
	sc.Buffer(nil, 64<<20) // an event carries at most a 4 MiB result, escaped
	for sc.Scan() {
		var line struct {
			Event
			StreamError *Error `json:"streamError"`
		}
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			return c.lost(ctx, fmt.Errorf("decode event: %w", err))
		}
		if line.StreamError != nil {
			return line.StreamError
		}
		if err := emit(line.Event); err != nil {
			return err
		}
	}
	if err := sc.Err(); err != nil && (!req.Follow || ctx.Err() == nil) {
		// A stream the caller ends is how it stops following; a listing
		// cut short is an error, not the whole of it.
		return c.lost(ctx, err)
	}
	return nil
}

// do sends a request and returns the response when its status is 200;
// otherwise the daemon's error.
func (c *Client) do(ctx context.Context, method, path string, q url.Values, body io.Reader) (*http.Response, error) {
	u := url.URL{Scheme: "http", Host: "delegations", Path: path, RawQuery: q.Encode()}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), body)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	r, err := c.hc.Do(req)
	if err != nil {
		return nil, c.lost(ctx, err)
	}
	if r.StatusCode == http.StatusOK {
		return r, nil
	}
	defer r.Body.Close()
	var eb errorBody
	b, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err := json.Unmarshal(b, &eb); err != nil || eb.Error == nil {
		return nil, &Error{Code: "internal", Message: fmt.Sprintf("the daemon answered %s with %q", r.Status, b)}
	}
	return nil, eb.Error
}

// lost reports a broken exchange with the daemon: one it did not answer
// in time, one the caller ended, or a lost connection.
func (c *Client) lost(ctx context.Context, err error) error {
	if cause := context.Cause(ctx); errors.Is(cause, ErrNotAnswering) {
		return cause
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if errors.Is(err, ErrNotAnswering) {
		return c.notAnswering() // a connect that dial gave up on
	}
	return fmt.Errorf("daemon on %s: %w (if it stopped, run the command again: without a daemon it opens the log itself)", c.socket, err)
}
