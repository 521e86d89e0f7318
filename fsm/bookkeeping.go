package fsm

import (
	"fmt"
	"strings"
	"time"
)

// The bookkeeping decisions: what to append once a delegation's lifecycle
// has ended and the store has done its I/O (written the artifact, learned of
// a delivery, served a read). Like Decide they are pure; unlike Decide they
// never refuse with a rejected event, because a bridge repeating an
// acknowledgement or a read is normal, not a late command.

// Artifact is a written artifact file as a persisted event records it.
type Artifact struct {
	Path string // relative to the data directory, slash-separated
	Size int64
	Hash uint64 // xxhash64 of the file's bytes
}

// DecidePersisted returns the persisted event recording a for d, or no
// event when d is not terminal or is already persisted (a retry after a
// crash, or a second writer that lost the race).
func DecidePersisted(d *Delegation, a Artifact, at time.Time) []Event {
	if d == nil || !d.State.Terminal() || !d.PersistedAt.IsZero() {
		return nil
	}
	return []Event{{Kind: KindPersisted, ID: d.ID, At: at, ArtifactPath: a.Path, ArtifactSize: a.Size, ArtifactHash: a.Hash}}
}

// DecideAck returns the event recording the delivery of d's terminal
// notification nid, or its failed delivery when failure is not empty.
// already reports a notification acknowledged before: nothing to append,
// and not an error, since a bridge retries acknowledgements. A
// notification whose artifact is not written yet was never due: an error
// wrapping ErrInvalid.
func DecideAck(d *Delegation, nid, failure string, at time.Time) (events []Event, already bool, err error) {
	switch {
	case d.PersistedAt.IsZero():
		return nil, false, fmt.Errorf("%w: notification %s is not due: the delegation is %s and its artifact is not written yet", ErrInvalid, nid, d.State)
	case !d.NotifiedAt.IsZero():
		return nil, true, nil
	case failure != "":
		return []Event{{Kind: KindNotificationFailed, ID: d.ID, At: at, NotificationID: nid, Error: failure}}, false, nil
	}
	return []Event{{Kind: KindNotified, ID: d.ID, At: at, NotificationID: nid}}, false, nil
}

// DecideTakeOver returns the owned event by which daemon self takes d
// over, or no event. Self takes d when d's owner is gone (alive says which
// daemons hold their lease; an empty owner, from a log of one daemon, is
// nobody's), and takes it back when self is its registrant (the owner of
// its registered event), back after another daemon took it over: the
// bridges that host d's parent session talk to self, so only self's
// notifications reach them. Appended with d's version as the expected one,
// it is recorded once however many daemons race to take d over: the others
// decide again against the record it made.
func DecideTakeOver(d *Delegation, registrant, self string, alive func(daemon string) bool, at time.Time) []Event {
	if d == nil || self == "" || d.Owner == self || (d.Owner != "" && alive(d.Owner) && registrant != self) {
		return nil
	}
	return []Event{{Kind: KindOwned, ID: d.ID, At: at, Owner: self}}
}

// DecideRead returns the read event of terminal delegation d. A clock that
// went back (a restart, an NTP step) must not make a read count as before
// the completion and leave the result unread, so the read is never earlier
// than the completion.
func DecideRead(d *Delegation, at time.Time) []Event {
	if at.Before(d.CompletedAt) {
		at = d.CompletedAt
	}
	return []Event{{Kind: KindRead, ID: d.ID, At: at}}
}

// parentPrefix starts the stream of a parent session's bookkeeping. A
// slash can be neither in a delegation id nor in a session id, so the two
// kinds of stream never meet.
const parentPrefix = "parent/"

// ParentStream is the stream of parent session parent's all-complete
// bookkeeping.
func ParentStream(parent string) string { return parentPrefix + parent }

// ParentOfStream returns the parent session whose stream this is, and
// false for a delegation's stream.
func ParentOfStream(stream string) (string, bool) { return strings.CutPrefix(stream, parentPrefix) }

// Cycle is a parent session's current all-complete cycle (the plugin's
// "all delegations complete" notification): a cycle starts when a
// delegation is registered while the parent has none active, and its
// all-complete notification is due once every member has ended and had its
// terminal notification acknowledged. The JSON field names are stored in
// the cycles view.
type Cycle struct {
	Cycle    uint64 `json:"cycle"`
	Active   int    `json:"active"`   // active delegations of the parent
	Members  int    `json:"members"`  // delegations registered in this cycle
	Notified int    `json:"notified"` // of those, acknowledged terminal notifications
}

// Join counts a registration. When it starts a new cycle it returns the
// number of the cycle that ended (0 for the first): that cycle's
// all-complete, if it was still waiting, is never sent, as with the plugin.
func (c *Cycle) Join() (ended uint64, started bool) {
	if c.Active == 0 {
		ended, started = c.Cycle, true
		*c = Cycle{Cycle: c.Cycle + 1}
	}
	c.Active++
	c.Members++
	return ended, started
}

// Leave counts a member that reached a terminal state.
func (c *Cycle) Leave() { c.Active-- }

// Notify counts the acknowledged terminal notification of a delegation
// that joined cycle member (0: it joined none, as an imported one).
// counted is false for a delegation of an older cycle, which counts for
// nothing (that cycle is over); allComplete reports that the current
// cycle's all-complete is now due.
func (c *Cycle) Notify(member uint64) (counted, allComplete bool) {
	if member == 0 || member != c.Cycle {
		return false, false
	}
	c.Notified++
	return true, c.Active <= 0 && c.Notified >= c.Members
}

// Parent is the aggregate of a parent session's stream: the cycles whose
// all-complete notification was acknowledged. Version counts its events,
// as the log's stream version does.
type Parent struct {
	Version uint64
	Acked   []uint64 // cycles, in the order acknowledged
}

// EvolveParent applies one event of a parent session's stream.
func EvolveParent(p Parent, e Event) Parent {
	p.Version++
	if e.Kind == KindAllCompleteNotified {
		p.Acked = append(p.Acked, e.Cycle)
	}
	return p
}

func (p *Parent) acked(cycle uint64) bool {
	for _, c := range p.Acked {
		if c == cycle {
			return true
		}
	}
	return false
}

// DecideAllCompleteAck returns the event recording the delivery of parent's
// all-complete notification nid for cycle, or its failed delivery when
// failure is not empty. due says whether the notification is in the outbox
// now. One that is not due but was acknowledged before is already; one
// that never was due (or a newer cycle suppressed) is an error wrapping
// ErrNotFound.
func DecideAllCompleteAck(p *Parent, parent, nid string, cycle uint64, due bool, failure string, at time.Time) (events []Event, already bool, err error) {
	if !due {
		if p.acked(cycle) {
			return nil, true, nil
		}
		return nil, false, &notDueError{fmt.Sprintf("notification %s is not in the outbox: it was never due, or a newer cycle of %s suppressed it", nid, parent)}
	}
	ev := Event{Kind: KindAllCompleteNotified, ID: ParentStream(parent), At: at, NotificationID: nid, Cycle: cycle}
	if failure != "" {
		ev.Kind, ev.Error = KindNotificationFailed, failure
	}
	return []Event{ev}, false, nil
}

// notDueError keeps the store's wording (the message alone) while wrapping
// ErrNotFound.
type notDueError struct{ msg string }

func (e *notDueError) Error() string { return e.msg }
func (e *notDueError) Unwrap() error { return ErrNotFound }
