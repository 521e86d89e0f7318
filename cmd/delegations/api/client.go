package api

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"syscall"
)

// ErrNoDaemon means no daemon listens on the socket: it does not exist, or
// it was left by a daemon that died.
var ErrNoDaemon = errors.New("no daemon is running")

// Client calls a daemon over its unix socket.
type Client struct {
	socket string
	hc     *http.Client
}

// Dial connects to the daemon on socket. It returns an error wrapping
// ErrNoDaemon when nothing listens there, so the caller can work on the
// log itself.
func Dial(ctx context.Context, socket string) (*Client, error) {
	if len(socket) > maxSocketPath {
		// Serve refuses such a path, so no daemon listens there.
		return nil, fmt.Errorf("%w: %s is too long for a socket", ErrNoDaemon, socket)
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", socket)
	if err != nil {
		if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ENOTDIR) {
			return nil, fmt.Errorf("%w on %s", ErrNoDaemon, socket)
		}
		return nil, fmt.Errorf("connect to the daemon on %s: %w", socket, err)
	}
	conn.Close()
	c := &Client{socket: socket}
	c.hc = &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return d.DialContext(ctx, "unix", socket)
		},
		DisableCompression: true,
	}}
	return c, nil
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
	r, err := c.do(ctx, http.MethodPost, "/v1/"+verb, nil, bytes.NewReader(body))
	if err != nil {
		return err
	}
	defer r.Body.Close()
	if err := json.NewDecoder(r.Body).Decode(resp); err != nil {
		return c.lost(fmt.Errorf("decode the answer to %s: %w", verb, err))
	}
	return nil
}

// Status returns what the daemon says about itself.
func (c *Client) Status(ctx context.Context) (Status, error) {
	var st Status
	r, err := c.do(ctx, http.MethodGet, "/v1/status", nil, nil)
	if err != nil {
		return st, err
	}
	defer r.Body.Close()
	return st, json.NewDecoder(r.Body).Decode(&st)
}

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
			return c.lost(fmt.Errorf("decode event: %w", err))
		}
		if line.StreamError != nil {
			return line.StreamError
		}
		if err := emit(line.Event); err != nil {
			return err
		}
	}
	if err := sc.Err(); err != nil && ctx.Err() == nil {
		return c.lost(err)
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
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, c.lost(err)
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

// lost reports a broken exchange with the daemon.
func (c *Client) lost(err error) error {
	return fmt.Errorf("daemon on %s: %w (if it stopped, run the command again: without a daemon it opens the log itself)", c.socket, err)
}
