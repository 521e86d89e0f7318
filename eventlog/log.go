package eventlog

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
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

	last   atomic.Uint64            // last committed sequence number
	broken atomic.Pointer[errorBox] // set after a failed commit

	notifyMu sync.Mutex
	notify   chan struct{} // closed and replaced after every commit

	mu       sync.RWMutex // guards closed against in-flight appends
	closed   bool
	inflight sync.WaitGroup
	reqs     chan *request
	quit     chan struct{}
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
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("open log %s: %w", path, err)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{
		Timeout:      opts.LockTimeout,
		FreelistType: bolt.FreelistMapType,
		OpenFile:     opts.OpenFile,
	})
	if errors.Is(err, berrors.ErrTimeout) {
		return nil, fmt.Errorf("open log %s: %w: is `delegations serve` running for this data directory? "+
			"Talk to it, stop it, or wait for the other command to finish", path, ErrLocked)
	}
	if err != nil {
		return nil, fmt.Errorf("open log %s: %w", path, err)
	}
	// The file holds every delegation's prompt and result: keep it private
	// even if an older tool created it with a looser mode.
	if err := os.Chmod(path, 0o600); err != nil {
		db.Close()
		return nil, fmt.Errorf("open log %s: %w", path, err)
	}
	l := &Log{
		db:         db,
		path:       path,
		log:        logger,
		projectors: opts.Projectors,
		maxBatch:   opts.MaxBatch,
		notify:     make(chan struct{}),
		reqs:       make(chan *request, opts.MaxBatch),
		quit:       make(chan struct{}),
		done:       make(chan struct{}),
	}
	if err := l.init(); err != nil {
		db.Close()
		return nil, fmt.Errorf("open log %s: %w", path, err)
	}
	if opts.Rebuild {
		if err := l.dropViews(); err != nil {
			db.Close()
			return nil, fmt.Errorf("open log %s: rebuild: %w", path, err)
		}
	}
	if err := l.catchUp(); err != nil {
		db.Close()
		return nil, fmt.Errorf("open log %s: %w", path, err)
	}
	go l.writer()
	return l, nil
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
		meta := tx.Bucket(bucketMeta)
		switch v := meta.Get(metaFormat); {
		case v == nil:
			if err := meta.Put(metaFormat, []byte{FormatVersion}); err != nil {
				return err
			}
		case len(v) != 1 || v[0] != FormatVersion:
			return fmt.Errorf("%w: file format %v is not %d; this build cannot read it", ErrCorrupt, v, FormatVersion)
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
	l.inflight.Wait()
	close(l.quit)
	<-l.done
	l.notifyMu.Lock()
	close(l.notify) // wake waiters; they see ErrClosed
	l.notify = nil
	l.notifyMu.Unlock()
	if err := l.db.Close(); err != nil {
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
