package projection

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/delegations/delegations/eventlog"
	"github.com/delegations/delegations/fsm"
	"github.com/delegations/delegations/projection/artifact"
)

// Notifications returns the outbox entries due now, oldest first; with
// parent set, only that parent session's. An entry is returned again on
// every call until it is acknowledged.
func (s *Store) Notifications(parent string) ([]Notification, error) {
	due, _, err := s.outbox(parent)
	return due, err
}

// WaitNotifications is Notifications that, when nothing is due, waits up to
// wait for something to become due: a pending entry's time (an all-complete
// after its quiet period) or a new event.
func (s *Store) WaitNotifications(ctx context.Context, parent string, wait time.Duration) ([]Notification, error) {
	deadline := s.clock.Now().Add(wait)
	for {
		mark := s.Mark()
		due, next, err := s.outbox(parent)
		now := s.clock.Now()
		if err != nil || len(due) > 0 || !now.Before(deadline) {
			return due, err
		}
		until := deadline
		if !next.IsZero() && next.Before(until) {
			until = next
		}
		if err := s.Wait(ctx, mark, until); err != nil {
			return nil, err
		}
	}
}

// Due returns the entries due now, oldest first (like Notifications), and
// when the next entry not yet due becomes due (zero when none is waiting).
// A subscriber that pushes notifications waits for that time or for a new
// event, whichever comes first.
func (s *Store) Due(parent string) ([]Notification, time.Time, error) {
	return s.outbox(parent)
}

// outbox returns the entries due now and when the next one not yet due is.
func (s *Store) outbox(parent string) (due []Notification, next time.Time, err error) {
	if parent != "" {
		if err := fsm.ValidateSessionID(fsm.FieldParentSessionID, parent); err != nil {
			return nil, next, err
		}
	}
	now := s.clock.Now()
	var out []Notification
	err = s.log.View(func(tx *eventlog.Tx) error {
		b, err := tx.Bucket(bucketOutbox)
		if err != nil || b == nil {
			return err
		}
		visit := func(k, v []byte) error {
			var n Notification
			if err := json.Unmarshal(v, &n); err != nil {
				return fmt.Errorf("outbox entry %s: %w", k, err)
			}
			if parent != "" && n.Parent != parent {
				return nil
			}
			if mine, err := s.serves(tx, &n); err != nil || !mine {
				return err // or another daemon's to deliver (owner.go)
			}
			switch {
			case !n.DueAt.After(now):
				if err := s.render(tx, &n); err != nil {
					return err
				}
				out = append(out, n)
			case next.IsZero() || n.DueAt.Before(next):
				next = n.DueAt
			}
			return nil
		}
		if parent == "" {
			return b.ForEach(visit)
		}
		// One parent's entries, through their index: the cost follows
		// what that parent is owed, not the whole outbox.
		idx, err := tx.Bucket(bucketDue)
		if err != nil || idx == nil {
			return err
		}
		prefix := pairKey(parent, "")
		c := idx.Cursor()
		for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
			nid := k[len(prefix):]
			v := b.Get(nid)
			if v == nil {
				return fmt.Errorf("the due view names %q, which is not in the outbox (rebuild the views)", nid)
			}
			if err := visit(nid, v); err != nil {
				return err
			}
		}
		return nil
	})
	slices.SortFunc(out, func(a, b Notification) int {
		if c := a.DueAt.Compare(b.DueAt); c != 0 {
			return c
		}
		return cmp.Compare(a.Seq, b.Seq)
	})
	return out, next, err
}

// render fills in a due notification's text. A terminal delegation's
// record no longer changes what the text shows, so rendering at read time
// gives the text of the moment it became due, with this store's directory.
func (s *Store) render(tx *eventlog.Tx, n *Notification) error {
	if n.Kind == KindAllComplete {
		n.Text = artifact.AllCompleteNotification(n.Parent, n.Cycle)
		return nil
	}
	d, ord, err := loadOrdinal(tx, n.Delegation)
	if err != nil {
		return err
	}
	if d == nil {
		return fmt.Errorf("outbox entry %s has no record (rebuild the views)", n.ID)
	}
	// Of the texts, each read from its event, the notification shows the
	// error alone: the others are not read.
	if err := addTextsOf(tx, d, ord, []*string{&d.Error}, false, lostShown); err != nil {
		return err
	}
	n.Text = artifact.TerminalNotification(d, filepath.Join(s.dir, d.ArtifactPath), n.Remaining)
	return nil
}

// AckResult says what an acknowledgement did.
type AckResult struct {
	ID      string `json:"id"`
	Already bool   `json:"already"` // acknowledged before: nothing changed
}

// Ack records that a notification was delivered. Acknowledging twice is
// fine: the second changes nothing and says so.
func (s *Store) Ack(ctx context.Context, notificationID string) (AckResult, error) {
	return s.acknowledge(ctx, notificationID, "")
}

// AckFailed records that delivering a notification failed. The entry stays
// in the outbox and is delivered again.
func (s *Store) AckFailed(ctx context.Context, notificationID, reason string) (AckResult, error) {
	if reason == "" {
		reason = "delivery failed"
	}
	if err := fsm.ValidateText(fsm.FieldError, reason, fsm.MaxErrorLen); err != nil {
		return AckResult{}, err
	}
	return s.acknowledge(ctx, notificationID, reason)
}

func (s *Store) acknowledge(ctx context.Context, nid, failure string) (AckResult, error) {
	kind, rest, ok := strings.Cut(strings.TrimSpace(nid), ":")
	res := AckResult{ID: nid}
	switch {
	case ok && kind == KindTerminal:
		id := rest
		if err := fsm.ValidateID(id); err != nil {
			return res, err
		}
		// The texts play no part: the record is read without them.
		_, err := s.run(ctx, command{id: id, load: loadStored, decide: func(d *fsm.Delegation, at time.Time) ([]fsm.Event, error) {
			if d == nil {
				return nil, &notFoundError{id: id, dir: s.dir}
			}
			events, already, err := fsm.DecideAck(d, nid, failure, at)
			res.Already = already
			return events, err
		}})
		return res, err
	case ok && kind == KindAllComplete:
		i := strings.LastIndexByte(rest, ':')
		if i < 0 {
			break
		}
		parent, n := rest[:i], rest[i+1:]
		cycle, err := strconv.ParseUint(n, 10, 64)
		if err != nil || cycle == 0 {
			break
		}
		if err := fsm.ValidateSessionID(fsm.FieldParentSessionID, parent); err != nil {
			return res, err
		}
		return s.ackAllComplete(ctx, parent, cycle, failure)
	}
	return res, fmt.Errorf("%w: notification id %q: want terminal:<delegation id> or all-complete:<parent session>:<cycle>, as `delegations notifications` prints them", fsm.ErrInvalid, nid)
}

// ackAllComplete records the delivery (or failed delivery) of a cycle's
// all-complete notification in the parent session's stream. The parent's
// aggregate (fsm.Parent) is read from its stream only when the decision
// needs it: to tell an acknowledgement repeated from one never due.
// cycleMu serialises this store's acknowledgements; another daemon's on
// the shared log show as a conflict, and the decision is made again
// against the stream as it now is (an acknowledgement first there makes
// this one Already).
func (s *Store) ackAllComplete(ctx context.Context, parent string, cycle uint64, failure string) (AckResult, error) {
	s.cycleMu.Lock()
	defer s.cycleMu.Unlock()
	for range maxConflicts {
		res, err := s.ackAllCompleteOnce(ctx, parent, cycle, failure)
		if !errors.Is(err, eventlog.ErrConflict) {
			return res, err
		}
	}
	return AckResult{ID: AllCompleteNotificationID(parent, cycle)}, fmt.Errorf("%s: %w: the parent session's stream kept changing over %d attempts; retry", parent, eventlog.ErrConflict, maxConflicts)
}

// ackAllCompleteOnce is one decision of ackAllComplete, under cycleMu.
func (s *Store) ackAllCompleteOnce(ctx context.Context, parent string, cycle uint64, failure string) (AckResult, error) {
	nid := AllCompleteNotificationID(parent, cycle)
	res := AckResult{ID: nid}
	stream := fsm.ParentStream(parent)
	var due bool
	var p fsm.Parent
	err := s.log.View(func(tx *eventlog.Tx) error {
		b, err := tx.Bucket(bucketOutbox)
		if err != nil {
			return err
		}
		due = b != nil && b.Get([]byte(nid)) != nil
		p.Version = tx.StreamVersion(stream)
		return nil
	})
	if err == nil && !due {
		p, err = s.loadParent(stream)
	}
	if err != nil {
		return res, err
	}
	events, already, err := fsm.DecideAllCompleteAck(&p, parent, nid, cycle, due, failure, s.clock.Now().UTC().Truncate(time.Millisecond))
	res.Already = already
	if err != nil || len(events) == 0 {
		return res, err
	}
	_, err = s.record(ctx, stream, "", p.Version, events)
	return res, err
}

// loadParent folds a parent session's stream into its aggregate.
func (s *Store) loadParent(stream string) (fsm.Parent, error) {
	var p fsm.Parent
	recs, err := s.log.Stream(stream)
	if err != nil {
		return p, err
	}
	for _, r := range recs {
		e, err := fsm.UnmarshalPayload(fsm.Kind(r.Kind), r.Stream, r.Time, r.Payload)
		if err != nil {
			return p, fmt.Errorf("record %d: %w", r.Seq, err)
		}
		p = fsm.EvolveParent(p, e)
	}
	return p, nil
}
