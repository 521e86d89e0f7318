package fsm

import (
	"errors"
	"testing"
	"time"
)

var bkAt = time.Date(2026, 12, 2, 9, 0, 0, 0, time.UTC)

func TestDecidePersisted(t *testing.T) {
	a := Artifact{Path: "p/r/brave-red-fox.md", Size: 10, Hash: 42}
	running := &Delegation{ID: "brave-red-fox", State: Running}
	done := &Delegation{ID: "brave-red-fox", State: Complete}
	persisted := &Delegation{ID: "brave-red-fox", State: Complete, PersistedAt: bkAt}
	if ev := DecidePersisted(nil, a, bkAt); ev != nil {
		t.Errorf("unknown delegation: %v", ev)
	}
	if ev := DecidePersisted(running, a, bkAt); ev != nil {
		t.Errorf("running delegation: %v", ev)
	}
	if ev := DecidePersisted(persisted, a, bkAt); ev != nil {
		t.Errorf("persisted twice: %v", ev)
	}
	ev := DecidePersisted(done, a, bkAt)
	if len(ev) != 1 || ev[0].Kind != KindPersisted || ev[0].ArtifactPath != a.Path || ev[0].ArtifactSize != 10 || ev[0].ArtifactHash != 42 || !ev[0].At.Equal(bkAt) {
		t.Errorf("terminal delegation: %+v", ev)
	}
	if got := Evolve(*done, ev[0]); got.PersistedAt.IsZero() || got.ArtifactPath != a.Path {
		t.Errorf("the event does not persist the record: %+v", got)
	}
}

func TestDecideAck(t *testing.T) {
	const nid = "terminal:brave-red-fox"
	pending := &Delegation{ID: "brave-red-fox", State: Complete}
	due := &Delegation{ID: "brave-red-fox", State: Complete, PersistedAt: bkAt}
	acked := &Delegation{ID: "brave-red-fox", State: Complete, PersistedAt: bkAt, NotifiedAt: bkAt}
	if _, _, err := DecideAck(pending, nid, "", bkAt); !errors.Is(err, ErrInvalid) {
		t.Errorf("ack before the artifact: %v, want ErrInvalid", err)
	}
	if ev, already, err := DecideAck(acked, nid, "", bkAt); ev != nil || !already || err != nil {
		t.Errorf("second ack: %v %v %v, want already", ev, already, err)
	}
	if ev, already, err := DecideAck(acked, nid, "boom", bkAt); ev != nil || !already || err != nil {
		t.Errorf("failure after a delivery: %v %v %v, want already", ev, already, err)
	}
	ev, already, err := DecideAck(due, nid, "", bkAt)
	if err != nil || already || len(ev) != 1 || ev[0].Kind != KindNotified || ev[0].NotificationID != nid {
		t.Errorf("ack: %+v %v %v", ev, already, err)
	}
	ev, _, _ = DecideAck(due, nid, "bridge gone", bkAt)
	if len(ev) != 1 || ev[0].Kind != KindNotificationFailed || ev[0].Error != "bridge gone" {
		t.Errorf("failed delivery: %+v", ev)
	}
}

func TestDecideReadNeverBeforeCompletion(t *testing.T) {
	d := &Delegation{ID: "brave-red-fox", State: Complete, CompletedAt: bkAt}
	if ev := DecideRead(d, bkAt.Add(-time.Hour)); len(ev) != 1 || !ev[0].At.Equal(bkAt) {
		t.Errorf("read with a clock gone back: %+v, want at the completion", ev)
	}
	if ev := DecideRead(d, bkAt.Add(time.Hour)); len(ev) != 1 || ev[0].Kind != KindRead || !ev[0].At.Equal(bkAt.Add(time.Hour)) {
		t.Errorf("read: %+v", ev)
	}
}

func TestParentStream(t *testing.T) {
	if p, ok := ParentOfStream(ParentStream("ses_parent")); !ok || p != "ses_parent" {
		t.Errorf("round trip: %q %v", p, ok)
	}
	if _, ok := ParentOfStream("brave-red-fox"); ok {
		t.Error("a delegation's stream read as a parent's")
	}
}

// TestCycle runs two cycles: the all-complete is due only when every
// member has ended and been notified, a registration while one is active
// joins the cycle, and a late notification of the old cycle counts for
// nothing in the new one.
func TestCycle(t *testing.T) {
	var c Cycle
	if ended, started := c.Join(); !started || ended != 0 || c.Cycle != 1 {
		t.Fatalf("first join: ended %d started %v, %+v", ended, started, c)
	}
	if _, started := c.Join(); started || c.Members != 2 || c.Active != 2 {
		t.Fatalf("second join: %+v", c)
	}
	c.Leave()
	if counted, all := c.Notify(1); !counted || all {
		t.Fatal("all-complete with a member still active")
	}
	c.Leave()
	if counted, all := c.Notify(1); !counted || !all {
		t.Fatalf("all-complete not due after every member ended and was notified: %+v", c)
	}
	if ended, started := c.Join(); !started || ended != 1 || c.Cycle != 2 || c.Members != 1 || c.Notified != 0 {
		t.Fatalf("a registration after the cycle ended: ended %d started %v, %+v", ended, started, c)
	}
	if counted, _ := c.Notify(1); counted || c.Notified != 0 {
		t.Fatalf("an older cycle's notification counted: %+v", c)
	}
	if counted, _ := c.Notify(0); counted || c.Notified != 0 {
		t.Fatalf("an older cycle's or no cycle's notification counted: %+v", c)
	}
}

func TestDecideAllCompleteAck(t *testing.T) {
	const parent, nid = "ses_parent", "all-complete:ses_parent:2"
	var p Parent
	for _, e := range []Event{{Kind: KindNotificationFailed, Cycle: 1}, {Kind: KindAllCompleteNotified, Cycle: 1}} {
		p = EvolveParent(p, e)
	}
	if p.Version != 2 || len(p.Acked) != 1 || p.Acked[0] != 1 {
		t.Fatalf("parent after two events: %+v", p)
	}
	if _, _, err := DecideAllCompleteAck(&p, parent, nid, 2, false, "", bkAt); !errors.Is(err, ErrNotFound) || err.Error() != "notification all-complete:ses_parent:2 is not in the outbox: it was never due, or a newer cycle of ses_parent suppressed it" {
		t.Errorf("ack of a cycle never due: %v", err)
	}
	if ev, already, err := DecideAllCompleteAck(&p, parent, "all-complete:ses_parent:1", 1, false, "", bkAt); ev != nil || !already || err != nil {
		t.Errorf("second ack of cycle 1: %v %v %v", ev, already, err)
	}
	ev, already, err := DecideAllCompleteAck(&p, parent, nid, 2, true, "", bkAt)
	if err != nil || already || len(ev) != 1 || ev[0].Kind != KindAllCompleteNotified || ev[0].ID != ParentStream(parent) || ev[0].Cycle != 2 {
		t.Errorf("ack of a due cycle: %+v %v %v", ev, already, err)
	}
	ev, _, _ = DecideAllCompleteAck(&p, parent, nid, 2, true, "no session", bkAt)
	if len(ev) != 1 || ev[0].Kind != KindNotificationFailed || ev[0].Error != "no session" {
		t.Errorf("failed delivery: %+v", ev)
	}
}

// TestDecideTakeOver: a delegation is taken over when its owner is not
// alive (an empty owner is nobody), from a live owner only by its
// registrant, never by its owner; the owned event makes the taker the
// owner.
func TestDecideTakeOver(t *testing.T) {
	alive := func(id string) bool { return id == "live" }
	d := Fold(Event{Kind: KindRegistered, ID: testID, At: t0, Owner: "gone", Registration: Registration{Timeout: time.Minute}})
	if d.Owner != "gone" {
		t.Fatalf("registered with owner gone: owner %q", d.Owner)
	}
	for _, tc := range []struct {
		owner, registrant, self string
		take                    bool
	}{
		{"gone", "gone", "me", true}, {"", "", "me", true}, {"live", "live", "me", false}, {"me", "me", "me", false},
		{"gone", "gone", "", false},
		// Back under its id, the registrant takes it back from a live owner.
		{"live", "me", "me", true}, {"live", "other", "me", false}, {"me", "other", "me", false},
	} {
		d.Owner = tc.owner
		events := DecideTakeOver(&d, tc.registrant, tc.self, alive, t0)
		if (len(events) == 1) != tc.take {
			t.Fatalf("owner %q, registrant %q, self %q: %+v", tc.owner, tc.registrant, tc.self, events)
		}
		if tc.take {
			if next := Evolve(d, events[0]); next.Owner != tc.self || next.Version != d.Version+1 {
				t.Fatalf("after %+v: owner %q, version %d", events[0], next.Owner, next.Version)
			}
		}
	}
	if DecideTakeOver(nil, "me", "me", alive, t0) != nil {
		t.Fatal("took over no delegation")
	}
}
