package projection

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/delegations/delegations/eventlog"
	"github.com/delegations/delegations/fsm"
)

// Ownership, when several daemons share one log (Options.Peers). Each
// delegation is owned by one daemon, named in the log: the one that
// registered it (the registered event's Owner), until another takes it over
// (an owned event). Its owner alone does the work that happens on its
// machine or for its bridges: it enforces the deadline, writes the artifact
// (artifacts are files on the owner's machine, and the notification names
// that file) and serves the notifications. Any daemon reads, lists,
// completes, acknowledges and compacts any delegation. A daemon whose lease
// is gone (Peers.Alive false) is gone for good: TakeOver gives its
// delegations that still need an owner to this daemon, one owned event each,
// appended with the delegation's expected version, so that of daemons
// racing to take one over one records it. When the daemon that registered
// a delegation is back under its id (a restart after its lease expired), it
// takes the delegation back the same way: the bridges that host the
// delegation's parent session talk to it, and only its notifications
// reach them.
//
// A daemon can also outlive its lease (etcd out of its reach, the process
// paused) while the others take its delegations over. So a daemon acts as
// an owner only while it is sure it holds its lease (Peers.Holds): once it
// is not, it enforces no deadline, writes no artifact, serves no
// notification and takes nothing over, until it holds a lease again, back
// under its id, when the rule above gives it back what it registered.
//
// The rules are here and in fsm.DecideTakeOver: the sweeper, the artifact
// writer and the outbox ask owned or serves, TakeOver asks holds. Without
// Peers (a log of one daemon) the store owns everything and nothing here
// costs anything.

// Peers tells a store which daemon it is and which daemons sharing its log
// are alive (eventlog/etcdlog's Presence, from leases in etcd).
type Peers interface {
	// Self is this daemon's id: stable across restarts, unique among the
	// daemons on the log.
	Self() string
	// Alive reports whether daemon id holds its lease now, as this daemon
	// last heard (a watch: it may lag behind the log).
	Alive(id string) bool
	// Present asks, in a read as new as any record the log holds now,
	// whether daemon id holds its lease. TakeOver asks it before taking
	// from a daemon Alive calls gone: one that joined and registered a
	// delegation a moment ago may not have reached Alive yet.
	Present(ctx context.Context, id string) (bool, error)
	// Holds reports whether this daemon is sure it holds its lease now.
	// It must turn false before the lease can expire in etcd, and so
	// before another daemon can take this one's delegations over; it
	// turns true again once the daemon holds a new lease, bound to its id.
	Holds() bool
	// Changed returns a channel closed at the next change of the live
	// daemons, and when Holds turns true again: Store.Wait returns then,
	// so that the work this daemon left while it was not sure of its
	// lease is done.
	Changed() <-chan struct{}
}

// owner is the store's side of ownership; its zero value owns everything.
type owner struct{ peers Peers }

// self is this daemon's id, "" without peers.
func (o owner) self() string {
	if o.peers == nil {
		return ""
	}
	return o.peers.Self()
}

// holds reports whether this daemon may act as an owner now: it is sure
// it holds its lease. Every owner's action asks it, through owned or
// TakeOver.
func (o owner) holds() bool {
	return o.peers == nil || o.peers.Holds()
}

// Self returns this daemon's id on a log shared by several daemons
// (Options.Peers), "" on a log of its own.
func (s *Store) Self() string { return s.own.self() }

// owned reports whether d is this daemon's to act on: its deadline, its
// artifact, its notifications.
func (o owner) owned(d *fsm.Delegation) bool {
	return o.peers == nil || d.Owner == o.peers.Self() && o.holds()
}

// changed returns the channel Peers.Changed returns, nil (never ready)
// without peers.
func (o owner) changed() <-chan struct{} {
	if o.peers == nil {
		return nil
	}
	return o.peers.Changed()
}

// serves reports whether outbox entry n is this daemon's to deliver: a
// terminal notification is its delegation owner's; an all-complete one is
// the owner's of the delegation whose notification completed the cycle
// (the record n.Seq), as the daemon that served the cycle serves its end.
func (s *Store) serves(tx *eventlog.Tx, n *Notification) (bool, error) {
	if s.own.peers == nil {
		return true, nil
	}
	id, err := servedFor(tx, n)
	if err != nil {
		return false, err
	}
	d, err := loadStored(tx, id)
	if err != nil || d == nil {
		return false, err
	}
	return s.own.owned(d), nil
}

// servedFor returns the delegation whose owner serves outbox entry n.
func servedFor(tx *eventlog.Tx, n *Notification) (string, error) {
	if n.Kind != KindAllComplete {
		return n.Delegation, nil
	}
	r, err := tx.Record(n.Seq)
	if err != nil {
		return "", fmt.Errorf("outbox entry %s: %w", n.ID, err)
	}
	return r.Stream, nil
}

// TakeOver takes over, for this daemon, every delegation that still needs
// its owner (active, artifact pending, or a notification in the outbox)
// and whose owner is gone or which this daemon registered, and returns how
// many it took. It first waits until the replica holds what the shared log
// holds, so that a delegation registered just before its owner went is
// seen. An artifact already persisted is written here before its
// delegation is taken (localArtifact). Without Peers, and while this
// daemon is not sure it holds its lease (Peers.Holds), it does nothing.
// An error on one delegation does not stop the others.
func (s *Store) TakeOver(ctx context.Context) (int, error) {
	p := s.own.peers
	if p == nil || !s.own.holds() {
		return 0, nil
	}
	if err := s.log.Sync(ctx); err != nil {
		return 0, err
	}
	var ids []string
	registrants := map[string]string{} // of the delegations to take
	owners := map[string]bool{}        // their owners, whether present
	err := s.log.View(func(tx *eventlog.Tx) error {
		seen := map[string]bool{}
		gone := func(id string) error {
			if seen[id] {
				return nil
			}
			seen[id] = true
			d, err := loadStored(tx, id)
			if err != nil || d == nil || d.Owner == p.Self() {
				return err
			}
			registrant := registrantOf(tx, id)
			if fsm.DecideTakeOver(d, registrant, p.Self(), p.Alive, time.Time{}) != nil {
				ids = append(ids, id)
				registrants[id], owners[d.Owner] = registrant, false
			}
			return nil
		}
		for _, name := range []string{bucketDeadlines, bucketPending, bucketOutbox} {
			b, err := tx.Bucket(name)
			if err != nil {
				return err
			}
			if b == nil {
				continue
			}
			if err := b.ForEach(func(k, v []byte) error {
				switch name {
				case bucketDeadlines:
					return gone(idOfKey(k))
				case bucketPending:
					return gone(string(k))
				}
				var n Notification
				if err := json.Unmarshal(v, &n); err != nil {
					return fmt.Errorf("outbox entry %s: %w", k, err)
				}
				id, err := servedFor(tx, &n)
				if err != nil {
					return err
				}
				return gone(id)
			}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	var errs []error
	for o := range owners {
		present, err := p.Present(ctx, o)
		if err != nil {
			present = true // not known to be gone: take nothing of its
			errs = append(errs, err)
		}
		owners[o] = present
	}
	alive := func(id string) bool { return owners[id] || p.Alive(id) }
	var n int
	for _, id := range ids {
		if err := s.localArtifact(id); err != nil {
			errs = append(errs, err)
			continue
		}
		took := false
		_, err := s.run(ctx, command{id: id, load: loadStored, decide: func(d *fsm.Delegation, at time.Time) ([]fsm.Event, error) {
			if !s.own.holds() { // the lease went while TakeOver asked etcd
				return nil, nil
			}
			events := fsm.DecideTakeOver(d, registrants[id], p.Self(), alive, at)
			took = len(events) > 0
			return events, nil
		}})
		switch {
		case err != nil:
			errs = append(errs, err)
		case took:
			n++
		}
	}
	return n, errors.Join(errs...)
}

// localArtifact writes, before this daemon takes delegation id over, the
// artifact another daemon persisted, from the record, in this data
// directory, unless it is there with the recorded bytes: the notification
// the new owner serves names the file here (artifacts are files on their
// owner's machine). One whose artifact is pending is this daemon's
// artifact writer's once it owns it. Should another daemon take it over
// first, the copy stays, as a read here would have left it.
func (s *Store) localArtifact(id string) error {
	d, err := s.stored(id)
	if err != nil || d.PersistedAt.IsZero() {
		return err
	}
	_, err = s.artifact(&d)
	return err
}

// registrantOf returns the daemon that registered delegation id: the owner
// its registered event names (the stream's first record, never changed),
// or "" when that record is not a readable registration (an import, a
// damaged record).
func registrantOf(tx *eventlog.Tx, id string) string {
	for r, err := range tx.StreamRecords(id) {
		if err != nil {
			return ""
		}
		e, err := fsm.UnmarshalPayload(fsm.Kind(r.Kind), r.Stream, r.Time, r.Payload)
		if err != nil || e.Kind != fsm.KindRegistered {
			return ""
		}
		return e.Owner
	}
	return ""
}
