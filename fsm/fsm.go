package fsm

import (
	"errors"
	"fmt"
	"strconv"
	"sync"

	lfsm "github.com/looplab/fsm"
)

// Errors returned by Decide, the validators, the payload codec and the id
// generator. Test for them with errors.Is; the typed errors TransitionError
// and InputError wrap ErrTerminal and ErrInvalid.
var (
	// ErrNotFound means a command names a delegation id that has no events.
	ErrNotFound = errors.New("delegation not found")
	// ErrExists means a registration names an id that already has events.
	ErrExists = errors.New("delegation already exists")
	// ErrTerminal means a command was refused because the delegation is
	// already in a terminal state. Decide still returns a rejected event to
	// record.
	ErrTerminal = errors.New("delegation is terminal")
	// ErrInvalid means a command or an outside value breaks an input bound.
	ErrInvalid = errors.New("invalid input")
	// ErrIDSpaceExhausted means GenerateID drew only ids that were taken.
	ErrIDSpaceExhausted = errors.New("no free delegation id")
	// ErrCorruptPayload is wrapped by every UnmarshalPayload and UnmarshalDelegation error.
	ErrCorruptPayload = errors.New("corrupt encoded event or record")
)

// State is the lifecycle state of a delegation, as the plugin names it.
type State string

// The lifecycle states. Registered and Running are active; the other four
// are terminal and final.
const (
	Registered State = "registered"
	Running    State = "running"
	Complete   State = "complete"
	Error      State = "error"
	Cancelled  State = "cancelled"
	Timeout    State = "timeout"
)

// States returns every state in lifecycle order.
func States() []State {
	return []State{Registered, Running, Complete, Error, Cancelled, Timeout}
}

// Terminal reports whether s is one of the final states: complete, error,
// cancelled or timeout.
func (s State) Terminal() bool {
	switch s {
	case Complete, Error, Cancelled, Timeout:
		return true
	}
	return false
}

// Active reports whether s is registered or running.
func (s State) Active() bool { return s == Registered || s == Running }

// ParseState returns the state named s. It does not trim or fold case.
func ParseState(s string) (State, error) {
	if st, ok := internState(s); ok {
		return st, nil
	}
	return "", &InputError{Field: "status", Value: s, Problem: "want one of registered, running, complete, error, cancelled, timeout"}
}

// internState maps a known state name to its constant without allocating
// (the compiler does not allocate for string(b) in a switch).
func internState(s string) (State, bool) {
	switch s {
	case "registered":
		return Registered, true
	case "running":
		return Running, true
	case "complete":
		return Complete, true
	case "error":
		return Error, true
	case "cancelled":
		return Cancelled, true
	case "timeout":
		return Timeout, true
	}
	return "", false
}

// internStateBytes is internState for a byte slice, without allocating.
func internStateBytes(b []byte) (State, bool) {
	switch string(b) {
	case "registered":
		return Registered, true
	case "running":
		return Running, true
	case "complete":
		return Complete, true
	case "error":
		return Error, true
	case "cancelled":
		return Cancelled, true
	case "timeout":
		return Timeout, true
	}
	return "", false
}

// Kind is the kind of an event. It is stored on disk as a uint16: never
// renumber a kind, only append new ones.
type Kind uint16

// The event kinds. The numbers are persisted.
const (
	KindRegistered          Kind = 1
	KindStarted             Kind = 2
	KindProgressed          Kind = 3
	KindCompleted           Kind = 4
	KindFailed              Kind = 5
	KindCancelled           Kind = 6
	KindTimedOut            Kind = 7
	KindPersisted           Kind = 8
	KindNotified            Kind = 9
	KindNotificationFailed  Kind = 10
	KindAllCompleteDue      Kind = 11 // reserved: never appended (the outbox knows when one is due); never reuse 11
	KindAllCompleteNotified Kind = 12
	KindRead                Kind = 13
	KindRejected            Kind = 14
	KindImported            Kind = 15
	KindOwned               Kind = 16 // another daemon took the delegation over (Owner)

	firstKind = KindRegistered
	lastKind  = KindOwned // update when appending a kind
)

var kindNames = [lastKind + 1]string{
	KindRegistered:          "registered",
	KindStarted:             "started",
	KindProgressed:          "progressed",
	KindCompleted:           "completed",
	KindFailed:              "failed",
	KindCancelled:           "cancelled",
	KindTimedOut:            "timed_out",
	KindPersisted:           "persisted",
	KindNotified:            "notified",
	KindNotificationFailed:  "notification_failed",
	KindAllCompleteDue:      "all_complete_due",
	KindAllCompleteNotified: "all_complete_notified",
	KindRead:                "read",
	KindRejected:            "rejected",
	KindImported:            "imported",
	KindOwned:               "owned",
}

// String returns the snake_case name of k, or "kind(N)" for a kind this
// version does not know.
func (k Kind) String() string {
	if k >= firstKind && k <= lastKind {
		return kindNames[k]
	}
	return "kind(" + strconv.FormatUint(uint64(k), 10) + ")"
}

// Known reports whether k is a kind this version defines.
func (k Kind) Known() bool { return k >= firstKind && k <= lastKind }

// ParseKind returns the kind named s (as printed by Kind.String, including
// the "kind(N)" form).
func ParseKind(s string) (Kind, error) {
	for k := firstKind; k <= lastKind; k++ {
		if kindNames[k] == s {
			return k, nil
		}
	}
	if len(s) > len("kind()") && s[:5] == "kind(" && s[len(s)-1] == ')' {
		if n, err := strconv.ParseUint(s[5:len(s)-1], 10, 16); err == nil && n > 0 {
			return Kind(n), nil
		}
	}
	return 0, &InputError{Field: "kind", Value: s, Problem: "want an event kind such as registered, started, progressed, completed, failed, cancelled or timed_out"}
}

var active = []string{string(Registered), string(Running)}

// lifecycle is the whole lifecycle, as a looplab/fsm table whose event names
// are the command kinds. It is read by three rules in Decide:
//
//   - a command whose transition leaves the current state is allowed; one
//     that enters running from registered is preceded by a started event
//     (progress on a registered delegation starts it);
//   - a command that is not allowed but leads to the current state repeats
//     the transition that led there (start on running, the same terminal
//     command again) and changes nothing;
//   - any other command is refused. Terminal states have no outgoing
//     transitions, so every other command on them is refused.
//
// It is built once and never mutated: looplab/fsm copies it into each FSM's
// own maps.
var lifecycle = lfsm.Events{
	{Name: KindStarted.String(), Src: []string{string(Registered)}, Dst: string(Running)},
	{Name: KindProgressed.String(), Src: active, Dst: string(Running)},
	{Name: KindCompleted.String(), Src: active, Dst: string(Complete)},
	{Name: KindFailed.String(), Src: active, Dst: string(Error)},
	{Name: KindCancelled.String(), Src: active, Dst: string(Cancelled)},
	{Name: KindTimedOut.String(), Src: active, Dst: string(Timeout)},
}

// target is the state the table's transition for kind k leads to; ok is
// false when k is not a lifecycle command.
func target(k Kind) (s State, ok bool) {
	if !k.Known() {
		return "", false
	}
	for i := range lifecycle {
		if lifecycle[i].Name == kindNames[k] {
			return State(lifecycle[i].Dst), true
		}
	}
	return "", false
}

// can reports whether the table allows the transition for kind k from s.
func can(s State, k Kind) bool {
	_, ok := target(k)
	return ok && allowed()[s][k]
}

// allowed is the table's answer for every state and kind, asked of
// looplab/fsm once rather than of a fresh FSM (a few maps) per command.
// A fresh FSM per question:
// looplab/fsm instances carry state and locks, and we never call Event
// (it wedges on a cancelled context). A state not listed has no entry, so
// nothing is allowed from it, as in the table.
var allowed = sync.OnceValue(func() map[State][lastKind + 1]bool {
	m := map[State][lastKind + 1]bool{}
	for _, s := range States() {
		var row [lastKind + 1]bool
		for k := firstKind; k <= lastKind; k++ {
			row[k] = lfsm.NewFSM(string(s), lifecycle, nil).Can(k.String())
		}
		m[s] = row
	}
	return m
})

// TransitionError is returned when a command is refused because the
// delegation is already terminal. It wraps ErrTerminal.
type TransitionError struct {
	ID    string
	State State // the delegation's state when the command arrived
	Event Kind  // the event kind the command would have produced
}

func (e *TransitionError) Error() string {
	return fmt.Sprintf("delegation %q is already %s; refusing %s (late events after a terminal state are recorded but change nothing)", e.ID, e.State, e.Event)
}

// Unwrap returns ErrTerminal.
func (e *TransitionError) Unwrap() error { return ErrTerminal }
