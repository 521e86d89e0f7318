package projection

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/delegations/delegations/eventlog"
	"github.com/delegations/delegations/fsm"
	"github.com/delegations/delegations/projection/artifact"
)

// Persist writes the artifact of a terminal delegation and records a
// persisted event with its path, size and hash; the terminal notification
// enters the outbox with that event, never before. It does nothing for a
// delegation already persisted, nor for one another daemon owns. It holds
// the delegation's lock: a terminal command under way, which writes the
// artifact itself (end), is waited for rather than written beside. The
// artifact's bytes depend only on the terminal record, which no later
// event changes, so writing it again (a retry after a crash) gives the
// same file.
func (s *Store) Persist(ctx context.Context, id string) (fsm.Delegation, error) {
	defer s.lock(id)()
	return s.persistLocked(ctx, id)
}

// persistLocked is Persist, the lock held.
func (s *Store) persistLocked(ctx context.Context, id string) (fsm.Delegation, error) {
	d, err := s.Get(id)
	if err != nil || !d.State.Terminal() || !d.PersistedAt.IsZero() || !s.own.owned(&d) {
		return d, err // another daemon's artifact is its owner's to write (owner.go)
	}
	a, err := s.writeArtifact(&d)
	if err != nil {
		return d, err
	}
	return s.recordPersisted(ctx, &d, a, "persisted:"+id)
}

// recordPersisted records that artifact a of terminal delegation d, its
// record, is durable, the lock held; a non-empty key makes the append
// idempotent. It is decided on the record without its texts, which no
// event after the terminal one changes: the record returned takes them
// from d.
func (s *Store) recordPersisted(ctx context.Context, d *fsm.Delegation, a fsm.Artifact, key string) (fsm.Delegation, error) {
	p, err := s.runLocked(ctx, command{id: d.ID, key: key, load: loadStored, decide: func(cur *fsm.Delegation, at time.Time) ([]fsm.Event, error) {
		if cur == nil {
			return nil, &notFoundError{id: d.ID, dir: s.dir}
		}
		if !s.own.owned(cur) {
			return nil, nil // taken over meanwhile: the new owner writes it
		}
		return fsm.DecidePersisted(cur, a, at), nil
	}})
	if err != nil {
		return *d, err
	}
	for i, t := range p.Texts() {
		*t = *d.Texts()[i]
	}
	return p, nil
}

// PersistPending persists every terminal delegation whose artifact is not
// recorded yet: the work a crash interrupted, or a write that failed. It
// returns how many it persisted and the first error; the others are still
// attempted.
func (s *Store) PersistPending(ctx context.Context) (int, error) {
	var ids []string
	err := s.log.View(func(tx *eventlog.Tx) error {
		b, err := tx.Bucket(bucketPending)
		if err != nil || b == nil {
			return err
		}
		return b.ForEach(func(k, _ []byte) error {
			ids = append(ids, string(k))
			return nil
		})
	})
	if err != nil {
		return 0, err
	}
	var n int
	var errs []error
	for _, id := range ids {
		d, err := s.Persist(ctx, id)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if !d.PersistedAt.IsZero() {
			n++
		}
	}
	return n, errors.Join(errs...)
}

// recover finishes what a crash interrupted: pending artifacts are
// written (Open then sweeps the temporary files a crash left, in the
// background). With rebuild, every temporary file is swept first and
// every artifact written again from its record (the views were rebuilt by
// the log).
func (s *Store) recover(rebuild bool) error {
	ctx := context.Background()
	if rebuild {
		if n, err := artifact.SweepTempFiles(s.dir); err != nil {
			return fmt.Errorf("sweep temporary files in %s: %w", s.dir, err)
		} else if n > 0 {
			s.logf.Info("removed temporary files left by a crash", "count", n)
		}
		if err := s.rewriteArtifacts(); err != nil {
			return err
		}
	}
	if n, err := s.PersistPending(ctx); err != nil {
		s.logf.Warn("artifacts not written; retried on the next open", "err", err)
	} else if n > 0 {
		s.logf.Info("persisted artifacts a crash left unwritten", "count", n)
	}
	return nil
}

// rewriteArtifacts restores every persisted delegation's artifact that is
// missing or differs from what its persisted event recorded (size and
// xxhash). The bytes are a function of the record, so a missing or damaged
// file is restored byte for byte; a file that matches is left alone, which
// keeps imported legacy files (not the store's rendering) as they are. When
// the record does not render to the recorded bytes (an imported file that
// is gone, or a file an older renderer wrote), nothing is written: a rebuild
// never writes bytes the log did not record. Replay reports those.
func (s *Store) rewriteArtifacts() error {
	// The records without their texts: a file that matches needs no more,
	// and memory does not follow the texts of the whole history.
	var ds []fsm.Delegation
	err := s.log.View(func(tx *eventlog.Tx) error {
		b, err := tx.Bucket(bucketRecords)
		if err != nil || b == nil {
			return err
		}
		return b.ForEach(func(k, _ []byte) error {
			d, err := loadStored(tx, string(k))
			if err == nil && d != nil && !d.PersistedAt.IsZero() {
				ds = append(ds, *d)
			}
			return err
		})
	})
	if err != nil {
		return err
	}
	for i := range ds {
		if got, err := artifact.Read(s.dir, ds[i].ArtifactPath); err == nil && persistedContent(&ds[i], got) {
			continue
		}
		d, err := s.Get(ds[i].ID)
		if errors.Is(err, eventlog.ErrCorrupt) {
			s.logf.Warn("artifact missing or changed, and a text it shows is damaged in the log; left as it is", "id", ds[i].ID, "err", err)
			continue
		} else if err != nil {
			return err
		}
		want := artifact.Render(&d)
		if !persistedContent(&d, want) {
			s.logf.Warn("artifact missing or changed, and the log cannot regenerate it byte for byte; left as it is",
				"id", d.ID, "path", d.ArtifactPath)
			continue
		}
		if _, _, err := artifact.Write(s.dir, d.ArtifactPath, want); err != nil {
			return fmt.Errorf("rebuild artifact of %s: %w", d.ID, err)
		}
	}
	return nil
}
