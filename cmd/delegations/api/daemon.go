package api

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/cespare/xxhash/v2"
	"github.com/oklog/run"

	"github.com/delegations/delegations/eventlog"
	"github.com/delegations/delegations/projection"
)

// SocketName is the daemon's socket inside the data directory. The dot
// keeps it apart from project directories, as the log's name does.
const SocketName = ".delegations.sock"

// maxSocketPath is the longest unix socket path every platform accepts
// (sun_path is 104 bytes on macOS, 108 on Linux, with a final NUL).
const maxSocketPath = 103

// Config configures Serve. DataDir is required.
type Config struct {
	DataDir string
	// Socket is where to listen; "" means SocketName in DataDir.
	Socket string
	// DefaultTimeout applies to delegations registered without one;
	// zero means 15 minutes.
	DefaultTimeout time.Duration
	// Clock is the daemon's time, its store's; nil means the wall clock.
	Clock projection.Clock
	// LockTimeout bounds the wait for another process holding the log.
	LockTimeout time.Duration
	// Upstream, if set, opens the shared log that the data directory's
	// log replicates (projection.Options.Upstream), once for every open
	// of the store: closing the store closes it.
	Upstream func(context.Context) (eventlog.Upstream, error)
	// Peers, with Upstream, makes the daemon one of several on the shared
	// log (projection.Options.Peers): it acts on the delegations it owns,
	// and takes over those of the daemons that are gone, at start and
	// whenever the set of live daemons changes.
	Peers Peers
	// Logger receives the daemon's structured logs; nil discards them.
	Logger *slog.Logger
	// Ready, if set, is called once the socket accepts requests.
	Ready func(Status)

	// HeaderTimeout bounds the reading of a request's headers, BodyTimeout
	// that of a POST body, and IdleTimeout how long a kept-alive
	// connection may wait for its next request; zero means the default.
	// Streams and blocking waits are not bounded by them: their body is
	// empty or read before the wait.
	HeaderTimeout, BodyTimeout, IdleTimeout time.Duration
	// MaxConnections bounds the connections served at once; zero means
	// DefaultMaxConnections. Further connections wait, unaccepted, in the
	// socket's backlog until one closes (idle ones close after
	// IdleTimeout), so that clients never make the daemon run out of
	// descriptors.
	MaxConnections int

	// UI is the status page's address with its token, reported in Status
	// (cmd/delegations/ui serves it as one of Actors); "" when none.
	UI string
	// Actors run beside the API in the daemon's run.Group (the status
	// page). Each is made once the store is open; its interrupt must make
	// its execute return.
	Actors []func(svc *Service) (execute func() error, interrupt func(error))
	// Page, if set, starts the status page in the running daemon when a
	// client asks (POST /v1/page) and it serves none yet, on addr
	// (PageRequest.Addr: "" for the default; Page checks it and wraps
	// fsm.ErrInvalid when it refuses it). It returns the page's address
	// with its token and a channel closed once the page has stopped; it
	// serves until ctx ends (the daemon stopping), and Serve waits for
	// done before it closes the store.
	Page func(ctx context.Context, svc *Service, addr string) (url string, done <-chan struct{}, err error)
}

// Peers is which daemons share the log and are alive
// (eventlog/etcdlog.Presence). Serve calls Start once it holds the data
// directory (before that, only Self is asked); Changed's channel is closed
// at the next change of the set.
type Peers interface {
	projection.Peers
	Start(ctx context.Context) error
	Changed() <-chan struct{}
}

// PageRequest is the body of POST /v1/page.
type PageRequest struct {
	// Addr is the loopback address the page listens on (host:port, port 0
	// for a free one); "" is the daemon's default.
	Addr string `json:"addr,omitempty"`
}

// DefaultSocket returns the socket of a data directory: SocketName inside
// it, or, when that path is too long for a unix socket, a path derived
// from the directory's absolute path in ShortSocketDir, so that the daemon
// and its clients agree on it without being told.
func DefaultSocket(dataDir string) string {
	dir, err := filepath.Abs(dataDir)
	if err != nil {
		dir = dataDir
	}
	if p := filepath.Join(dir, SocketName); len(p) <= maxSocketPath {
		return p
	}
	return filepath.Join(ShortSocketDir(), fmt.Sprintf("%016x.sock", xxhash.Sum64String(resolve(dir))))
}

// resolve returns dir with the symlinks of its longest existing prefix
// resolved, so that one directory named through a link and directly (or
// before and after it is made) hashes to one socket.
func resolve(dir string) string {
	rest := ""
	for d := dir; ; d = filepath.Dir(d) {
		if real, err := filepath.EvalSymlinks(d); err == nil {
			return filepath.Join(real, rest)
		}
		if filepath.Dir(d) == d {
			return dir
		}
		rest = filepath.Join(filepath.Base(d), rest)
	}
}

// ShortSocketDir holds the sockets of data directories whose own path is too
// long for one: /tmp/delegations-<uid>, mode 0700. It is fixed rather than
// taken from $TMPDIR so that processes with different environments agree.
func ShortSocketDir() string { return fmt.Sprintf("/tmp/delegations-%d", os.Getuid()) }

// Defaults of Config's connection limits.
const (
	DefaultHeaderTimeout  = 10 * time.Second
	DefaultBodyTimeout    = 30 * time.Second
	DefaultIdleTimeout    = 2 * time.Minute
	DefaultMaxConnections = 1024
)

// Serve runs the daemon until ctx ends or SIGINT or SIGTERM arrives: it
// opens the store (finishing what a crash interrupted), listens on the
// socket, and runs the actors in one run.Group: the API server, the
// deadline sweeper, the artifact writer and the signal handler. On the
// way out it ends waits, stops accepting, lets in-flight commands commit,
// and closes the log. A signal is a clean stop (nil).
func Serve(ctx context.Context, cfg Config) (err error) {
	if cfg.Clock == nil {
		cfg.Clock = projection.WallClock{}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	cfg.HeaderTimeout = cmp.Or(cfg.HeaderTimeout, DefaultHeaderTimeout)
	cfg.BodyTimeout = cmp.Or(cfg.BodyTimeout, DefaultBodyTimeout)
	cfg.IdleTimeout = cmp.Or(cfg.IdleTimeout, DefaultIdleTimeout)
	cfg.MaxConnections = cmp.Or(cfg.MaxConnections, DefaultMaxConnections)
	dir, err := filepath.Abs(cfg.DataDir)
	if err != nil {
		return fmt.Errorf("data directory %q: %w", cfg.DataDir, err)
	}
	socket := cfg.Socket
	if socket == "" {
		socket = DefaultSocket(dir)
	}
	if socket, err = filepath.Abs(socket); err != nil {
		return fmt.Errorf("socket %q: %w", cfg.Socket, err)
	}
	if len(socket) > maxSocketPath {
		return fmt.Errorf("socket path %s is %d bytes, longer than the %d a unix socket allows; choose a shorter one with --socket", socket, len(socket), maxSocketPath)
	}
	logger := cfg.Logger
	// A running daemon answers at once; asking first spares a second one
	// the lock timeout.
	if st, ok := probe(ctx, socket); ok {
		return fmt.Errorf("a daemon (pid %d) already serves %s on %s", st.PID, st.DataDir, st.Socket)
	}
	var peers projection.Peers
	if cfg.Peers != nil {
		peers = cfg.Peers
	}
	open := func() (*projection.Store, error) {
		var up eventlog.Upstream
		if cfg.Upstream != nil {
			var err error
			if up, err = cfg.Upstream(ctx); err != nil {
				return nil, err
			}
		}
		return projection.Open(dir, projection.Options{
			DefaultTimeout: cfg.DefaultTimeout,
			LockTimeout:    cfg.LockTimeout,
			Clock:          cfg.Clock,
			Logger:         logger,
			Upstream:       up,
			Peers:          peers,
		})
	}
	store, err := open()
	if errors.Is(err, eventlog.ErrLocked) {
		if st, ok := probe(ctx, socket); ok {
			return fmt.Errorf("a daemon (pid %d) already serves %s on %s", st.PID, st.DataDir, st.Socket)
		}
		return fmt.Errorf("%w (another delegations command may be using it; retry when it ends)", err)
	}
	if err != nil {
		return err
	}
	if cfg.Peers != nil {
		// Present once the data directory is ours: a daemon started beside
		// this one fails on its lock before it touches the lease.
		if err := cfg.Peers.Start(ctx); err != nil {
			store.Close()
			return err
		}
		logger.Info("one of the daemons on the shared log", "daemon", cfg.Peers.Self())
	}
	svc := NewService(store)
	defer func() {
		// The store the daemon ends with: the keeper may have replaced it.
		if cerr := svc.Store().Close(); cerr != nil && err == nil {
			err = cerr
		}
	}()
	keep := newKeeper(svc, open, cfg.Clock, logger)
	ln, err := listen(ctx, socket, logger)
	if err != nil {
		return err
	}
	defer ln.Close() // also removes the socket file

	stopping, stop := context.WithCancel(context.Background())
	defer stop()
	h := &handler{
		svc:         svc,
		keeper:      keep,
		status:      Status{DataDir: dir, Socket: socket, PID: os.Getpid()},
		page:        cfg.Page,
		pageURL:     cfg.UI,
		logger:      logger,
		stopping:    stopping,
		bodyTimeout: cfg.BodyTimeout,
	}
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: cfg.HeaderTimeout,
		IdleTimeout:       cfg.IdleTimeout,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}

	var g run.Group
	{
		g.Add(run.SignalHandler(ctx, os.Interrupt, syscall.SIGTERM))
	}
	{
		g.Add(func() error {
			logger.Info("serving", "socket", socket, "data", dir, "pid", os.Getpid(), "lastSeq", svc.Store().Log().Last())
			if cfg.Ready != nil {
				cfg.Ready(h.currentStatus())
			}
			if err := srv.Serve(limitListener(ln, cfg.MaxConnections, logger)); !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("serve %s: %w", socket, err)
			}
			return nil
		}, func(error) {
			// Stop accepting, end the waits, and let every command that
			// is running commit before the log closes.
			stop()
			sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if err := srv.Shutdown(sctx); err != nil {
				logger.Warn("requests still running at shutdown", "err", err)
				srv.Close()
			}
		})
	}
	{
		actx, cancel := context.WithCancel(context.Background())
		g.Add(func() error { return sweepDeadlines(actx, keep, cfg.Clock, logger) }, func(error) { cancel() })
	}
	{
		actx, cancel := context.WithCancel(context.Background())
		g.Add(func() error { return persistPending(actx, keep, cfg.Clock, logger) }, func(error) { cancel() })
	}
	{
		actx, cancel := context.WithCancel(context.Background())
		g.Add(func() error { return keep.run(actx) }, func(error) { cancel() })
	}
	if cfg.Peers != nil {
		actx, cancel := context.WithCancel(context.Background())
		g.Add(func() error { return takeOver(actx, keep, cfg.Peers, logger) }, func(error) { cancel() })
	}
	for _, actor := range cfg.Actors {
		g.Add(actor(svc))
	}
	err = g.Run()
	h.waitPage() // the page reads the store: it stops first
	var sig run.SignalError
	if errors.As(err, &sig) || errors.Is(err, context.Canceled) {
		logger.Info("stopping", "reason", err.Error(), "lastSeq", svc.Store().Log().Last())
		err = nil
	}
	return err
}

// probe asks the daemon on socket who it is.
func probe(ctx context.Context, socket string) (Status, bool) {
	c, err := Dial(ctx, socket)
	if err != nil {
		return Status{}, false
	}
	defer c.Close()
	pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	st, err := c.Status(pctx)
	return st, err == nil
}

// listen listens on socket, mode 0600. A socket file that nobody answers
// on was left by a daemon that died and is replaced; a live one, or a file
// that is not a socket, is an error.
func listen(ctx context.Context, socket string, logger *slog.Logger) (net.Listener, error) {
	fi, err := os.Lstat(socket)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("socket %s: %w", socket, err)
	case fi.Mode().Type() != fs.ModeSocket:
		return nil, fmt.Errorf("%s exists and is not a socket; move it away or choose another path with --socket", socket)
	default:
		if st, ok := probe(ctx, socket); ok {
			return nil, fmt.Errorf("a daemon (pid %d, data %s) already listens on %s; choose another path with --socket", st.PID, st.DataDir, socket)
		}
		if err := os.Remove(socket); err != nil {
			return nil, fmt.Errorf("remove the stale socket %s: %w", socket, err)
		}
		logger.Info("replaced a stale socket left by a daemon that died", "socket", socket)
	}
	if err := os.MkdirAll(filepath.Dir(socket), 0o700); err != nil {
		return nil, fmt.Errorf("socket directory: %w", err)
	}
	if filepath.Dir(socket) == ShortSocketDir() {
		if err := checkPrivateDir(filepath.Dir(socket)); err != nil {
			return nil, err
		}
	}
	// The umask makes the socket 0600 from birth: a chmod after listening
	// would leave a moment when another user could connect.
	old := syscall.Umask(0o177)
	ln, err := net.Listen("unix", socket)
	syscall.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", socket, err)
	}
	if err := os.Chmod(socket, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("socket %s: %w", socket, err)
	}
	return ln, nil
}

// checkPrivateDir refuses a shared directory that another user could have
// made or could enter: it must be a real directory (not a symlink), ours,
// and closed to everyone else.
func checkPrivateDir(dir string) error {
	fi, err := os.Lstat(dir)
	if err != nil {
		return fmt.Errorf("socket directory: %w", err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	switch {
	case !fi.IsDir():
		return fmt.Errorf("socket directory %s is not a directory (a symlink?); remove it, or choose a socket with --socket or $DELEGATIONS_SOCKET", dir)
	case !ok || int(st.Uid) != os.Getuid():
		return fmt.Errorf("socket directory %s belongs to another user (someone may be trying to intercept the daemon's traffic); use a shorter data directory, or choose a socket with --socket or $DELEGATIONS_SOCKET", dir)
	case fi.Mode().Perm()&0o077 != 0:
		return fmt.Errorf("socket directory %s is open to other users (mode %v); run chmod 700 %s", dir, fi.Mode().Perm(), dir)
	}
	return nil
}

// The wait between retries of a failing background pass.
const (
	retryFirst = time.Second
	retryMax   = time.Minute
)

// background runs pass until ctx ends. After a pass that succeeds it waits
// for a new record or the time pass returned (none when zero); after one
// that fails it waits on the clock alone, doubling up to retryMax, so that
// new events cannot turn a failing disk into a busy loop. pass learns
// whether it is retrying a failure. A failed write is the keeper's to
// mend; a wait the keeper ends by replacing the store goes on on the new
// one.
func background(ctx context.Context, k *keeper, clock projection.Clock, logger *slog.Logger, what string,
	pass func(store *projection.Store, retrying bool) (next time.Time, err error)) error {
	backoff := retryFirst
	retrying := false
	for {
		store := k.svc.Store()
		replaced := k.replaced()
		mark := store.Mark() // before the pass: what happens during it ends the wait
		next, err := pass(store, retrying)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			err = k.failed(err)
			logger.Warn(what+" failed; retrying", "in", backoff, "err", err)
			err = sleep(ctx, clock, backoff)
			backoff, retrying = min(2*backoff, retryMax), true
		} else {
			backoff, retrying = retryFirst, false
			err = store.Wait(ctx, mark, next)
			if errors.Is(err, eventlog.ErrClosed) && ctx.Err() == nil {
				select { // the keeper is reopening the log
				case <-replaced:
					err = nil
				case <-ctx.Done():
				}
			}
		}
		if err != nil {
			return nil // stopping
		}
	}
}

// sleep waits until d has passed on the clock or ctx ends.
func sleep(ctx context.Context, clock projection.Clock, d time.Duration) error {
	done := make(chan struct{})
	defer clock.AfterFunc(d, func() { close(done) })()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// sweepDeadlines is the deadline sweeper: it times out every delegation
// past its deadline (at once for those that passed while no daemon ran),
// then waits for the next deadline or a new event, which may bring an
// earlier one.
func sweepDeadlines(ctx context.Context, k *keeper, clock projection.Clock, logger *slog.Logger) error {
	return background(ctx, k, clock, logger, "timing out overdue delegations", func(store *projection.Store, _ bool) (time.Time, error) {
		n, next, err := store.TimeoutOverdue(ctx)
		if n > 0 {
			logger.Info("timed out delegations past their deadline", "count", n)
		}
		return next, err
	})
}

// persistPending is the artifact writer. Terminal commands write their
// artifact themselves (this may race them to it, harmlessly: whoever
// writes the file writes the same bytes, and persisted is decided once,
// under the delegation's lock); this retries the ones that failed
// (a full disk, an unwritable directory) until they succeed, and the
// terminal notification becomes due with each.
func persistPending(ctx context.Context, k *keeper, clock projection.Clock, logger *slog.Logger) error {
	return background(ctx, k, clock, logger, "writing artifacts", func(store *projection.Store, retrying bool) (time.Time, error) {
		n, err := store.PersistPending(ctx)
		if n > 0 && retrying {
			logger.Info("wrote the artifacts that had failed", "count", n)
		}
		return time.Time{}, err
	})
}

// takeOver takes over the delegations of the daemons that are gone
// (projection.Store.TakeOver): at start, then whenever a daemon joins or
// goes. Failures are retried on the wall clock, as leases expire on it.
func takeOver(ctx context.Context, k *keeper, peers Peers, logger *slog.Logger) error {
	backoff := retryFirst
	for {
		changed := peers.Changed()
		n, err := k.svc.Store().TakeOver(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if n > 0 {
			logger.Info("took over the delegations of daemons that are gone", "count", n)
		}
		if err == nil {
			backoff = retryFirst
			select {
			case <-changed:
			case <-ctx.Done():
				return nil
			}
			continue
		}
		err = k.failed(err)
		logger.Warn("taking over the delegations of daemons that are gone failed; retrying", "in", backoff, "err", err)
		select {
		case <-time.After(backoff):
			backoff = min(2*backoff, retryMax)
		case <-ctx.Done():
			return nil
		}
	}
}
