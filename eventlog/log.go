package eventlog

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// Errors returned by the log. Typed errors (ConflictError, CorruptError)
// wrap one of these so callers can test with errors.Is.
var (
	// ErrInvalid reports an append the log refuses before touching disk:
	// empty or oversized stream ids, keys or payloads.
	ErrInvalid = errors.New("invalid append")
	// ErrConflict reports an append whose expected stream version did not
	// match; see ConflictError.
	ErrConflict = errors.New("stream version conflict")
	// ErrCorrupt reports a stored record or index entry that fails its
	// checks; see CorruptError.
	ErrCorrupt = errors.New("corrupt log")
	// ErrLocked reports that another process holds the log file.
	ErrLocked = errors.New("log file is locked by another process")
	// ErrBroken reports that a commit failed. Whether it reached the disk is
	// unknown, so the log refuses further writes until it is reopened; retry
	// with the same idempotency key after reopening.
	ErrBroken = errors.New("log refuses writes after a failed commit; reopen it")
	// ErrClosed reports use of a closed log.
	ErrClosed = errors.New("log is closed")
	// ErrReadOnly reports an append to a log opened with Options.ReadOnly.
	ErrReadOnly = errors.New("log is open read-only")
)

// ConflictError reports that a stream was not at the version an append expected.
type ConflictError struct {
	Stream   string
	Expected uint64
	Actual   uint64
}

func (e *ConflictError) Error() string {
	return fmt.Sprintf("stream %q is at version %d, append expected %d", e.Stream, e.Actual, e.Expected)
}

func (e *ConflictError) Unwrap() error { return ErrConflict }

// CorruptError names the sequence number of a record (or the index entry
// pointing at it) that failed verification.
type CorruptError struct {
	Seq    uint64
	Reason string
}

func (e *CorruptError) Error() string {
	return fmt.Sprintf("record %d: %s", e.Seq, e.Reason)
}

func (e *CorruptError) Unwrap() error { return ErrCorrupt }

func corrupt(seq uint64, format string, args ...any) error {
	return &CorruptError{Seq: seq, Reason: fmt.Sprintf(format, args...)}
}

// Bucket names. Everything the log owns lives under these; projections get
// their own buckets below bucketViews through Tx.Bucket.
var (
	bucketMeta        = []byte("meta")
	bucketEvents      = []byte("events")
	bucketIdempotency = []byte("idempotency")
	bucketCheckpoints = []byte("checkpoints")
	bucketViews       = []byte("views")

	metaFormat = []byte("format")
)

// Options configure Open. The zero value is usable.
type Options struct {
	// LockTimeout bounds the wait for the file lock held by another process.
	// Zero means 1s; bbolt itself would wait forever.
	LockTimeout time.Duration
	// Projectors update views in the same transaction as the records they
	// read. See Projector.
	Projectors []Projector
	// MaxBatch caps how many appends share one commit. Zero means 1024.
	MaxBatch int
	// Logger receives diagnostics; nil discards them.
	Logger *slog.Logger
	// Rebuild drops every view and checkpoint before the projectors catch
	// up, so that the views are rebuilt from the whole log.
	Rebuild bool
	// OpenFile, if set, replaces os.OpenFile for the database file; tests use
	// it to inject write faults.
	OpenFile func(name string, flag int, perm os.FileMode) (*os.File, error)
	// ReadOnly opens the file for reading only, under a shared lock: other
	// readers may hold it at the same time, writers may not. Nothing is
	// written, not even at open: no buckets are created and projectors do
	// not catch up (use Behind to learn whether they would). Append fails
	// with ErrReadOnly. The file must exist.
	ReadOnly bool
	// Upstream, if set, makes the file a replica of a shared log: appends
	// go upstream and a follower applies the shared log's records to the
	// file, running the projectors as for local appends (see Upstream).
	// The file is bound to the upstream's ID at the first open: another
	// upstream, or a writer without one, is refused. Open returns once the
	// file holds every record the upstream knew of when it was called;
	// Close closes the upstream (a failed Open leaves it to the caller).
	Upstream Upstream
}

// Log is an append-only event log in one bbolt file. It is safe for
// concurrent use. Appends are serialised through one writer goroutine that
// commits them in groups.
type Log struct {
	db         *bolt.DB
	path       string
	log        *slog.Logger
	projectors []Projector
	maxBatch   int
	readOnly   bool
	upstream   Upstream
	stopFollow context.CancelFunc

	last   atomic.Uint64            // last committed sequence number
	broken atomic.Pointer[errorBox] // set after a failed commit

	notifyMu sync.Mutex
	notify   chan struct{} // closed and replaced after every commit

	mu       sync.RWMutex // guards closed against in-flight appends
	closed   bool
	inflight sync.WaitGroup
	reqs     chan *request
	quit     chan struct{}
	closing  chan struct{} // closed when Close begins: ends waits for a follower (waitApplied)
	done     chan struct{}
}

type errorBox struct{ err error }

// Open opens (creating if needed) the log at path. The directory is created
// with mode 0700 and the file with 0600. If another process holds the file,
// Open fails with ErrLocked after opts.LockTimeout.
func Open(path string, opts Options) (*Log, error) {
	if opts.LockTimeout <= 0 {
		opts.LockTimeout = time.Second
	}
	if opts.MaxBatch <= 0 {
		opts.MaxBatch = 1024
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	names := map[string]bool{}
	for _, p := range opts.Projectors {
		n := p.Name()
		if n == "" || names[n] {
			return nil, fmt.Errorf("open log %s: projector name %q is empty or used twice", path, n)
		}
		names[n] = true
	}
	if opts.ReadOnly && opts.Upstream != nil {
		return nil, fmt.Errorf("open log %s: %w: a replica writes what it follows", path, ErrInvalid)
	}
	if opts.ReadOnly && opts.Rebuild {
		return nil, fmt.Errorf("open log %s: %w: a rebuild writes", path, ErrInvalid)
	}
	if !opts.ReadOnly {
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, fmt.Errorf("open log %s: %w", path, err)
		}
	}
	if err := precheck(path, opts.ReadOnly, opts.LockTimeout); err != nil {
		return nil, fmt.Errorf("open log %s: %w", path, err)
	}
	// bbolt can panic or fault while opening a damaged file, before it
	// returns a DB to close: keep the file it opened, to release its lock.
	var file *os.File
	openFile := opts.OpenFile
	if openFile == nil {
		openFile = os.OpenFile
	}
	bopts := &bolt.Options{
		Timeout:      opts.LockTimeout,
		FreelistType: bolt.FreelistMapType,
		ReadOnly:     opts.ReadOnly,
		OpenFile: func(name string, flag int, perm os.FileMode) (*os.File, error) {
			f, err := openFile(name, flag, perm)
			file = f
			return f, err
		},
	}
	if !opts.ReadOnly && runtime.GOOS != "windows" {
		// Address space, not memory (Windows would grow the file to it):
		// the file then grows without bbolt mapping it again, which in a
		// commit waits for every read transaction to end and copies every
		// key and value the commit wrote to the heap (a large payload's
		// chunks once more), at every doubling of the file up to 1 GiB.
		bopts.InitialMmapSize = wideMmap
	}
	var db *bolt.DB
	err := guard("open", func() error {
		var err error
		db, err = bolt.Open(path, 0o600, bopts)
		if err != nil && bopts.InitialMmapSize != 0 && errors.Is(err, syscall.ENOMEM) {
			// A limit on address space (ulimit -v): map as the file grows.
			bopts.InitialMmapSize = 0
			db, err = bolt.Open(path, 0o600, bopts)
		}
		return err
	})
	if db == nil && file != nil && err != nil {
		file.Close()
	}
	if errors.Is(err, berrors.ErrTimeout) {
		return nil, fmt.Errorf("open log %s: %w", path, ErrLocked)
	}
	var pathErr *fs.PathError
	if err != nil && !errors.Is(err, ErrCorrupt) && !errors.As(err, &pathErr) {
		// Not the file system's error: bbolt's about the contents (bad
		// meta pages, too short, ...).
		err = &DamageError{Page: NoPage, Reason: fmt.Sprintf("bbolt cannot open it: %v", err)}
	}
	if err != nil {
		return nil, fmt.Errorf("open log %s: %w", path, err)
	}
	l := &Log{
		db:         db,
		path:       path,
		log:        logger,
		projectors: opts.Projectors,
		maxBatch:   opts.MaxBatch,
		readOnly:   opts.ReadOnly,
		upstream:   opts.Upstream,
		notify:     make(chan struct{}),
		reqs:       make(chan *request, opts.MaxBatch),
		quit:       make(chan struct{}),
		closing:    make(chan struct{}),
		done:       make(chan struct{}),
	}
	fail := func(err error) (*Log, error) {
		db.Close()
		return nil, fmt.Errorf("open log %s: %w", path, err)
	}
	if opts.ReadOnly {
		if err := guard("open", l.load); err != nil {
			return fail(err)
		}
		close(l.done) // no writer
		return l, nil
	}
	// The file holds every delegation's prompt and result: keep it private
	// even if an older tool created it with a looser mode.
	if err := os.Chmod(path, 0o600); err != nil {
		return fail(err)
	}
	// A log migrated elsewhere is only read (seal.go).
	if err := guard("open", l.refuseSealed); err != nil {
		return fail(err)
	}
	// A write to a damaged file can turn index damage into lost records
	// (bbolt rewrites and frees the pages it believes in), so a writer
	// checks the whole structure first, while it holds the lock.
	if err := l.checkWritable(); err != nil {
		return fail(err)
	}
	if err := guard("open", l.init); err != nil {
		return fail(err)
	}
	if err := guard("open", func() error { return l.bindUpstream(opts.Upstream) }); err != nil {
		return fail(err)
	}
	if opts.Rebuild {
		if err := guard("rebuild", l.dropViews); err != nil {
			return fail(fmt.Errorf("rebuild: %w", err))
		}
	}
	if err := guard("catch up", l.catchUp); err != nil {
		return fail(err)
	}
	if opts.Upstream != nil {
		ctx, cancel := context.WithCancel(context.Background())
		l.stopFollow = cancel
		go l.follow(ctx)
		if err := l.Sync(context.Background()); err != nil {
			cancel()
			<-l.done
			return fail(err)
		}
		return l, nil
	}
	go l.writer()
	return l, nil
}

// checkWritable checks the log's own invariants at the tail, through bbolt.
// precheck has read every page without trusting it (structure, key order,
// freelist, and that the stream index has one entry per record); bbolt's
// own Tx.Check, which covers the same ground at twice the cost (200 ms for
// a million records here), runs in Verify of a read-only log instead.
func (l *Log) checkWritable() error {
	return guard("check", func() error {
		return l.db.View(func(tx *bolt.Tx) error { return checkTail(tx) })
	})
}

// checkTail checks what a write relies on and is cheap to read: the last
// record decodes, and no checkpoint or stream index entry is past it.
func checkTail(tx *bolt.Tx) error {
	events := tx.Bucket(bucketEvents)
	if events == nil {
		return nil // a new file; init creates the buckets
	}
	k, v := events.Cursor().Last()
	var last uint64
	if k != nil {
		seq, err := seqKey(k)
		if err != nil {
			return err
		}
		if _, err := readRecord(tx, seq, v); err != nil {
			return err
		}
		last = seq
	}
	if vb := tx.Bucket(bucketVersions); vb != nil {
		if vk, vv := vb.Cursor().Last(); vk != nil && (len(vv) != 8 || binary.BigEndian.Uint64(vv) > last) {
			return corrupt(last, "the stream index's last entry %x points past the last record", clip(vv))
		}
	}
	if cb := tx.Bucket(bucketCheckpoints); cb != nil {
		return cb.ForEach(func(k, v []byte) error {
			if len(v) != 8 || binary.BigEndian.Uint64(v) > last {
				return corrupt(last, "projection %q checkpoint %x is past the last record", clip(k), clip(v))
			}
			return nil
		})
	}
	return nil
}

// load checks the buckets of a file opened read-only and loads the last
// sequence number.
func (l *Log) load() error {
	return l.db.View(func(tx *bolt.Tx) error {
		// Views and checkpoints are a writer's to create (and drop, in a
		// rebuild); the records and their indexes must be there.
		for _, name := range [][]byte{bucketMeta, bucketEvents, bucketStreams, bucketVersions, bucketIdempotency} {
			if tx.Bucket(name) == nil {
				return &DamageError{Page: NoPage, Reason: fmt.Sprintf("bucket %q is missing", name)}
			}
		}
		if err := knownFormat(tx.Bucket(bucketMeta).Get(metaFormat)); err != nil {
			return err
		}
		l.last.Store((&Tx{tx: tx}).Last())
		return nil
	})
}

// ReadOnly reports whether the log was opened with Options.ReadOnly.
func (l *Log) ReadOnly() bool { return l.readOnly }

// Behind reports whether projector name has not seen every record: a
// writer opening the log would catch it up first.
func (l *Log) Behind(name string) (bool, error) {
	var behind bool
	err := l.View(func(tx *Tx) error {
		behind = tx.Checkpoint(name) < tx.Last()
		return nil
	})
	return behind, err
}

// init creates the buckets of a new file, checks the format of an existing
// one and loads the last sequence number.
func (l *Log) init() error {
	return l.db.Update(func(tx *bolt.Tx) error {
		for _, name := range [][]byte{bucketMeta, bucketEvents, bucketStreams, bucketVersions, bucketIdempotency, bucketCheckpoints, bucketViews} {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return err
			}
		}
		if err := initFormat(tx.Bucket(bucketMeta)); err != nil {
			return err
		}
		k, _ := tx.Bucket(bucketEvents).Cursor().Last()
		if k != nil {
			if len(k) != 8 {
				return corrupt(0, "last events key is %d bytes, want 8", len(k))
			}
			l.last.Store(binary.BigEndian.Uint64(k))
		}
		return nil
	})
}

// dropViews deletes every view bucket and checkpoint; catchUp then
// rebuilds them from the first record.
func (l *Log) dropViews() error {
	return l.db.Update(func(tx *bolt.Tx) error {
		for _, name := range [][]byte{bucketViews, bucketCheckpoints} {
			if err := tx.DeleteBucket(name); err != nil {
				return err
			}
			if _, err := tx.CreateBucket(name); err != nil {
				return err
			}
		}
		return nil
	})
}

// Last returns the sequence number of the last committed record (0 when empty).
func (l *Log) Last() uint64 { return l.last.Load() }

// Allocated returns how many bytes of pages the write transactions of this
// Log have allocated since it was opened: what commits wrote to the file,
// a measure that, unlike the file's size, does not move in steps.
func (l *Log) Allocated() int64 {
	st := l.db.Stats()
	return st.TxStats.GetPageAlloc()
}

// Close waits for in-flight appends to commit, stops the writer and closes
// the file. Appends started after Close fail with ErrClosed.
func (l *Log) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	l.mu.Unlock()
	// A replica's append committed upstream waits for the follower, which
	// stops only after the in-flight appends: end those waits first, or a
	// follower that cannot reach the upstream would hold Close forever.
	close(l.closing)
	l.inflight.Wait()
	if !l.readOnly {
		close(l.quit)
	}
	if l.stopFollow != nil {
		l.stopFollow()
	}
	<-l.done
	l.notifyMu.Lock()
	close(l.notify) // wake waiters; they see ErrClosed
	l.notify = nil
	l.notifyMu.Unlock()
	err := l.db.Close()
	if l.upstream != nil {
		err = errors.Join(err, l.upstream.Close())
	}
	if err != nil {
		return fmt.Errorf("close log %s: %w", l.path, err)
	}
	return nil
}

func (l *Log) isClosed() bool {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.closed
}

func u64(v uint64) []byte {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], v)
	return b[:]
}
