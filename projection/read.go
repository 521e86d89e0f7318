package projection

import (
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"slices"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/delegations/delegations/eventlog"
	"github.com/delegations/delegations/fsm"
	"github.com/delegations/delegations/projection/artifact"
)

// ReadGrace is how long past its deadline a blocking read waits before it
// times the delegation out itself (the plugin's 10 s).
const ReadGrace = 10 * time.Second

// ReadResult is what delegation_read returns.
type ReadResult struct {
	Text       string         `json:"text"`
	Artifact   bool           `json:"artifact"` // Text is the artifact, and the read was recorded
	Delegation fsm.Delegation `json:"delegation"`
}

// ReadNotFoundError is the plugin's error for an id the caller cannot see.
type ReadNotFoundError struct{ ID string }

func (e *ReadNotFoundError) Error() string { return artifact.NotFoundReadText(e.ID) }
func (e *ReadNotFoundError) Unwrap() error { return fsm.ErrNotFound }

// Read implements delegation_read for a caller in root session root
// (the plugin's delegation_read). An active delegation is waited for, at
// most wait and at most until its deadline plus ReadGrace, when it is timed
// out. A terminal delegation whose artifact is not written yet is persisted
// first; if that fails, the deterministic terminal text is returned and the
// read is not recorded. Returning the artifact records a read event, which
// clears the unread flag.
func (s *Store) Read(ctx context.Context, root, id string, wait time.Duration) (ReadResult, error) {
	id = strings.TrimSpace(id)
	if id == "" {
		return ReadResult{}, fmt.Errorf("%w: %s", fsm.ErrInvalid, artifact.ReadIDRequired)
	}
	if err := fsm.ValidateSessionID(fsm.FieldRootSessionID, root); err != nil {
		return ReadResult{}, err
	}
	if err := fsm.ValidateID(id); err != nil {
		return ReadResult{}, err
	}
	d, err := s.visible(root, id)
	if err != nil {
		return ReadResult{}, err
	}
	if d.State.Active() {
		if d, err = s.awaitTerminal(ctx, d, wait); err != nil {
			return ReadResult{}, err
		}
		if d.State.Active() {
			return s.pendingRead(d)
		}
	}
	return s.finishRead(ctx, d)
}

// pendingRead returns the text of a read that finds no artifact, and the
// whole record: d's, read again with its texts.
func (s *Store) pendingRead(d fsm.Delegation) (ReadResult, error) {
	full, err := s.Get(d.ID)
	if err != nil {
		return ReadResult{}, err
	}
	return ReadResult{Text: artifact.PendingReadText(&full, s.artifactPath(&full)), Delegation: full}, nil
}

// readBatch is the end of the reads of one terminal delegation that run
// together: one of them (the leader) persists the delegation if needed,
// reads the artifact once, and records one read event for all of them;
// the others wait for its result. Without it, the readers a completion
// wakes would each take the delegation's lock and commit their own read
// event, one after the other: the last of 1,000 would wait for 1,000
// commits.
type readBatch struct {
	closed bool // the leader holds the lock: new readers start a new batch
	done   chan struct{}
	res    ReadResult
	err    error
}

// finishRead returns the artifact of terminal delegation d and records a
// read, or returns the pending text when the artifact cannot be written.
// Concurrent reads of one delegation share the work (see readBatch).
func (s *Store) finishRead(ctx context.Context, d fsm.Delegation) (ReadResult, error) {
	s.readMu.Lock()
	if b := s.reads[d.ID]; b != nil && !b.closed {
		s.readMu.Unlock()
		<-b.done // the leader's work is durable state: it finishes
		return b.res, b.err
	}
	if s.reads == nil {
		s.reads = map[string]*readBatch{}
	}
	b := &readBatch{done: make(chan struct{})}
	s.reads[d.ID] = b
	s.readMu.Unlock()
	// The others' reads must not fail because this caller left, and the
	// work is durable state: finish it regardless.
	b.res, b.err = s.leadRead(context.WithoutCancel(ctx), d, b)
	s.closeBatch(d.ID, b)
	close(b.done)
	return b.res, b.err
}

// closeBatch stops b taking readers.
func (s *Store) closeBatch(id string, b *readBatch) {
	s.readMu.Lock()
	defer s.readMu.Unlock()
	if !b.closed {
		b.closed = true
		if s.reads[id] == b {
			delete(s.reads, id)
		}
	}
}

// leadRead does the work of a batch of reads. d is the record without
// its texts (Store.stored): the read event's command reads them, once, for
// the record it returns.
func (s *Store) leadRead(ctx context.Context, d fsm.Delegation, b *readBatch) (ReadResult, error) {
	id := d.ID
	if d.PersistedAt.IsZero() {
		p, err := s.Persist(ctx, id)
		if err != nil || p.PersistedAt.IsZero() { // failed, or another daemon's to write (owner.go)
			if err != nil {
				s.logf.Warn("artifact not written; returning the terminal text", "id", id, "err", err)
			}
			return s.pendingRead(d)
		}
		d = p
	}
	content, err := s.artifact(&d)
	if err != nil {
		return ReadResult{}, err
	}
	d, err = s.run(ctx, command{
		id: id,
		decide: func(cur *fsm.Delegation, at time.Time) ([]fsm.Event, error) {
			if cur == nil {
				return nil, &ReadNotFoundError{ID: id}
			}
			return fsm.DecideRead(cur, at), nil
		},
		// Under the delegation's lock: a reader who comes now would wait
		// for this append anyway, and joins the next batch.
		before: func(_, _ *fsm.Delegation, _ time.Time) []fsm.Event {
			s.closeBatch(id, b)
			return nil
		},
	})
	if err != nil {
		return ReadResult{}, err
	}
	return ReadResult{Text: string(content), Artifact: true, Delegation: d}, nil
}

// visible returns the record if the caller's root session may see it.
func (s *Store) visible(root, id string) (fsm.Delegation, error) {
	d, err := s.stored(id)
	if errors.Is(err, fsm.ErrNotFound) || (err == nil && d.RootSessionID != root) {
		return fsm.Delegation{}, &ReadNotFoundError{ID: id}
	}
	return d, err
}

// awaitTerminal waits for d to become terminal, for at most wait, and times
// it out once its deadline plus ReadGrace has passed.
func (s *Store) awaitTerminal(ctx context.Context, d fsm.Delegation, wait time.Duration) (fsm.Delegation, error) {
	limit := s.clock.Now().Add(wait)
	for {
		// Take the log position before reading the record: a completion
		// committed in between is then after it, and the watch sees it.
		last := s.log.Last()
		var err error
		if d, err = s.stored(d.ID); err != nil || !d.State.Active() {
			return d, err
		}
		now := s.clock.Now()
		if !now.Before(d.TimeoutAt.Add(ReadGrace)) {
			return s.Timeout(ctx, d.ID)
		}
		until := d.TimeoutAt.Add(ReadGrace)
		if limit.Before(until) {
			until = limit
		}
		if !now.Before(until) {
			return d, nil
		}
		if end, err := s.awaitWatch(ctx, d.ID, last, until); err != nil || end != nil {
			if end != nil {
				return *end, nil
			}
			return d, err
		}
	}
}

// watch is the wait of every blocking read of one delegation: a single
// goroutine reads the record again after each commit and tells all the
// waiters when it has ended. Without it, each of 1,000 waiters would
// read the record in its own transaction after every commit.
type watch struct {
	waiters int           // guarded by Store.readMu
	stop    func()        // ends the goroutine once no one waits
	done    chan struct{} // closed when d is terminal or err is set
	d       fsm.Delegation
	err     error
}

// awaitWatch waits until the delegation id ends (its record), the clock
// reaches until (nil, nil), or ctx ends (its error). last is a log
// position at which the caller saw it active.
func (s *Store) awaitWatch(ctx context.Context, id string, last uint64, until time.Time) (*fsm.Delegation, error) {
	s.readMu.Lock()
	if s.watches == nil {
		s.watches = map[string]*watch{}
	}
	w := s.watches[id]
	if w == nil {
		wctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		w = &watch{stop: cancel, done: make(chan struct{})}
		s.watches[id] = w
		go s.runWatch(wctx, id, w, last)
	}
	w.waiters++
	s.readMu.Unlock()
	defer func() {
		select {
		case <-w.done:
			return // the watch has ended, and left the map: nothing to stop
		default:
		}
		s.readMu.Lock()
		if w.waiters--; w.waiters == 0 {
			w.stop()
			if s.watches[id] == w {
				delete(s.watches, id)
			}
		}
		s.readMu.Unlock()
	}()
	reached := make(chan struct{})
	defer s.clock.AfterFunc(until.Sub(s.clock.Now()), func() { close(reached) })()
	select {
	case <-w.done:
		if w.err != nil {
			return nil, w.err
		}
		return &w.d, nil
	case <-reached:
		return nil, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// runWatch reads the record of id after every commit past last until it
// has ended, the log closes, or ctx (the last waiter leaving) ends.
func (s *Store) runWatch(ctx context.Context, id string, w *watch, last uint64) {
	for {
		if _, err := s.log.Wait(ctx, last); err != nil {
			if ctx.Err() != nil {
				return // no one waits
			}
			w.err = err // the log closed
			break
		}
		last = s.log.Last()
		d, err := s.stored(id)
		if err != nil || !d.State.Active() {
			w.d, w.err = d, err
			break
		}
	}
	s.readMu.Lock()
	if s.watches[id] == w {
		delete(s.watches, id) // later waiters start afresh
	}
	s.readMu.Unlock()
	w.stop()
	close(w.done)
}

// artifact returns the artifact's bytes. A file with exactly the
// persisted size and hash is returned as it is, even when the record
// renders differently: an imported legacy file is the plugin's rendering;
// the record's texts are then not read. A file that is missing, differs
// from what was persisted and from the record's rendering, or is not a
// regular file (a symlink is replaced, never followed) is written again
// from the record: it is a projection, and its bytes depend only on the
// record. d may be without its texts (Store.stored).
func (s *Store) artifact(d *fsm.Delegation) ([]byte, error) {
	got, err := artifact.Read(s.dir, d.ArtifactPath)
	if err == nil && persistedContent(d, got) {
		return got, nil
	}
	if err != nil && !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, artifact.ErrNotRegular) {
		return nil, err
	}
	full, gerr := s.Get(d.ID)
	if gerr != nil {
		return nil, gerr
	}
	want := artifact.Render(&full)
	if err == nil && bytes.Equal(got, want) {
		return got, nil
	}
	s.logf.Warn("artifact missing, changed or replaced on disk; writing it again from the log", "id", d.ID, "path", d.ArtifactPath)
	if _, _, err := artifact.Write(s.dir, d.ArtifactPath, want); err != nil {
		return nil, fmt.Errorf("restore artifact of %s: %w", d.ID, err)
	}
	return want, nil
}

// artifactPath is where d's artifact is (or will be), absolute.
func (s *Store) artifactPath(d *fsm.Delegation) string {
	rel := d.ArtifactPath
	if rel == "" {
		rel, _ = artifact.RelPath(d.ProjectID, d.RootSessionID, d.ID)
	}
	return filepath.Join(s.dir, rel)
}

// ListOptions filter, order and page List.
type ListOptions struct {
	Status fsm.State // only this status; "" for all
	Unread bool      // only unread delegations
	ByTime bool      // by creation time instead of by id (the plugin's order)
	// Limit is the most delegations returned; 0 for all.
	Limit int
	// After is a cursor: the id of the last delegation of the previous
	// page, in the same order and filter. The page starts after it; an id
	// the listing no longer holds starts where it would have been.
	After string
}

// List returns the records of the delegations of a root session.
func (s *Store) List(root string, o ListOptions) ([]fsm.Delegation, error) {
	return s.list(root, o, false, listWalkOver)
}

// Summaries is List without the texts that grow with the work: records
// without their prompt, progress, result and error (fsm.UnmarshalSummary),
// which Get and Read return. It reads the summaries the summaries view
// holds, in the roots view's order: its cost follows the number of
// delegations it goes through, not the size of their texts.
func (s *Store) Summaries(root string, o ListOptions) ([]fsm.Delegation, error) {
	return s.list(root, o, true, listWalkOver)
}

// EachSummary calls fn with each summary Summaries returns, in its order,
// without holding them all: a listing that renders each as it comes (the
// listing's text) keeps none of them. sized, when not nil, is told first
// how many summaries may come at most, when that is known (to size what
// fn fills). fn must not keep d, which the next call reuses (its strings
// are its own: they may be kept), and must not call the store: by id, it
// runs in the listing's read transaction. An error from fn ends the
// listing and is returned.
func (s *Store) EachSummary(root string, o ListOptions, sized func(n int), fn func(d *fsm.Delegation) error) error {
	if o.ByTime {
		// Every summary is needed to sort.
		ds, err := s.Summaries(root, o)
		if err == nil && sized != nil {
			sized(len(ds))
		}
		for i := 0; err == nil && i < len(ds); i++ {
			err = fn(&ds[i])
		}
		return err
	}
	return s.walk(root, o, true, listWalkOver, sized, fn)
}

// listWalkOver is the size of a root from which a whole listing reads
// the root's summaries in one walk (summaryIndex) rather than looking up
// each: a lookup descends the tree and costs about as much as decoding
// the summary it finds. A page looks each up, however large the root: its
// cost follows the page.
const listWalkOver = 256

// list returns the summaries, or whole records, of root's delegations
// that o selects, in o's order; walkOver is listWalkOver (the tests set it
// to exercise both ways).
func (s *Store) list(root string, o ListOptions, summaries bool, walkOver int) ([]fsm.Delegation, error) {
	var out []fsm.Delegation
	sized := func(n int) { out = make([]fsm.Delegation, 0, n) }
	collect := func(d *fsm.Delegation) error {
		out = append(out, *d)
		return nil
	}
	if !o.ByTime {
		err := s.walk(root, o, summaries, walkOver, sized, collect)
		return out, err
	}
	// By time, every summary is needed to sort: the whole root, filtered.
	if err := s.walk(root, ListOptions{Status: o.Status, Unread: o.Unread}, summaries, walkOver, sized, collect); err != nil {
		return nil, err
	}
	// Creation time, then id: the roots view's id order breaks ties. The
	// positions are sorted, not the records (hundreds of bytes each).
	order := make([]int32, len(out))
	for i := range order {
		order[i] = int32(i)
	}
	slices.SortStableFunc(order, func(a, b int32) int { return out[a].CreatedAt.Compare(out[b].CreatedAt) })
	sorted := make([]fsm.Delegation, len(out))
	for i, j := range order {
		sorted[i] = out[j]
	}
	out = sorted
	if o.After != "" {
		// The cursor's place in that order, found from its record even
		// when the filter no longer lists it.
		var at time.Time
		err := s.log.View(func(tx *eventlog.Tx) error {
			d, err := loadStored(tx, o.After)
			if d != nil {
				at = d.CreatedAt
			}
			return err
		})
		if err != nil {
			return nil, err
		}
		i, _ := slices.BinarySearchFunc(out, o.After, func(d fsm.Delegation, id string) int {
			if c := d.CreatedAt.Compare(at); c != 0 {
				return c
			}
			return strings.Compare(d.ID, id)
		})
		if i < len(out) && out[i].ID == o.After {
			i++
		}
		out = out[i:]
	}
	if o.Limit > 0 && len(out) > o.Limit {
		out = out[:o.Limit]
	}
	return out, nil
}

// walk goes through the roots view of root by id, from past o.After, and
// calls fn with the summary (with its texts unless summaries) of each
// delegation that o's filter selects, until o.Limit of them (o.ByTime is
// the caller's). It looks up each summary, or, for a whole listing of more
// than walkOver, reads the root's summaries in one walk first. sized,
// when not nil, is told first how many delegations the walk may list at
// most: the root's count for a whole listing, which it counts first
// (growing a slice of thousands of records by doubling costs more than
// walking the keys twice). d is reused between calls.
func (s *Store) walk(root string, o ListOptions, summaries bool, walkOver int, sized func(n int), fn func(d *fsm.Delegation) error) error {
	if err := fsm.ValidateSessionID(fsm.FieldRootSessionID, root); err != nil {
		return err
	}
	return s.log.View(func(tx *eventlog.Tx) error {
		b, err := tx.Bucket(bucketRoots)
		if err != nil || b == nil {
			return err
		}
		sums, err := tx.Bucket(bucketSummaries)
		if err != nil || sums == nil {
			return err
		}
		prefix := pairKey(root, "")
		c := b.Cursor()
		k, v := c.Seek(prefix)
		n := 0 // the root's delegations, when counted
		if o.Limit == 0 && o.After == "" {
			for k := k; k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
				n++
			}
			k, v = c.Seek(prefix)
			if sized != nil {
				sized(n)
			}
		} else if sized != nil && o.Limit > 0 {
			sized(min(o.Limit, 1024))
		}
		if o.After != "" {
			k, v = c.Seek(pairKey(root, o.After))
			if k != nil && string(k[len(prefix):]) == o.After {
				k, v = c.Next()
			}
		}
		var index summaryIndex
		if n > walkOver {
			if index, err = readSummaryIndex(sums, root, n); err != nil {
				return err
			}
		}
		var d fsm.Delegation
		listed := 0
		for ; k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
			id := k[len(prefix):]
			if len(v) != 8 {
				return fmt.Errorf("roots view %q: an ordinal of %d bytes, want 8 (the view is derived: `delegations replay --rebuild`, daemon stopped, rebuilds it from the log)", id, len(v))
			}
			ord := binary.BigEndian.Uint64(v)
			var sum []byte
			if index != nil {
				sum = index.find(ord)
			} else {
				sum = sums.Get(ordKey(root, ord))
			}
			if sum == nil {
				return fmt.Errorf("roots view names %q, whose summary the summaries view lacks (the view is derived: `delegations replay --rebuild`, daemon stopped, rebuilds it from the log)", id)
			}
			if summaries {
				d, err = fsm.UnmarshalSummary(sum)
			} else {
				d, err = fsm.UnmarshalDelegation(sum)
			}
			if err != nil {
				return fmt.Errorf("summaries view %q: %w (the view is derived; the log itself is unaffected)", id, err)
			}
			if (o.Status != "" && d.State != o.Status) || (o.Unread && !d.Unread()) {
				continue
			}
			if !summaries {
				if err := addTexts(tx, &d, ord, false, lostShown, noText); err != nil {
					return err
				}
			}
			if err := fn(&d); err != nil {
				return err
			}
			if listed++; o.Limit > 0 && listed == o.Limit {
				break
			}
		}
		return nil
	})
}

// summaryIndex is a root session's entries of the summaries view, in
// their order (by ordinal), as one walk reads them: each value is the
// transaction's memory, valid until it ends.
type summaryIndex []storedSummaryAt

type storedSummaryAt struct {
	ord uint64
	sum []byte
}

// readSummaryIndex walks root's range of the summaries view, which holds
// about n entries when n is not 0.
func readSummaryIndex(sums *bolt.Bucket, root string, n int) (summaryIndex, error) {
	prefix := pairKey(root, "")
	index := make(summaryIndex, 0, n)
	c := sums.Cursor()
	for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
		if len(k) != len(prefix)+8 {
			return nil, fmt.Errorf("summaries view: key %q of root %q is not the root and an ordinal (the view is derived: `delegations replay --rebuild`, daemon stopped, rebuilds it from the log)", k, root)
		}
		index = append(index, storedSummaryAt{binary.BigEndian.Uint64(k[len(prefix):]), v})
	}
	return index, nil
}

// find returns the summary of the delegation whose ordinal is ord; nil
// when the index does not hold it.
func (x summaryIndex) find(ord uint64) []byte {
	i, ok := slices.BinarySearchFunc(x, ord, func(e storedSummaryAt, ord uint64) int { return cmp.Compare(e.ord, ord) })
	if !ok {
		return nil
	}
	return x[i].sum
}

// Carried returns what a compacted context must carry for a root session:
// its active delegations in registration order, and its unread ones, newest
// completion first, at most maxUnread (0: all). It reads the running and
// unread views only, so its cost follows what is carried, not history.
func (s *Store) Carried(root string, maxUnread int) (running, unread []fsm.Delegation, err error) {
	if err := fsm.ValidateSessionID(fsm.FieldRootSessionID, root); err != nil {
		return nil, nil, err
	}
	prefix := pairKey(root, "")
	err = s.log.View(func(tx *eventlog.Tx) error {
		load := func(k []byte, into *[]fsm.Delegation) error {
			d, err := loadShown(tx, idOfKey(k))
			if err != nil {
				return err
			}
			if d == nil {
				return fmt.Errorf("view entry %q has no record (rebuild the views)", idOfKey(k))
			}
			*into = append(*into, *d)
			return nil
		}
		if b, err := tx.Bucket(bucketRunning); err != nil {
			return err
		} else if b != nil {
			c := b.Cursor()
			for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
				if err := load(k, &running); err != nil {
					return err
				}
			}
		}
		b, err := tx.Bucket(bucketUnread)
		if err != nil || b == nil {
			return err
		}
		// Newest first: start after the root's last key and walk back.
		c := b.Cursor()
		k, _ := c.Seek([]byte(root + "\x01")) // just past every "root\x00..." key
		if k == nil {
			k, _ = c.Last()
		} else {
			k, _ = c.Prev()
		}
		for ; k != nil && bytes.HasPrefix(k, prefix) && (maxUnread <= 0 || len(unread) < maxUnread); k, _ = c.Prev() {
			if err := load(k, &unread); err != nil {
				return err
			}
		}
		return nil
	})
	return running, unread, err
}
