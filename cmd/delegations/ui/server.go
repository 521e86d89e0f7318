package ui

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/delegations/delegations/cmd/delegations/api"
	"github.com/delegations/delegations/replay"
)

// ErrNotLoopback is the error of Listen for an address other than
// loopback.
var ErrNotLoopback = errors.New("not a loopback address")

// CheckAddr checks that addr (host:port) is a loopback address the page
// may listen on: 127.0.0.1 (or any 127.x), ::1 or localhost. The page has
// no TLS and trusts its token alone, so it is never offered to the
// network. It returns the address to listen on.
func CheckAddr(addr string) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("%s: %w (give host:port, e.g. 127.0.0.1:7777)", addr, err)
	}
	if host == "localhost" {
		host = "127.0.0.1"
	}
	ip := net.ParseIP(host)
	if ip == nil || !ip.IsLoopback() {
		return "", fmt.Errorf("%s: %w: the status page listens on 127.0.0.1, [::1] or localhost only", addr, ErrNotLoopback)
	}
	return net.JoinHostPort(ip.String(), port), nil
}

// Listen listens on addr (port 0 picks a free one) after CheckAddr.
func Listen(addr string) (net.Listener, error) {
	a, err := CheckAddr(addr)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", a)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", addr, err)
	}
	return ln, nil
}

// Options configure New.
type Options struct {
	// Token is the secret the URL carries; "" means a new random one.
	Token string
	// Logger receives the page's logs; nil discards them.
	Logger *slog.Logger
	// Now is the time for ages and deadlines; nil means time.Now.
	Now func() time.Time
}

// Server is the status page of one daemon.
type Server struct {
	svc    *api.Service
	token  string
	csrf   string
	port   string
	origin string          // http://HOST:PORT, the listener's address
	hosts  map[string]bool // the Host headers accepted
	board  *board
	logger *slog.Logger
	now    func() time.Time
	mux    *http.ServeMux

	findMu   sync.Mutex
	findings map[string]findingsEntry // by delegation id
}

// findingsEntry is a delegation's findings as of the last record of its
// stream, computed at a time.
type findingsEntry struct {
	last uint64
	at   time.Time
	fs   []replay.Finding
}

// New returns the status page of svc, to be served on ln.
func New(svc *api.Service, ln net.Listener, o Options) *Server {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Token == "" {
		o.Token = randomToken()
	}
	addr := ln.Addr().(*net.TCPAddr)
	port := strconv.Itoa(addr.Port)
	s := &Server{
		svc: svc, token: o.Token, csrf: randomToken(), port: port, origin: origin(ln),
		hosts: map[string]bool{
			"127.0.0.1:" + port: true, "localhost:" + port: true, "[::1]:" + port: true,
			net.JoinHostPort(addr.IP.String(), port): true,
		},
		board: newBoard(), logger: o.Logger, now: o.Now,
	}
	s.routes()
	return s
}

// NewToken returns a new random token (192 bits, hex).
func NewToken() string { return randomToken() }

// PageURL is the address of the page served on ln with token: the
// listener's own address (127.0.0.1, another 127.x or [::1]).
func PageURL(ln net.Listener, token string) string {
	return origin(ln) + "/?token=" + url.QueryEscape(token)
}

// origin is http://HOST:PORT of ln.
func origin(ln net.Listener) string {
	a := ln.Addr().(*net.TCPAddr)
	return "http://" + net.JoinHostPort(a.IP.String(), strconv.Itoa(a.Port))
}

func randomToken() string {
	b := make([]byte, 24)
	rand.Read(b) // never fails (crypto/rand)
	return hex.EncodeToString(b)
}

// Actor returns the page as an actor of the daemon's run.Group
// (api.Config.Actors): it serves ln and keeps the board current until
// interrupted.
func Actor(ln net.Listener, o Options) func(*api.Service) (func() error, func(error)) {
	return func(svc *api.Service) (func() error, func(error)) {
		s := New(svc, ln, o)
		ctx, cancel := context.WithCancel(context.Background())
		return func() error { return s.Run(ctx, ln) }, func(error) { cancel() }
	}
}

// Run serves ln and follows the log until ctx ends; then it closes ln,
// ends the page's event streams, and returns once the requests being
// served have finished (they read the store, which closes next) or the
// shutdown's 5 s ran out.
func (s *Server) Run(ctx context.Context, ln net.Listener) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	srv := &http.Server{
		Handler:           s,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		BaseContext:       func(net.Listener) context.Context { return ctx },
		ErrorLog:          slog.NewLogLogger(s.logger.Handler(), slog.LevelWarn),
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.board.follow(ctx, s.svc, s.logger)
	}()
	shut := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		defer close(shut)
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(sctx); err != nil {
			s.logger.Warn("status page: requests still running at shutdown", "err", err)
			srv.Close()
		}
	})
	s.logger.Info("status page", "addr", ln.Addr().String())
	err := srv.Serve(ln)
	// Serve returns as soon as Shutdown begins: wait for it to finish. When
	// Serve failed on its own, stop everything here.
	cancel()
	if !stop() {
		<-shut
	}
	<-done
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return fmt.Errorf("status page: %w", err)
}

// cookieName is per port: browsers share cookies between the ports of a
// host.
func (s *Server) cookieName() string { return "delegations-" + s.port }

// securityHeaders go on every answer: nothing from elsewhere, no inline
// script, no framing, no referrer to other sites, no caching, no sniffing. No CORS header
// is ever sent.
func securityHeaders(h http.Header) {
	h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	h.Set("X-Frame-Options", "DENY")
	h.Set("X-Content-Type-Options", "nosniff")
	// same-origin, not no-referrer: under no-referrer a form's POST carries
	// Origin: null, which checkPost refuses.
	h.Set("Referrer-Policy", "same-origin")
	h.Set("Cache-Control", "no-store")
}

// ServeHTTP checks the Host header and the token, then routes.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	securityHeaders(w.Header())
	if !s.hosts[r.Host] {
		// DNS rebinding: a page of another site resolved to 127.0.0.1.
		http.Error(w, "Host "+strconv.Quote(r.Host)+" is not this page's; open "+s.origin+"/", http.StatusMisdirectedRequest)
		return
	}
	if err := checkFetch(r); err != nil {
		http.Error(w, err.Error(), http.StatusForbidden)
		return
	}
	if t := r.URL.Query().Get("token"); t != "" && r.Method == http.MethodGet {
		if !equal(t, s.token) {
			http.Error(w, "wrong token: open the address `delegations ui` prints", http.StatusForbidden)
			return
		}
		http.SetCookie(w, &http.Cookie{
			Name: s.cookieName(), Value: s.token, Path: "/", MaxAge: cookieMaxAge,
			HttpOnly: true, SameSite: http.SameSiteStrictMode,
		})
		// Drop the token from the address bar and the history. The
		// target is a path: //evil.example/x would be another site.
		q := r.URL.Query()
		q.Del("token")
		target := "/" + strings.TrimLeft(r.URL.EscapedPath(), "/\\")
		if len(q) > 0 {
			target += "?" + q.Encode()
		}
		http.Redirect(w, r, target, http.StatusSeeOther)
		return
	}
	c, err := r.Cookie(s.cookieName())
	if err != nil || !equal(c.Value, s.token) {
		http.Error(w, "this page needs its token: open the address `delegations ui` prints ("+s.origin+"/?token=...)", http.StatusUnauthorized)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		if err := s.checkPost(r); err != nil {
			http.Error(w, err.Error(), http.StatusForbidden)
			return
		}
	}
	s.mux.ServeHTTP(w, r)
}

// cookieMaxAge is how long the browser keeps the login (seconds): past it,
// the address `delegations ui` prints logs in again.
const cookieMaxAge = 7 * 24 * 60 * 60

// checkFetch refuses a read that another site's page makes. Cookies are not
// isolated by port: a page of any other web server on 127.0.0.1 is
// same-site, and its scripts, images or event streams would carry this
// page's cookie (to hold streams open or load the board). Browsers say who
// asks in Sec-Fetch-Site: only this page (same-origin) or the user (none:
// the address bar, a bookmark) may read, and anyone may navigate a tab
// here (a link), which shows a page but changes nothing. Clients without
// Sec-Fetch-* headers (curl, old browsers) are not browsers' subresource
// requests and pass.
func checkFetch(r *http.Request) error {
	switch site := r.Header.Get("Sec-Fetch-Site"); site {
	case "", "same-origin", "none":
		return nil
	default:
		if r.Method == http.MethodGet && r.Header.Get("Sec-Fetch-Mode") == "navigate" && r.Header.Get("Sec-Fetch-Dest") == "document" {
			return nil
		}
		return fmt.Errorf("refused: a %s %s request (%s)", site, r.Header.Get("Sec-Fetch-Mode"), r.Header.Get("Sec-Fetch-Dest"))
	}
}

// checkPost is the CSRF check of an action: the page's CSRF token in the
// csrf form field (the confirmation page's form), the Origin (when sent)
// this page's, and not a cross-site request.
func (s *Server) checkPost(r *http.Request) error {
	if site := r.Header.Get("Sec-Fetch-Site"); site != "" && site != "same-origin" && site != "none" {
		return fmt.Errorf("refused: a %s request", site)
	}
	if o := r.Header.Get("Origin"); o != "" && o != "http://"+r.Host {
		return fmt.Errorf("refused: Origin %q is not this page's", o)
	}
	r.Body = http.MaxBytesReader(nil, r.Body, 4096)
	if !equal(r.PostFormValue("csrf"), s.csrf) {
		return errors.New("refused: missing or wrong CSRF token (reload the page)")
	}
	return nil
}

func equal(a, b string) bool { return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1 }

// Findings are kept while the delegation's stream does not grow, for at
// most findingsLife (their ages and deadlines move with the clock), and
// for at most maxFindings delegations.
const (
	findingsLife = time.Minute
	maxFindings  = 1024
)

// diagnose returns replay's findings about delegation id, whose stream
// ends at record last: from its own events (replay.Diagnose), not a
// replay of the whole log.
func (s *Server) diagnose(ctx context.Context, id string, last uint64) ([]replay.Finding, error) {
	now := s.now()
	s.findMu.Lock()
	e, ok := s.findings[id]
	s.findMu.Unlock()
	if ok && e.last == last && now.Sub(e.at) < findingsLife && !now.Before(e.at) {
		return e.fs, nil
	}
	store := s.svc.Store()
	fs, err := replay.Diagnose(ctx, store.Log(), store.Dir(), id, replay.Options{Now: now, Self: store.Self()})
	if err != nil {
		return nil, err
	}
	s.findMu.Lock()
	if s.findings == nil || len(s.findings) >= maxFindings {
		s.findings = map[string]findingsEntry{}
	}
	s.findings[id] = findingsEntry{last: last, at: now, fs: fs}
	s.findMu.Unlock()
	return fs, nil
}
