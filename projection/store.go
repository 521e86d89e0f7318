package projection

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/delegations/delegations/eventlog"
	"github.com/delegations/delegations/fsm"
	"github.com/delegations/delegations/projection/artifact"
)

// LogFile is the name of the event log inside the data directory. The dot
// keeps it apart from project directories, whose ids never start with one.
const LogFile = ".delegations.db"

// Options configure Open. The zero value is usable.
type Options struct {
	// DefaultTimeout applies to delegations registered without one.
	// Zero means 15 minutes (the plugin's).
	DefaultTimeout time.Duration
	// LockTimeout bounds the wait for another process holding the log.
	LockTimeout time.Duration
	// Clock is the store's time; nil means WallClock.
	Clock Clock
	// Now, when set, reads the time instead of Clock, whose timers stay:
	// for tests that choose the times events are stamped with.
	Now func() time.Time
	// IDs draws new delegation ids; nil means crypto/rand.
	IDs *fsm.IDGenerator
	// Logger receives diagnostics; nil discards them.
	Logger *slog.Logger
	// Rebuild regenerates every view and artifact from the log alone.
	Rebuild bool
	// ReadOnly opens the log read-only (a shared lock; nothing is written,
	// so it works in a read-only data directory) and recovers nothing.
	// Open then fails with ErrNeedsRecovery when the store is not as a
	// writer would leave it (views behind the log, an artifact pending):
	// open it for writing instead. Commands on a read-only store fail.
	ReadOnly bool
	// Upstream, if set, makes the data directory's log a replica of a
	// shared log (eventlog.Options.Upstream): commands append upstream
	// and return once their events are in the local views, and the views
	// follow what every other daemon on the shared log appends. Close
	// closes it, and so does an Open that fails.
	Upstream eventlog.Upstream
	// Peers, if set, makes this store one of several daemons sharing the
	// log, each acting only on the delegations it owns (see owner.go);
	// nil: it owns every delegation.
	Peers Peers
}

// ErrNeedsRecovery reports that a store opened with Options.ReadOnly needs
// a writer's recovery before its views can be trusted.
var ErrNeedsRecovery = errors.New("the store needs recovery, which only a writer can do")

// EmptyLogError reports a log file of zero bytes in a data directory that
// holds artifacts: the log was lost, and opening it for writing would
// silently start a new, empty store beside them. It wraps
// eventlog.ErrCorrupt.
type EmptyLogError struct {
	Path      string
	Artifacts int // artifact files found (counting stops at a thousand)
}

func (e *EmptyLogError) Error() string {
	return fmt.Sprintf("log %s is empty (0 bytes) but the data directory holds %d artifact file(s): the log was lost; "+
		"its delegations survive only as artifacts, which an import adopts", e.Path, e.Artifacts)
}

func (e *EmptyLogError) Unwrap() error { return eventlog.ErrCorrupt }

// CountArtifacts counts the artifact files (<project>/<root>/<id>.md) in
// data directory dir, up to limit.
func CountArtifacts(dir string, limit int) int {
	n := 0
	projects, _ := os.ReadDir(dir)
	for _, p := range projects {
		if !p.IsDir() || strings.HasPrefix(p.Name(), ".") {
			continue
		}
		roots, _ := os.ReadDir(filepath.Join(dir, p.Name()))
		for _, r := range roots {
			if !r.IsDir() {
				continue
			}
			files, _ := os.ReadDir(filepath.Join(dir, p.Name(), r.Name()))
			for _, f := range files {
				if f.Type().IsRegular() && strings.HasSuffix(f.Name(), ".md") {
					if n++; n >= limit {
						return n
					}
				}
			}
		}
	}
	return n
}

// Store is the durable delegation store: commands are decided by fsm
// against the current record, appended to the event log, and projected into
// the views in the same transaction. It is safe for concurrent use.
type Store struct {
	dir   string
	log   *eventlog.Log
	cfg   fsm.Config
	clock Clock
	ids   *fsm.IDGenerator
	logf  *slog.Logger
	own   owner // which delegations this daemon acts on (owner.go)

	// Commands on one delegation are decided and appended one at a time:
	// optimistic retries alone starve when many callers race on one
	// delegation. Each delegation has its own lock while a command holds
	// or waits for it (see lock), so commands on different delegations
	// never wait for each other and share commits.
	lockMu sync.Mutex
	locks  map[string]*idLock
	// cycleMu serialises acknowledgements of all-complete notifications,
	// which append to parent session streams.
	cycleMu sync.Mutex
	// reads holds, per delegation, the batch of reads that new readers
	// join (see finishRead); watches the wait of its blocking reads (see
	// watch).
	readMu  sync.Mutex
	reads   map[string]*readBatch
	watches map[string]*watch

	// swept is closed when the sweep of stale temp files that Open
	// started is over (nil when it started none); stopSweep ends it early.
	swept     chan struct{}
	stopSweep atomic.Bool
}

// staleTempAge is how much older than the open a temp file must be for
// the sweep at open to remove it: a margin for file systems whose
// timestamps are coarse, so that a write of this process is never taken
// for a crash's. A stale file younger than that goes at the next open.
const staleTempAge = 2 * time.Second

// Open opens the store in data directory dir, creating it (mode 0700) if
// needed.
func Open(dir string, opts Options) (s *Store, err error) {
	if opts.Upstream != nil {
		defer func() {
			if err != nil && s == nil {
				opts.Upstream.Close()
			}
		}()
	}
	if opts.Clock == nil {
		opts.Clock = WallClock{}
	}
	if opts.Now != nil {
		opts.Clock = stamped{opts.Clock, opts.Now}
	}
	if opts.IDs == nil {
		opts.IDs = fsm.NewIDGenerator(nil)
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	opts.DefaultTimeout = opts.DefaultTimeout.Truncate(time.Millisecond)
	if opts.DefaultTimeout != 0 {
		if err := fsm.ValidateTimeout(opts.DefaultTimeout); err != nil {
			return nil, fmt.Errorf("default timeout: %w", err)
		}
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("data directory %q: %w", dir, err)
	}
	path := filepath.Join(abs, LogFile)
	if fi, err := os.Stat(path); err == nil && fi.Size() == 0 {
		if n := CountArtifacts(abs, 1000); n > 0 {
			return nil, &EmptyLogError{Path: path, Artifacts: n}
		}
	}
	l, err := eventlog.Open(path, eventlog.Options{
		LockTimeout: opts.LockTimeout,
		Projectors:  []eventlog.Projector{views{}},
		Logger:      opts.Logger,
		Rebuild:     opts.Rebuild,
		ReadOnly:    opts.ReadOnly,
		Upstream:    opts.Upstream,
	})
	if err != nil {
		return nil, err
	}
	s = &Store{
		dir:   abs,
		log:   l,
		cfg:   fsm.Config{DefaultTimeout: opts.DefaultTimeout},
		clock: opts.Clock,
		ids:   opts.IDs,
		logf:  opts.Logger,
		own:   owner{opts.Peers},
	}
	if opts.ReadOnly {
		if err := s.needsRecovery(); err != nil {
			l.Close()
			return nil, err
		}
		return s, nil
	}
	opened := time.Now() // the file system's clock, not the store's
	if err := s.recover(opts.Rebuild); err != nil {
		l.Close()
		return nil, err
	}
	if !opts.Rebuild { // a rebuild swept everything already
		// Once, here, rather than a directory listing on every
		// artifact write: the lock is ours, so a temp file from
		// before the open is a crash's. In the background, as the
		// walk follows how many sessions the directory holds; Close
		// stops it (a short-lived command leaves the rest to the
		// next open, the daemon's).
		s.swept = make(chan struct{})
		go func() {
			defer close(s.swept)
			if n, err := artifact.SweepTempFilesBefore(s.dir, opened.Add(-staleTempAge), s.stopSweep.Load); err != nil {
				s.logf.Warn("temporary files not swept; tried again on the next open", "err", err)
			} else if n > 0 {
				s.logf.Info("removed temporary files left by a crash", "count", n)
			}
		}()
	}
	return s, nil
}

// needsRecovery says why a read-only store cannot be trusted as it is.
func (s *Store) needsRecovery() error {
	behind, err := s.log.Behind(views{}.Name())
	if err != nil {
		return err
	}
	if behind {
		return fmt.Errorf("%w: the views are behind the log", ErrNeedsRecovery)
	}
	return s.log.View(func(tx *eventlog.Tx) error {
		b, err := tx.Bucket(bucketPending)
		if err != nil {
			return err
		}
		if b != nil {
			if k, _ := b.Cursor().First(); k != nil {
				return fmt.Errorf("%w: the artifact of %s is not written yet", ErrNeedsRecovery, k)
			}
		}
		return nil
	})
}

// Close closes the log after in-flight appends commit. Stop issuing
// commands first: one that has appended may still be writing its artifact,
// which the next Open finishes.
func (s *Store) Close() error {
	if s.swept != nil {
		s.stopSweep.Store(true)
		<-s.swept
	}
	return s.log.Close()
}

// Dir returns the data directory.
func (s *Store) Dir() string { return s.dir }

// Log returns the event log, for readers (events, replay, verify).
func (s *Store) Log() *eventlog.Log { return s.log }

// A Mark is what a background pass has seen: the log's last record and the
// set of daemons sharing it. Take it before the pass and Wait on it after,
// so that nothing that happens during the pass is missed.
type Mark struct {
	seq     uint64
	changed <-chan struct{} // Peers.Changed as of the mark; nil without peers
}

// Mark returns what the store has seen now.
func (s *Store) Mark() Mark {
	return Mark{seq: s.log.Last(), changed: s.own.changed()}
}

// Wait waits until the log holds a record after m, the store's clock
// reaches until (never, when until is zero), the daemons sharing the log
// changed since m (Peers.Changed: this daemon may own what it did not), or
// ctx ends; only the last is an error (ctx's), besides the log closing.
func (s *Store) Wait(ctx context.Context, m Mark, until time.Time) error {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if !until.IsZero() {
		defer s.clock.AfterFunc(until.Sub(s.clock.Now()), cancel)()
	}
	if m.changed != nil {
		go func() {
			select {
			case <-m.changed:
				cancel()
			case <-wctx.Done():
			}
		}()
	}
	_, err := s.log.Wait(wctx, m.seq)
	switch {
	case ctx.Err() != nil:
		return ctx.Err()
	case errors.Is(err, context.Canceled):
		return nil // the clock reached until, or the daemons changed
	}
	return err
}

// Registration is what a delegate call provides: the fields of
// fsm.Registration, flat so that a caller's literal names them, and an
// idempotency key.
type Registration struct {
	ProjectID       string
	RootSessionID   string
	ParentSessionID string
	ParentMessageID string
	ParentAgent     string
	SessionID       string // the child session, if already created
	Agent           string
	Model           string
	Prompt          string
	Timeout         time.Duration // 0: the store's default
	// IdempotencyKey makes a retried registration return the delegation
	// the first attempt created instead of creating another.
	IdempotencyKey string
}

// MaxIdempotencyKey is the longest idempotency key of a registration, in
// bytes: the log's limit less the "register:" prefix.
//
// The log keeps keys in one index sorted by key. Keys that ascend with time
// (led by the time of their message, or of a recent session's start) reach
// it on its last pages; random ones (a bare tool call id) each on a page
// no commit has touched for long. At a million events, random keys cost a
// tenth or more of the lifecycle rate: 0.81 of an empty store's against
// 0.91-0.94 without keys, in two sessions (BenchmarkLifecyclesHistory in
// cmd/delegations/api, -history.keys).
const MaxIdempotencyKey = eventlog.MaxKeyLen - len("register:")

// Register creates a delegation with a fresh id.
func (s *Store) Register(ctx context.Context, r Registration) (fsm.Delegation, error) {
	if r.IdempotencyKey != "" {
		if err := fsm.ValidateName("idempotency key", r.IdempotencyKey); err != nil {
			return fsm.Delegation{}, err
		}
		if n := len(r.IdempotencyKey); n > MaxIdempotencyKey {
			return fsm.Delegation{}, fmt.Errorf("%w: idempotency key is %d bytes, the limit is %d", fsm.ErrInvalid, n, MaxIdempotencyKey)
		}
	}
	// Timeouts are kept in milliseconds (the record's timeoutMs): a finer
	// one would make the deadline differ between the event and the record.
	r.Timeout = r.Timeout.Truncate(time.Millisecond)
	cmd := fsm.Event{Kind: fsm.KindRegistered, Owner: s.own.self(), Registration: fsm.Registration{
		ProjectID: r.ProjectID, RootSessionID: r.RootSessionID, ParentSessionID: r.ParentSessionID,
		ParentMessageID: r.ParentMessageID, ParentAgent: r.ParentAgent, SessionID: r.SessionID,
		Agent: r.Agent, Model: r.Model, Prompt: r.Prompt, Timeout: r.Timeout,
	}}
	var key string
	if r.IdempotencyKey != "" {
		key = "register:" + r.IdempotencyKey
	}
	// A drawn id can be taken between the check and the append; the
	// expected-version check catches that and we draw again.
	for range fsm.DefaultIDAttempts {
		id, err := fsm.GenerateID(s.ids, s.clock.Now(), func(id string) (bool, error) { return s.taken(r, id) }, 0)
		if err != nil {
			return fsm.Delegation{}, err
		}
		cmd.ID = id
		d, err := s.execute(ctx, cmd, key)
		if errors.Is(err, fsm.ErrExists) {
			continue
		}
		return d, err
	}
	return fsm.Delegation{}, fmt.Errorf("register: %w", fsm.ErrIDSpaceExhausted)
}

// Start marks a delegation running; session names the child session.
func (s *Store) Start(ctx context.Context, id, session string) (fsm.Delegation, error) {
	started := fsm.Event{Kind: fsm.KindStarted, ID: id, Registration: fsm.Registration{SessionID: session}}
	return s.execute(ctx, started, "")
}

// Progress records a heartbeat with the child's latest text.
func (s *Store) Progress(ctx context.Context, id, message string) (fsm.Delegation, error) {
	if err := fsm.ValidateID(id); err != nil {
		return fsm.Delegation{}, err
	}
	cmd := fsm.Event{Kind: fsm.KindProgressed, ID: id, Message: message}
	return s.run(ctx, command{id: id, load: loadForProgress, decide: s.decideCommand(cmd)})
}

// Complete ends a delegation with its result. Blank title and description
// get the plugin's fallbacks. Like every terminal command it then writes the
// artifact and records it (see Persist).
func (s *Store) Complete(ctx context.Context, id, result, title, description string) (fsm.Delegation, error) {
	return s.terminate(ctx, fsm.Event{Kind: fsm.KindCompleted, ID: id, Result: result, Title: title, Description: description})
}

// Fail ends a delegation with an error.
func (s *Store) Fail(ctx context.Context, id, errText string) (fsm.Delegation, error) {
	return s.terminate(ctx, fsm.Event{Kind: fsm.KindFailed, ID: id, Error: errText})
}

// Cancel ends a delegation before completion.
func (s *Store) Cancel(ctx context.Context, id, reason string) (fsm.Delegation, error) {
	return s.terminate(ctx, fsm.Event{Kind: fsm.KindCancelled, ID: id, Reason: reason})
}

// Timeout ends a delegation that ran past its deadline, keeping its last
// progress text as partial output.
func (s *Store) Timeout(ctx context.Context, id string) (fsm.Delegation, error) {
	return s.terminate(ctx, fsm.Event{Kind: fsm.KindTimedOut, ID: id})
}

// terminate runs a terminal command (see end).
func (s *Store) terminate(ctx context.Context, cmd fsm.Event) (fsm.Delegation, error) {
	if err := fsm.ValidateID(cmd.ID); err != nil {
		return fsm.Delegation{}, err
	}
	d, _, err := s.end(ctx, cmd.ID, func(d *fsm.Delegation, at time.Time) ([]fsm.Event, error) {
		if d == nil {
			return nil, &notFoundError{id: cmd.ID, dir: s.dir}
		}
		cmd.At = at
		return fsm.Decide(d, cmd, s.cfg)
	})
	return d, err
}

// end runs a command that may end a delegation, and persists its artifact:
// the artifact of the record the decided events lead to is written (temp,
// fsync, rename, directory fsync) while the append that records the
// terminal events and the persisted event waits for its commit, which the
// log holds until the file is durable (eventlog.Append.Ready). A large
// artifact's terminal events are committed while it is written instead,
// and its persisted event once it is durable, in a second append (see
// largeArtifact). Either way the notification becomes due only once the
// file is durable and persisted is recorded, and the delegation's lock is
// held throughout: its other commands, and a read that would persist it
// (Persist), wait for both. A crash before the terminal events are
// committed leaves a file beside a delegation the log says is active,
// which its terminal command, when it comes, writes again; one after them
// leaves it pending, persisted by the next Open. A failed artifact write,
// or one not durable within artifactWait, does not stop the terminal
// events: the delegation stays pending, is logged, and is retried by a
// repeat of the command, the next Open or PersistPending.
// ended reports whether the command's events ended the delegation.
func (s *Store) end(ctx context.Context, id string, decide decideFunc) (d fsm.Delegation, ended bool, err error) {
	// Once under way, the command finishes even if the caller has gone:
	// its artifact may already be on disk, and without the persisted event
	// no notification would become due.
	ctx = context.WithoutCancel(ctx)
	defer s.lock(id)()
	var (
		writeErr error
		large    *artifactWrite // a large artifact under way, whose persisted event comes after
	)
	d, err = s.runLocked(ctx, command{
		id: id,
		decide: func(cur *fsm.Delegation, at time.Time) ([]fsm.Event, error) {
			if large != nil {
				// Deciding again after a conflict: the earlier decision's
				// file is not recorded, and must not land after this one's.
				_, large = large.wait(), nil
			}
			return decide(cur, at)
		},
		write: func(prev, next *fsm.Delegation, at time.Time) ([]fsm.Event, func() error) {
			writeErr, ended = nil, !prev.State.Terminal() && next.State.Terminal()
			if !ended || !next.PersistedAt.IsZero() || !s.own.owned(next) {
				return nil, nil // or its owner writes it (owner.go)
			}
			rel, err := artifact.RelPath(next.ProjectID, next.RootSessionID, next.ID)
			if writeErr = err; err != nil {
				return nil, nil
			}
			r := artifact.Rendered(next)
			if r.Len() >= largeArtifact {
				// Checked and hashed as it is written, beside the append:
				// only the persisted event needs the hash, after the file.
				large = s.startArtifactFile(id, rel, r)
				return nil, nil
			}
			// Hashed before the file is written, beside the append: the
			// persisted event needs the hash before its append, the file
			// only before its commit.
			a := recordedArtifact(rel, r)
			w := s.startArtifactFile(id, rel, r)
			var once sync.Once // the log may ask again, when it retries a batch
			return fsm.DecidePersisted(next, a, at), func() error {
				once.Do(func() { writeErr = w.wait() })
				return writeErr
			}
		},
	})
	switch {
	case large != nil:
		// Waited for whatever became of the append, so that no write goes
		// on past the command.
		if writeErr = large.wait(); err != nil {
			return d, ended, err
		}
		if writeErr == nil {
			var p fsm.Delegation
			// No idempotency key, as for any command's events: the version
			// the append expects already refuses a second.
			if p, writeErr = s.recordPersisted(ctx, &d, large.artifact, ""); writeErr == nil {
				return p, ended, nil
			}
		}
	case err != nil || !d.State.Terminal() || !d.PersistedAt.IsZero() || !s.own.owned(&d):
		return d, ended, err
	case writeErr == nil:
		// A repeat of the command that ended it, whose artifact an earlier
		// attempt failed to write: the terminal event is durable, so
		// finish the job now, even if the caller has gone.
		var p fsm.Delegation
		if p, writeErr = s.persistLocked(ctx, d.ID); writeErr == nil {
			return p, ended, nil
		}
	}
	s.logf.Warn("artifact not written; the delegation stays pending and is retried", "id", d.ID, "err", writeErr)
	return d, ended, nil
}

// largeArtifact is the size from which a terminal command commits its
// events while its artifact is written, and records persisted in a second
// append once the file is durable, rather than holding the commit of one
// append for the file: the commit of a text of megabytes takes about as
// long as the file's write, so the two overlap; a small artifact would
// pay a second commit for next to no overlap, which at 64 clients made a
// complete take 1.6-1.9 times a progress instead of 1.1-1.2
// (BenchmarkLifecycles). A variable: tests take every artifact as large.
var largeArtifact int64 = 1 << 20

// artifactWrite is an artifact file being written in the background.
type artifactWrite struct {
	id   string
	done chan error // closed when the write has ended, after its error if it failed
	// artifact is what the file holds, set before done is closed: read
	// it once wait has returned nil.
	artifact fsm.Artifact
}

// startArtifactFile starts writing r, the artifact of delegation id, at
// rel.
func (s *Store) startArtifactFile(id, rel string, r *artifact.Rendering) *artifactWrite {
	w := &artifactWrite{id: id, done: make(chan error, 1)}
	go func() {
		w.artifact = recordedArtifact(rel, r)
		if err := writeArtifactFile(s.dir, rel, r); err != nil {
			w.done <- fmt.Errorf("write artifact of %s: %w", w.id, err)
		}
		close(w.done)
	}()
	return w
}

// wait returns the write's error once it has ended, or an error once
// artifactWait has passed. It is called once per write.
func (w *artifactWrite) wait() error {
	t := time.NewTimer(artifactWait)
	defer t.Stop()
	select {
	case err := <-w.done:
		return err
	case <-t.C:
		return fmt.Errorf("write artifact of %s: not durable after %v; the terminal event is recorded alone", w.id, artifactWait)
	}
}

// artifactWait bounds how long a terminal command waits for its artifact
// to be durable: the log's writer, which holds every other append
// meanwhile (Append.Ready), or, for a large artifact, the command itself.
// Past it the terminal events are recorded alone and the delegation stays
// pending: a hung artifact filesystem stalls the log for this long, not
// for as long as it hangs. The write goes on; the retry writes the same
// bytes again.
var artifactWait = 10 * time.Second

// writeArtifactFile is artifact.WriteRendering; a test holds it to show a
// slow artifact does not hold the log.
var writeArtifactFile = artifact.WriteRendering

// recordedArtifact is what the persisted event records of the artifact at
// rel rendered as r: its path, size and hash.
func recordedArtifact(rel string, r *artifact.Rendering) fsm.Artifact {
	sum := r.Sum()
	return fsm.Artifact{Path: rel, Size: r.Len(), Hash: sum}
}

// writeArtifact writes the artifact of terminal delegation d.
func (s *Store) writeArtifact(d *fsm.Delegation) (fsm.Artifact, error) {
	rel, err := artifact.RelPath(d.ProjectID, d.RootSessionID, d.ID)
	if err != nil {
		return fsm.Artifact{}, err
	}
	r := artifact.Rendered(d)
	if err := artifact.WriteRendering(s.dir, rel, r); err != nil {
		return fsm.Artifact{}, fmt.Errorf("write artifact of %s: %w", d.ID, err)
	}
	return recordedArtifact(rel, r), nil
}

// Get returns the current record of a delegation, or an error wrapping
// fsm.ErrNotFound.
func (s *Store) Get(id string) (fsm.Delegation, error) {
	return s.lookup(id, loadRecord)
}

// stored is Get without the texts (see views.apply): for a caller that
// needs only the record's state, times and artifact, whatever its texts
// weigh.
func (s *Store) stored(id string) (fsm.Delegation, error) {
	return s.lookup(id, loadStored)
}

// lookup is Get with the record read by load (see get).
func (s *Store) lookup(id string, load func(*eventlog.Tx, string) (*fsm.Delegation, error)) (fsm.Delegation, error) {
	d, err := s.get(id, load)
	if errors.Is(err, fsm.ErrNotFound) && s.log.Replica() {
		// Registered through another daemon a moment ago, perhaps: look
		// again once this replica holds what the shared log holds now.
		ctx, cancel := context.WithTimeout(context.Background(), syncTimeout)
		defer cancel()
		if serr := s.log.Sync(ctx); serr != nil {
			return fsm.Delegation{}, fmt.Errorf("%w (and the shared log could not be asked whether it holds it: %v)", err, serr)
		}
		return s.get(id, load)
	}
	return d, err
}

// syncTimeout bounds how long a lookup waits for a replica to catch up
// with the shared log.
const syncTimeout = 30 * time.Second

// get is Get with the record read by load: loadRecord, or loadStored for
// the record without its texts.
func (s *Store) get(id string, load func(*eventlog.Tx, string) (*fsm.Delegation, error)) (fsm.Delegation, error) {
	if err := fsm.ValidateID(id); err != nil {
		return fsm.Delegation{}, err
	}
	var d *fsm.Delegation
	err := s.log.View(func(tx *eventlog.Tx) error {
		var err error
		d, err = load(tx, id)
		return err
	})
	if err != nil {
		return fsm.Delegation{}, err
	}
	if d == nil {
		return fsm.Delegation{}, &notFoundError{id: id, dir: s.dir}
	}
	return *d, nil
}

// notFoundError says which data directory was searched, since a wrong
// --data is the usual cause. It wraps fsm.ErrNotFound.
type notFoundError struct{ id, dir string }

func (e *notFoundError) Error() string {
	return fmt.Sprintf("delegation %q not found in %s (check the id, and --data if the store lives elsewhere)", e.id, e.dir)
}

func (e *notFoundError) Unwrap() error { return fsm.ErrNotFound }

// taken reports whether id names a delegation or an artifact file where r's
// artifact would go (the plugin's files predate the store).
func (s *Store) taken(r Registration, id string) (bool, error) {
	_, err := s.Get(id)
	if err == nil || !errors.Is(err, fsm.ErrNotFound) {
		return err == nil, err
	}
	rel, err := artifact.RelPath(r.ProjectID, r.RootSessionID, id)
	if err != nil {
		return false, err
	}
	_, err = os.Lstat(filepath.Join(s.dir, rel))
	return err == nil, nil
}

// maxConflicts bounds how often a command is decided again after another
// writer changed the delegation between the read and the append.
const maxConflicts = 16

// execute decides a lifecycle command with fsm and records the outcome. A
// refused command appends its rejected event and returns the guard's error
// with the record as it now is. A non-empty key makes the append idempotent.
func (s *Store) execute(ctx context.Context, cmd fsm.Event, key string) (fsm.Delegation, error) {
	if err := fsm.ValidateID(cmd.ID); err != nil {
		return fsm.Delegation{}, err
	}
	return s.update(ctx, cmd.ID, key, s.decideCommand(cmd))
}

// decideCommand decides cmd with fsm.
func (s *Store) decideCommand(cmd fsm.Event) decideFunc {
	return func(d *fsm.Delegation, at time.Time) ([]fsm.Event, error) {
		if d == nil && cmd.Kind != fsm.KindRegistered {
			return nil, &notFoundError{id: cmd.ID, dir: s.dir}
		}
		cmd.At = at
		return fsm.Decide(d, cmd, s.cfg)
	}
}

// decideFunc turns the current record (nil when the id is unknown) and the
// time into events to append, and an error to return after appending them
// (a guard's refusal) or instead (no events). It does no I/O: the fsm
// package decides.
type decideFunc func(d *fsm.Delegation, at time.Time) ([]fsm.Event, error)

// command is one command on one delegation, as run carries it out.
type command struct {
	id  string
	key string // if not empty, makes the append idempotent
	// load reads the record to decide on; nil is loadRecord. A decision
	// that needs no texts, for a caller that needs none back, passes
	// loadStored, so that the command's cost does not follow their size.
	load   func(*eventlog.Tx, string) (*fsm.Delegation, error)
	decide decideFunc
	// before, if set, does the work the decided events lead to (prev is
	// the record decided on, next the record they make), under the
	// delegation's lock and before they are appended, and returns events
	// recording it. It is called again when the append conflicts.
	before func(prev, next *fsm.Delegation, at time.Time) []fsm.Event
	// write, if set instead, starts that work and returns the events
	// recording it and a wait for it, which returns its error: the work
	// goes on while the append waits for its commit, which the log holds
	// until the wait returns (eventlog.Append.Ready). If the work fails,
	// the decided events are recorded alone.
	write func(prev, next *fsm.Delegation, at time.Time) ([]fsm.Event, func() error)
}

// update runs a command that needs only a decision.
func (s *Store) update(ctx context.Context, id, key string, decide decideFunc) (fsm.Delegation, error) {
	return s.run(ctx, command{id: id, key: key, decide: decide})
}

// run carries out a command. Guards run in decide, before the append; the
// log only checks that the record did not change since it was read
// (expected version), and a conflict means deciding again against the
// newer record. Commands on one delegation hold its lock, and the time is
// read under it, so one delegation's events never go back in time.
func (s *Store) run(ctx context.Context, c command) (fsm.Delegation, error) {
	defer s.lock(c.id)()
	return s.runLocked(ctx, c)
}

// runLocked is run, the delegation's lock held.
func (s *Store) runLocked(ctx context.Context, c command) (fsm.Delegation, error) {
	load := c.load
	if load == nil {
		load = loadRecord
	}
	// Milliseconds, as the plugin's timestamps: what is stored is exactly
	// what every rendering shows.
	at := s.clock.Now().UTC().Truncate(time.Millisecond)
	synced := false
	for range maxConflicts {
		cur, err := s.get(c.id, load)
		var d *fsm.Delegation
		switch {
		case err == nil:
			d = &cur
		case !errors.Is(err, fsm.ErrNotFound):
			return fsm.Delegation{}, err
		}
		events, guard := c.decide(d, at)
		if d == nil && len(events) == 0 && errors.Is(guard, fsm.ErrNotFound) && s.log.Replica() && !synced {
			// Perhaps registered through another daemon a moment ago:
			// decide again once this replica holds what the shared log
			// holds now.
			synced = true
			if err := s.log.Sync(ctx); err != nil {
				return fsm.Delegation{}, fmt.Errorf("%w (and the shared log could not be asked whether it holds it: %v)", guard, err)
			}
			continue
		}
		if len(events) == 0 {
			if guard != nil {
				return cur, guard
			}
			return cur, nil // idempotent: nothing to record
		}
		next := cur
		for _, e := range events {
			next = fsm.Evolve(next, e)
		}
		decided, base := len(events), next
		var ready func() error
		if guard == nil && (c.before != nil || c.write != nil) {
			var more []fsm.Event
			if c.before != nil {
				more = c.before(&cur, &next, at)
			} else {
				more, ready = c.write(&cur, &next, at)
			}
			for _, e := range more {
				next = fsm.Evolve(next, e)
			}
			events = append(events, more...)
		}
		var version uint64
		if d != nil {
			version = d.Version
		}
		res, err := s.recordReady(ctx, c.id, c.key, version, events, ready)
		// The work is waited for whatever became of the append, so that
		// none goes on past the command, or beside its retry. Not done,
		// it is not recorded: the decided events are, alone.
		if ready != nil {
			if werr := ready(); werr != nil && err != nil && errors.Is(err, werr) {
				events, next = events[:decided], base
				res, err = s.record(ctx, c.id, c.key, version, events)
			}
		}
		if errors.Is(err, eventlog.ErrConflict) {
			if d == nil && events[0].Kind == fsm.KindRegistered {
				return fsm.Delegation{}, fmt.Errorf("%w: %q", fsm.ErrExists, c.id)
			}
			continue
		}
		if err != nil {
			return fsm.Delegation{}, fmt.Errorf("%s %s: %w", events[0].Kind, c.id, err)
		}
		if res.Duplicate {
			return s.duplicate(res)
		}
		return next, guard
	}
	return fsm.Delegation{}, fmt.Errorf("%s: %w: the delegation kept changing over %d attempts; retry", c.id, eventlog.ErrConflict, maxConflicts)
}

// record appends events decided against version of stream (0: a new
// stream). It is the one way events reach the log: a delegation's
// commands (run), the all-complete bookkeeping of a parent session
// (ackAllComplete) and legacy imports all come through it.
func (s *Store) record(ctx context.Context, stream, key string, version uint64, events []fsm.Event) (eventlog.Result, error) {
	return s.recordReady(ctx, stream, key, version, events, nil)
}

// recordReady is record of events that are committed only once ready, if
// not nil, returns nil (eventlog.Append.Ready).
func (s *Store) recordReady(ctx context.Context, stream, key string, version uint64, events []fsm.Event, ready func() error) (eventlog.Result, error) {
	entries := make([]eventlog.Entry, len(events))
	for i := range events {
		entries[i] = eventlog.Entry{Kind: uint16(events[i].Kind), Time: events[i].At, Payload: events[i].MarshalPayload()}
	}
	return s.log.Append(ctx, eventlog.Append{Stream: stream, Entries: entries, Key: key, CheckVersion: true, Version: version, Ready: ready})
}

// idLock is one delegation's command lock; users counts the commands
// holding or waiting for it, and the last one removes it from the map.
type idLock struct {
	mu    sync.Mutex
	users int
}

// lock takes delegation id's command lock and returns its release. A
// lock per delegation, rather than a fixed set shared by hashing, keeps a
// command from waiting behind another delegation's commit and artifact
// write; the map holds only the delegations with a command under way.
func (s *Store) lock(id string) (unlock func()) {
	s.lockMu.Lock()
	l := s.locks[id]
	if l == nil {
		if s.locks == nil {
			s.locks = map[string]*idLock{}
		}
		l = &idLock{}
		s.locks[id] = l
	}
	l.users++
	s.lockMu.Unlock()
	l.mu.Lock()
	return func() {
		l.mu.Unlock()
		s.lockMu.Lock()
		if l.users--; l.users == 0 {
			delete(s.locks, id)
		}
		s.lockMu.Unlock()
	}
}

// duplicate returns the delegation an earlier append with the same
// idempotency key wrote to.
func (s *Store) duplicate(res eventlog.Result) (fsm.Delegation, error) {
	var id string
	err := s.log.View(func(tx *eventlog.Tx) error {
		r, err := tx.Record(res.First)
		id = r.Stream
		return err
	})
	if err != nil {
		return fsm.Delegation{}, err
	}
	return s.Get(id)
}
