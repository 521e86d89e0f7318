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
// The rules are here and in fsm.DecideTakeOver: the sweeper, the artifact
// writer and the outbox ask owned or serves. Without Peers (a log of one
// daemon) the store owns everything and nothing here costs anything.

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

// owned reports whether d is this daemon's to act on: its deadline, its
// artifact, its notifications.
func (o owner) owned(d *fsm.Delegation) bool {
	return o.peers == nil || d.Owner == o.peers.Self()
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
// seen. Of a delegation already persisted whose notification it now
// serves, it writes the artifact in its own data directory, which the
// notification names (artifactHere). Without Peers it does nothing. An
// error on one delegation does not stop the others.
func (s *Store) TakeOver(ctx context.Context) (int, error) {
	p := s.own.peers
	if p == nil {
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
		took := false
		_, err := s.run(ctx, command{id: id, load: loadStored, decide: func(d *fsm.Delegation, at time.Time) ([]fsm.Event, error) {
			events := fsm.DecideTakeOver(d, registrants[id], p.Self(), alive, at)
			took = len(events) > 0
			return events, nil
		}})
		switch {
		case err != nil:
			errs = append(errs, err)
		case took:
			n++
			if err := s.artifactHere(id); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return n, errors.Join(errs...)
}

// artifactHere writes, in this daemon's data directory, the artifact of a
// delegation it took over whose notification it now serves: the
// notification names the file on the serving daemon's machine, and the
// daemon that persisted it wrote it on its own. The bytes are a function
// of the record (Store.artifact), so every machine's file is the same.
func (s *Store) artifactHere(id string) error {
	d, err := s.Get(id)
	if err != nil || d.PersistedAt.IsZero() || !d.NotifiedAt.IsZero() {
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
