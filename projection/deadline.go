package projection

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/delegations/delegations/eventlog"
	"github.com/delegations/delegations/fsm"
)

// TimeoutOverdue times out every active delegation whose deadline has
// passed, keeping its last progress text as partial output, and returns
// how many it timed out and the next deadline still ahead (zero when no
// delegation is active). It reads the deadlines view from its first key,
// so its cost follows the overdue delegations, not history. A delegation
// that ended meanwhile is skipped without a trace; an error on one does
// not stop the others.
func (s *Store) TimeoutOverdue(ctx context.Context) (n int, next time.Time, err error) {
	now := s.clock.Now()
	var overdue []string
	err = s.log.View(func(tx *eventlog.Tx) error {
		b, err := tx.Bucket(bucketDeadlines)
		if err != nil || b == nil {
			return err
		}
		c := b.Cursor()
		for k, _ := c.First(); k != nil; k, _ = c.Next() {
			at, err := deadlineOfKey(k)
			if err != nil {
				return err
			}
			if at.After(now) {
				next = at
				break
			}
			overdue = append(overdue, idOfKey(k))
		}
		return nil
	})
	if err != nil {
		return 0, time.Time{}, err
	}
	var errs []error
	for _, id := range overdue {
		timedOut, err := s.timeoutIfOverdue(ctx, id)
		if err != nil {
			errs = append(errs, err)
		} else if timedOut {
			n++
		}
	}
	return n, next, errors.Join(errs...)
}

// timeoutIfOverdue times id out if it is still active and past its
// deadline when its lock is held. A delegation that ended meanwhile (or a
// stale view entry) appends nothing: a refused timeout here would be noise
// in its timeline, and an append would wake the sweeper again at once.
func (s *Store) timeoutIfOverdue(ctx context.Context, id string) (bool, error) {
	_, ended, err := s.end(ctx, id, func(d *fsm.Delegation, at time.Time) ([]fsm.Event, error) {
		if d == nil || !d.State.Active() || d.TimeoutAt.After(at) || !s.own.owned(d) {
			return nil, nil // or its owner's to enforce (owner.go)
		}
		return fsm.Decide(d, fsm.Event{Kind: fsm.KindTimedOut, ID: id, At: at}, s.cfg)
	})
	return ended, err
}

// deadlineOfKey decodes the time of a deadlines view key (see timeKey).
func deadlineOfKey(k []byte) (time.Time, error) {
	if len(k) < 9 || k[8] != 0 {
		return time.Time{}, fmt.Errorf("deadlines view key %q is malformed (rebuild the views)", k)
	}
	return time.Unix(0, int64(binary.BigEndian.Uint64(k))).UTC(), nil
}

// ActiveFilter narrows Active; empty fields match everything.
type ActiveFilter struct {
	ProjectID       string
	RootSessionID   string
	ParentSessionID string
}

// Active returns the active (registered or running) delegations, earliest
// deadline first. A bridge that restarted lists them to report what its
// host still knows; whatever it never reports ends at its deadline.
func (s *Store) Active(f ActiveFilter) ([]fsm.Delegation, error) {
	if f.RootSessionID != "" {
		if err := fsm.ValidateSessionID(fsm.FieldRootSessionID, f.RootSessionID); err != nil {
			return nil, err
		}
	}
	if f.ParentSessionID != "" {
		if err := fsm.ValidateSessionID(fsm.FieldParentSessionID, f.ParentSessionID); err != nil {
			return nil, err
		}
	}
	if f.ProjectID != "" {
		if err := fsm.ValidateSessionID(fsm.FieldProjectID, f.ProjectID); err != nil {
			return nil, err
		}
	}
	var out []fsm.Delegation
	err := s.log.View(func(tx *eventlog.Tx) error {
		b, err := tx.Bucket(bucketDeadlines)
		if err != nil || b == nil {
			return err
		}
		return b.ForEach(func(k, _ []byte) error {
			d, err := loadShown(tx, idOfKey(k))
			switch {
			case err != nil:
				return err
			case d == nil:
				return fmt.Errorf("deadlines view names %q, which has no record (rebuild the views)", idOfKey(k))
			case f.ProjectID != "" && d.ProjectID != f.ProjectID,
				f.RootSessionID != "" && d.RootSessionID != f.RootSessionID,
				f.ParentSessionID != "" && d.ParentSessionID != f.ParentSessionID:
				return nil
			}
			out = append(out, *d)
			return nil
		})
	})
	return out, err
}
