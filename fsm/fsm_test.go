package fsm

import (
	"errors"
	"slices"
	"testing"
	"time"
)

const testID = "elegant-blue-tiger"

// t0 is a fixed clock for every test: the package reads no clock.
var t0 = time.Date(2026, 11, 21, 10, 38, 45, 282_000_000, time.UTC)

func at(sec int) time.Time { return t0.Add(time.Duration(sec) * time.Second) }

func regCmd() Event {
	return Event{
		Kind: KindRegistered,
		ID:   testID,
		At:   t0,
		Registration: Registration{
			ProjectID: "0123456789abcdef", RootSessionID: "ses_root", ParentSessionID: "ses_parent",
			ParentMessageID: "msg_01", ParentAgent: "build", Agent: "explore",
			Model: "anthropic/claude-haiku", Prompt: "find where the results go",
		},
	}
}

// Commands of the transition table, each with a fixed payload. The terminal
// states below are reached with these same commands, so the same command on
// its own terminal state is an idempotent retry.
var tableCmds = map[Kind]Event{
	KindStarted:    {Kind: KindStarted, Registration: Registration{SessionID: "ses_child"}},
	KindProgressed: {Kind: KindProgressed, Message: "working on it"},
	KindCompleted:  {Kind: KindCompleted, Result: "done\nall of it"},
	KindFailed:     {Kind: KindFailed, Error: "boom"},
	KindCancelled:  {Kind: KindCancelled, Reason: "user asked"},
	KindTimedOut:   {Kind: KindTimedOut},
}

func command(k Kind, sec int) Event {
	c := tableCmds[k]
	c.ID, c.At = testID, at(sec)
	return c
}

// apply decides cmd on d and folds the events in, failing on any error.
func apply(t *testing.T, d *Delegation, cmd Event) Delegation {
	t.Helper()
	evs, err := Decide(d, cmd, Config{})
	if err != nil {
		t.Fatalf("Decide(%s): %v", cmd.Kind, err)
	}
	var out Delegation
	if d != nil {
		out = *d
	}
	for _, e := range evs {
		out = Evolve(out, e)
	}
	return out
}

// inState builds a delegation in state s through Decide and Evolve.
func inState(t *testing.T, s State) Delegation {
	t.Helper()
	d := apply(t, nil, regCmd())
	if s == Registered {
		return d
	}
	d = apply(t, &d, command(KindStarted, 1))
	end := map[State]Kind{Complete: KindCompleted, Error: KindFailed, Cancelled: KindCancelled, Timeout: KindTimedOut}
	if k, ok := end[s]; ok {
		d = apply(t, &d, command(k, 2))
	}
	if d.State != s {
		t.Fatalf("inState(%s) built %s", s, d.State)
	}
	return d
}

func TestTransitionTable(t *testing.T) {
	S, P, C, F, X, T, R := KindStarted, KindProgressed, KindCompleted, KindFailed, KindCancelled, KindTimedOut, KindRejected
	tests := []struct {
		state   State
		cmd     Kind
		want    []Kind
		wantSt  State
		wantErr error
	}{
		{Registered, S, []Kind{S}, Running, nil},
		{Registered, P, []Kind{S, P}, Running, nil},
		{Registered, C, []Kind{C}, Complete, nil},
		{Registered, F, []Kind{F}, Error, nil},
		{Registered, X, []Kind{X}, Cancelled, nil},
		{Registered, T, []Kind{T}, Timeout, nil},

		{Running, S, nil, Running, nil},
		{Running, P, []Kind{P}, Running, nil},
		{Running, C, []Kind{C}, Complete, nil},
		{Running, F, []Kind{F}, Error, nil},
		{Running, X, []Kind{X}, Cancelled, nil},
		{Running, T, []Kind{T}, Timeout, nil},

		{Complete, S, []Kind{R}, Complete, ErrTerminal},
		{Complete, P, []Kind{R}, Complete, ErrTerminal},
		{Complete, C, nil, Complete, nil}, // same command: idempotent
		{Complete, F, []Kind{R}, Complete, ErrTerminal},
		{Complete, X, []Kind{R}, Complete, ErrTerminal},
		{Complete, T, []Kind{R}, Complete, ErrTerminal},

		{Error, S, []Kind{R}, Error, ErrTerminal},
		{Error, P, []Kind{R}, Error, ErrTerminal},
		{Error, C, []Kind{R}, Error, ErrTerminal},
		{Error, F, nil, Error, nil},
		{Error, X, []Kind{R}, Error, ErrTerminal},
		{Error, T, []Kind{R}, Error, ErrTerminal},

		{Cancelled, S, []Kind{R}, Cancelled, ErrTerminal},
		{Cancelled, P, []Kind{R}, Cancelled, ErrTerminal},
		{Cancelled, C, []Kind{R}, Cancelled, ErrTerminal},
		{Cancelled, F, []Kind{R}, Cancelled, ErrTerminal},
		{Cancelled, X, nil, Cancelled, nil},
		{Cancelled, T, []Kind{R}, Cancelled, ErrTerminal},

		{Timeout, S, []Kind{R}, Timeout, ErrTerminal},
		{Timeout, P, []Kind{R}, Timeout, ErrTerminal},
		{Timeout, C, []Kind{R}, Timeout, ErrTerminal},
		{Timeout, F, []Kind{R}, Timeout, ErrTerminal},
		{Timeout, X, []Kind{R}, Timeout, ErrTerminal},
		{Timeout, T, nil, Timeout, nil},
	}
	seen := map[[2]string]bool{}
	for _, tt := range tests {
		seen[[2]string{string(tt.state), tt.cmd.String()}] = true
		t.Run(string(tt.state)+"/"+tt.cmd.String(), func(t *testing.T) {
			d := inState(t, tt.state)
			before := d
			cmd := command(tt.cmd, 10)
			evs, err := Decide(&d, cmd, Config{})
			if !errors.Is(err, tt.wantErr) || (err == nil) != (tt.wantErr == nil) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if d != before {
				t.Fatal("Decide modified the record it was given")
			}
			var kinds []Kind
			for _, e := range evs {
				kinds = append(kinds, e.Kind)
				if e.ID != testID || !e.At.Equal(at(10)) {
					t.Errorf("event %s has id %q at %v; want the command's", e.Kind, e.ID, e.At)
				}
			}
			if !slices.Equal(kinds, tt.want) {
				t.Fatalf("events = %v, want %v", kinds, tt.want)
			}
			next := d
			for _, e := range evs {
				next = Evolve(next, e)
			}
			if next.State != tt.wantSt {
				t.Errorf("state after = %s, want %s", next.State, tt.wantSt)
			}
			if next.Version != d.Version+uint64(len(evs)) {
				t.Errorf("version = %d, want %d", next.Version, d.Version+uint64(len(evs)))
			}
			if tt.wantErr != nil {
				var te *TransitionError
				if !errors.As(err, &te) || te.ID != testID || te.State != tt.state || te.Event != tt.cmd {
					t.Errorf("error = %#v, want TransitionError{%s %s %s}", err, testID, tt.state, tt.cmd)
				}
				rej := evs[0]
				if rej.Refused != tt.cmd || rej.RefusedState != tt.state {
					t.Errorf("rejected refused %s in %s, want %s in %s", rej.Refused, rej.RefusedState, tt.cmd, tt.state)
				}
				if next.Rejected != d.Rejected+1 {
					t.Errorf("rejected count = %d, want %d", next.Rejected, d.Rejected+1)
				}
				// a rejection changes nothing else
				next.Rejected, next.Version = d.Rejected, d.Version
				if next != d {
					t.Errorf("rejected event changed the record:\n got %+v\nwant %+v", next, d)
				}
			}
		})
	}
	for _, s := range States() {
		for k := range tableCmds {
			if !seen[[2]string{string(s), k.String()}] {
				t.Errorf("table misses (%s, %s)", s, k)
			}
		}
	}
}

func TestDecideRegister(t *testing.T) {
	evs, err := Decide(nil, regCmd(), Config{})
	if err != nil || len(evs) != 1 || evs[0].Kind != KindRegistered {
		t.Fatalf("register unknown id: %v, %v", evs, err)
	}
	if evs[0].Timeout != 15*time.Minute {
		t.Errorf("default timeout = %v, want 15m", evs[0].Timeout)
	}
	d := Fold(evs...)
	if d.State != Registered || !d.TimeoutAt.Equal(t0.Add(15*time.Minute)) || !d.CreatedAt.Equal(t0) || !d.LastUpdateAt.Equal(t0) {
		t.Errorf("registered record = %+v", d)
	}

	evs, _ = Decide(nil, regCmd(), Config{DefaultTimeout: time.Hour})
	if evs[0].Timeout != time.Hour {
		t.Errorf("configured default timeout = %v, want 1h", evs[0].Timeout)
	}
	cmd := regCmd()
	cmd.Timeout = 90 * time.Second
	evs, _ = Decide(nil, cmd, Config{DefaultTimeout: time.Hour})
	if evs[0].Timeout != 90*time.Second {
		t.Errorf("per-delegation timeout = %v, want 90s", evs[0].Timeout)
	}

	// stray fields of another kind never reach the log
	cmd = regCmd()
	cmd.Result, cmd.Message, cmd.Cycle = "x", "y", 3
	evs, _ = Decide(nil, cmd, Config{})
	if evs[0].Result != "" || evs[0].Message != "" || evs[0].Cycle != 0 {
		t.Errorf("registered event kept stray fields: %+v", evs[0])
	}

	for _, s := range States() {
		d := inState(t, s)
		evs, err := Decide(&d, regCmd(), Config{})
		if !errors.Is(err, ErrExists) || evs != nil {
			t.Errorf("register on %s: %v, %v; want ErrExists and no events", s, evs, err)
		}
	}
	for k := range tableCmds {
		evs, err := Decide(nil, command(k, 1), Config{})
		if !errors.Is(err, ErrNotFound) || evs != nil {
			t.Errorf("%s on unknown id: %v, %v; want ErrNotFound and no events", k, evs, err)
		}
	}
}

func TestDecideNonCommandKinds(t *testing.T) {
	d := inState(t, Running)
	for _, k := range []Kind{KindPersisted, KindNotified, KindNotificationFailed, KindAllCompleteDue,
		KindAllCompleteNotified, KindRead, KindRejected, KindImported, 0, 99} {
		_, err := Decide(&d, Event{Kind: k, ID: testID, At: t0}, Config{})
		if !errors.Is(err, ErrInvalid) {
			t.Errorf("Decide(%s) = %v, want ErrInvalid", k, err)
		}
	}
}

func TestTransitionErrorMessage(t *testing.T) {
	d := inState(t, Complete)
	_, err := Decide(&d, command(KindProgressed, 5), Config{})
	want := `delegation "elegant-blue-tiger" is already complete; refusing progressed (late events after a terminal state are recorded but change nothing)`
	if err == nil || err.Error() != want {
		t.Errorf("error = %v\nwant    %s", err, want)
	}
}

func TestIdempotentTerminalRetry(t *testing.T) {
	for _, k := range []Kind{KindCompleted, KindFailed, KindCancelled, KindTimedOut} {
		t.Run(k.String(), func(t *testing.T) {
			d := inState(t, Running)
			first := command(k, 2)
			first.Title, first.Description = "", ""
			d = apply(t, &d, first)

			retry := command(k, 99) // different time, same content
			if evs, err := Decide(&d, retry, Config{}); evs != nil || err != nil {
				t.Errorf("same command again: %v, %v; want nothing", evs, err)
			}
			// the fallback title recorded the first time matches an explicit one
			retry.Title, retry.Description = d.Title, d.Description
			if evs, err := Decide(&d, retry, Config{}); evs != nil || err != nil {
				t.Errorf("same command with the recorded title: %v, %v; want nothing", evs, err)
			}

			changed := command(k, 99)
			switch k {
			case KindCompleted:
				changed.Result = "something else"
			case KindFailed, KindTimedOut:
				changed.Error = "another error"
			case KindCancelled:
				changed.Reason = "another reason"
			}
			evs, err := Decide(&d, changed, Config{})
			if !errors.Is(err, ErrTerminal) || len(evs) != 1 || evs[0].Kind != KindRejected {
				t.Fatalf("same kind, other content: %v, %v; want one rejected and ErrTerminal", evs, err)
			}
			if evs[0].Result != changed.Result || evs[0].Error != changed.Error || evs[0].Reason != changed.Reason {
				t.Errorf("rejected event lost the refused text: %+v", evs[0])
			}

			titled := command(k, 99)
			titled.Title = "A different title"
			if _, err := Decide(&d, titled, Config{}); !errors.Is(err, ErrTerminal) {
				t.Errorf("same kind, other title: %v, want ErrTerminal", err)
			}
		})
	}
}

func TestRejectedKeepsRefusedText(t *testing.T) {
	d := inState(t, Timeout)
	evs, err := Decide(&d, command(KindProgressed, 50), Config{})
	if !errors.Is(err, ErrTerminal) || len(evs) != 1 {
		t.Fatalf("got %v, %v", evs, err)
	}
	e := evs[0]
	if e.Kind != KindRejected || e.Message != "working on it" || e.Refused != KindProgressed || e.RefusedState != Timeout {
		t.Errorf("rejected = %+v", e)
	}
	got, err := UnmarshalPayload(e.Kind, e.ID, e.At, e.MarshalPayload())
	if err != nil || got != e {
		t.Errorf("rejected event does not survive the codec: %+v, %v", got, err)
	}
}

func TestStartedKeepsFirstStartAndSession(t *testing.T) {
	d := apply(t, nil, regCmd())
	d = apply(t, &d, Event{Kind: KindStarted, ID: testID, At: at(1)})
	if d.SessionID != "" || !d.StartedAt.Equal(at(1)) {
		t.Fatalf("after start: %+v", d)
	}
	// a second start with a session is a no-op by design
	evs, err := Decide(&d, Event{Kind: KindStarted, ID: testID, At: at(2), Registration: Registration{
		SessionID: "ses_x",
	}}, Config{})
	if evs != nil || err != nil {
		t.Errorf("start on running: %v, %v", evs, err)
	}
	// Evolve itself: StartedAt only the first time, session when given
	d = Evolve(d, Event{Kind: KindStarted, ID: testID, At: at(3), Registration: Registration{SessionID: "ses_y"}})
	if !d.StartedAt.Equal(at(1)) || d.SessionID != "ses_y" {
		t.Errorf("evolve started twice: %+v", d)
	}
}

func TestDecideIDMismatch(t *testing.T) {
	d := inState(t, Running)
	cmd := command(KindProgressed, 1)
	cmd.ID = "other-red-fox"
	if _, err := Decide(&d, cmd, Config{}); !errors.Is(err, ErrInvalid) {
		t.Errorf("id mismatch: %v, want ErrInvalid", err)
	}
}

func TestStateAndKindNames(t *testing.T) {
	for _, s := range States() {
		got, err := ParseState(string(s))
		if err != nil || got != s {
			t.Errorf("ParseState(%q) = %q, %v", s, got, err)
		}
		if s.Terminal() == s.Active() {
			t.Errorf("%s: terminal %v, active %v", s, s.Terminal(), s.Active())
		}
	}
	if !Running.Active() || Registered.Terminal() || !Timeout.Terminal() {
		t.Error("Active/Terminal misclassify")
	}
	for _, bad := range []string{"", "Complete", " running", "done"} {
		if _, err := ParseState(bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("ParseState(%q) = %v, want ErrInvalid", bad, err)
		}
	}
	if State("").Terminal() || State("").Active() {
		t.Error("the empty state is neither terminal nor active")
	}

	want := []string{"registered", "started", "progressed", "completed", "failed", "cancelled", "timed_out",
		"persisted", "notified", "notification_failed", "all_complete_due", "all_complete_notified",
		"read", "rejected", "imported"}
	for i, name := range want {
		k := Kind(i + 1)
		if k.String() != name {
			t.Errorf("Kind(%d).String() = %q, want %q", i+1, k.String(), name)
		}
		got, err := ParseKind(name)
		if err != nil || got != k {
			t.Errorf("ParseKind(%q) = %d, %v", name, got, err)
		}
	}
	if KindImported != 15 || KindRejected != 14 || KindTimedOut != 7 {
		t.Error("stored kind numbers changed")
	}
	if s := Kind(0).String(); s != "kind(0)" {
		t.Errorf("Kind(0) = %q", s)
	}
	if s := Kind(300).String(); s != "kind(300)" {
		t.Errorf("Kind(300) = %q", s)
	}
	if k, err := ParseKind("kind(300)"); err != nil || k != 300 {
		t.Errorf("ParseKind(kind(300)) = %d, %v", k, err)
	}
	for _, bad := range []string{"", "Started", "kind(0)", "kind(70000)", "kind()", "kind(x)"} {
		if _, err := ParseKind(bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("ParseKind(%q) = %v, want ErrInvalid", bad, err)
		}
	}
}

func TestTableIsNotMutated(t *testing.T) {
	before := len(lifecycle)
	for _, s := range States() {
		for k := range tableCmds {
			can(s, k)
		}
	}
	if len(lifecycle) != before || lifecycle[0].Dst != string(Running) {
		t.Error("lifecycle table changed")
	}
	if can(Running, KindStarted) || !can(Registered, KindStarted) || can(Complete, KindProgressed) || can("", KindCompleted) {
		t.Error("table allows the wrong transitions")
	}
}

// TestTableStates checks that State.Terminal and State.Active, kept as
// switches for replay's speed, agree with the table: the active states are
// exactly those with an outgoing transition.
func TestTableStates(t *testing.T) {
	for _, s := range States() {
		out := false
		for k := range tableCmds {
			out = out || can(s, k)
		}
		if out != s.Active() || out == s.Terminal() {
			t.Errorf("%s: table has outgoing transitions %v; Active %v, Terminal %v", s, out, s.Active(), s.Terminal())
		}
	}
}
