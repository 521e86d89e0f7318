package fsm

import (
	"fmt"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Config holds the rules Decide applies that a deployment may change.
type Config struct {
	// DefaultTimeout is used when a registration carries no timeout.
	// 0 means DefaultTimeout (15 minutes, the plugin's).
	DefaultTimeout time.Duration
}

func (c Config) defaultTimeout() time.Duration {
	if c.DefaultTimeout <= 0 {
		return DefaultTimeout
	}
	return c.DefaultTimeout
}

// Fallback lengths for titles and descriptions (the plugin's), in characters.
const (
	FallbackTitleLen       = 30
	FallbackDescriptionLen = 150
)

// Decide checks a command against the delegation's current state and
// returns the events to append. d is the current record, or nil when the id
// has no events. cmd.Kind is the event the command intends (registered,
// started, progressed, completed, failed, cancelled or timed_out); cmd.ID and
// cmd.At are set by the caller; only the fields meaningful for the kind are
// read (see Event).
//
// Results:
//   - input out of bounds: an *InputError wrapping ErrInvalid, no events;
//   - registered with d != nil: ErrExists; any other kind with d == nil:
//     ErrNotFound; no events;
//   - an allowed transition: its events (progressed on a registered
//     delegation gives started then progressed), with defaults filled in:
//     the timeout, the timed-out error text, and a fallback title and
//     description for terminal events;
//   - a repeat of the transition that led to the current state (start on
//     running; the same terminal command again, same fields ignoring At, a
//     blank title, description or timed-out error matching whatever was
//     recorded): no events, no error;
//   - any other command on a terminal delegation: one rejected event, to be
//     appended, and a *TransitionError wrapping ErrTerminal.
func Decide(d *Delegation, cmd Event, cfg Config) ([]Event, error) {
	if err := validateCommand(&cmd); err != nil {
		return nil, err
	}
	if d != nil && d.ID != "" && d.ID != cmd.ID {
		return nil, invalid(FieldID, cmd.ID, fmt.Sprintf("does not match the record %q it was decided against", d.ID))
	}
	ev := commandEvent(&cmd)
	if ev.Kind == KindRegistered {
		if d != nil {
			return nil, fmt.Errorf("%w: %q", ErrExists, cmd.ID)
		}
		if ev.Timeout == 0 {
			ev.Timeout = cfg.defaultTimeout()
		}
		return []Event{ev}, nil
	}
	if d == nil {
		return nil, fmt.Errorf("%w: %q", ErrNotFound, cmd.ID)
	}

	dst, _ := target(ev.Kind)
	if !can(d.State, ev.Kind) {
		if dst == d.State && repeats(d, &ev) {
			return nil, nil
		}
		if !d.State.Terminal() {
			return nil, fmt.Errorf("delegation %q has unknown state %q; refusing %s", cmd.ID, d.State, ev.Kind)
		}
		rej := ev
		rej.Kind, rej.Refused, rej.RefusedState = KindRejected, ev.Kind, d.State
		return []Event{rej}, &TransitionError{ID: cmd.ID, State: d.State, Event: cmd.Kind}
	}
	if d.State == Registered && dst == Running && ev.Kind != KindStarted {
		start := Event{Kind: KindStarted, ID: ev.ID, At: ev.At}
		return []Event{start, ev}, nil
	}
	if dst.Terminal() {
		if ev.Kind == KindTimedOut && ev.Error == "" {
			ev.Error = TimedOutText(timeoutOf(d, cfg))
		}
		if ev.Title == "" || ev.Description == "" {
			next := Evolve(*d, ev)
			text := next.ResultText()
			if ev.Title == "" {
				ev.Title = FallbackTitle(text)
			}
			if ev.Description == "" {
				ev.Description = FallbackDescription(text)
			}
		}
	}
	return []Event{ev}, nil
}

// timeoutOf is the delegation's timeout, falling back to the configured one
// for records that carry none (imported ones).
func timeoutOf(d *Delegation, cfg Config) time.Duration {
	if d.Timeout > 0 {
		return d.Timeout
	}
	return cfg.defaultTimeout()
}

// TimedOutText is the plugin's error text for a timeout, e.g.
// "Delegation timed out after 900s" for 15 minutes (whole seconds).
func TimedOutText(timeout time.Duration) string {
	return fmt.Sprintf("Delegation timed out after %ds", int64(timeout/time.Second))
}

// commandEvent copies the fields cmd's kind carries, so that stray fields
// of a command never reach the log.
func commandEvent(cmd *Event) Event {
	ev := Event{Kind: cmd.Kind, ID: cmd.ID, At: cmd.At}
	switch cmd.Kind {
	case KindRegistered:
		ev.ProjectID, ev.RootSessionID, ev.ParentSessionID = cmd.ProjectID, cmd.RootSessionID, cmd.ParentSessionID
		ev.ParentMessageID, ev.ParentAgent, ev.SessionID = cmd.ParentMessageID, cmd.ParentAgent, cmd.SessionID
		ev.Agent, ev.Model, ev.Prompt, ev.Timeout = cmd.Agent, cmd.Model, cmd.Prompt, cmd.Timeout
		ev.Owner = cmd.Owner
	case KindStarted:
		ev.SessionID = cmd.SessionID
	case KindProgressed:
		ev.Message = cmd.Message
	case KindCompleted:
		ev.Result, ev.Title, ev.Description = cmd.Result, cmd.Title, cmd.Description
	case KindFailed, KindTimedOut:
		ev.Error, ev.Title, ev.Description = cmd.Error, cmd.Title, cmd.Description
	case KindCancelled:
		ev.Reason, ev.Title, ev.Description = cmd.Reason, cmd.Title, cmd.Description
	}
	return ev
}

// repeats reports whether ev, which leads to d's state, repeats the
// transition that led there. Any start does; blank title, description and
// timed-out error in a terminal retry were defaulted the first time, so
// they match what was recorded.
func repeats(d *Delegation, ev *Event) bool {
	if ev.Kind == KindStarted {
		return true
	}
	if ev.Title != "" && ev.Title != d.Title || ev.Description != "" && ev.Description != d.Description {
		return false
	}
	switch ev.Kind {
	case KindCompleted:
		return ev.Result == d.Result
	case KindFailed:
		return ev.Error == d.Error
	case KindCancelled:
		return ev.Reason == d.Error
	case KindTimedOut:
		return ev.Error == "" || ev.Error == d.Error
	}
	return false
}

// validateCommand checks the fields cmd's kind carries against the input
// bounds.
func validateCommand(cmd *Event) error {
	if _, ok := target(cmd.Kind); !ok && cmd.Kind != KindRegistered {
		return invalid(FieldKind, cmd.Kind.String(), "not a command; want registered, started, progressed, completed, failed, cancelled or timed_out")
	}
	if err := ValidateID(cmd.ID); err != nil {
		return err
	}
	if cmd.At.IsZero() {
		return invalid(FieldTime, "", "required: the caller stamps every command with the current time")
	}
	switch cmd.Kind {
	case KindRegistered:
		for _, f := range [...]struct{ name, v string }{
			{FieldProjectID, cmd.ProjectID},
			{FieldRootSessionID, cmd.RootSessionID},
			{FieldParentSessionID, cmd.ParentSessionID},
		} {
			if err := ValidateSessionID(f.name, f.v); err != nil {
				return err
			}
		}
		if cmd.SessionID != "" {
			if err := ValidateSessionID(FieldSessionID, cmd.SessionID); err != nil {
				return err
			}
		}
		if err := ValidateName(FieldAgent, cmd.Agent); err != nil {
			return err
		}
		for _, f := range [...]struct{ name, v string }{
			{FieldParentMessageID, cmd.ParentMessageID},
			{FieldParentAgent, cmd.ParentAgent},
			{FieldModel, cmd.Model},
		} {
			if f.v == "" {
				continue
			}
			if err := ValidateName(f.name, f.v); err != nil {
				return err
			}
		}
		if err := ValidateText(FieldPrompt, cmd.Prompt, MaxPromptLen); err != nil {
			return err
		}
		return ValidateTimeout(cmd.Timeout)
	case KindStarted:
		if cmd.SessionID != "" {
			return ValidateSessionID(FieldSessionID, cmd.SessionID)
		}
		return nil
	case KindProgressed:
		return ValidateText(FieldMessage, cmd.Message, MaxMessageLen)
	}
	// terminal kinds
	var err error
	switch cmd.Kind {
	case KindCompleted:
		err = ValidateText(FieldResult, cmd.Result, MaxResultLen)
	case KindFailed, KindTimedOut:
		err = ValidateText(FieldError, cmd.Error, MaxErrorLen)
	case KindCancelled:
		err = ValidateText(FieldReason, cmd.Reason, MaxReasonLen)
	}
	if err != nil {
		return err
	}
	if err := ValidateText(FieldTitle, cmd.Title, MaxTitleLen); err != nil {
		return err
	}
	return ValidateText(FieldDescription, cmd.Description, MaxDescriptionLen)
}

// FallbackTitle is the plugin's title when none was given: the first
// non-blank line of text cut to 30 characters, trimmed, plus "..." when the
// line was longer. Characters are runes: a cut never splits UTF-8. Blank
// text gives "".
func FallbackTitle(text string) string {
	if isBlank(text) {
		return ""
	}
	line := text
	for rest := text; rest != ""; {
		var l string
		l, rest, _ = strings.Cut(rest, "\n")
		if !isBlank(l) {
			line = l
			break
		}
	}
	return cutEllipsis(line, FallbackTitleLen)
}

// FallbackDescription is the plugin's description when none was given: the
// first 150 characters of text, trimmed, plus "..." when text was longer.
// Blank text gives "".
func FallbackDescription(text string) string {
	if isBlank(text) {
		return ""
	}
	return cutEllipsis(text, FallbackDescriptionLen)
}

func cutEllipsis(s string, n int) string {
	i, runes := 0, 0
	for i < len(s) && runes < n {
		_, size := utf8.DecodeRuneInString(s[i:]) // an invalid byte counts as one
		i += size
		runes++
	}
	out := trimJS(s[:i])
	if i < len(s) {
		out += "..."
	}
	return out
}

// trimJS trims like JavaScript's String.prototype.trim: Unicode white space
// and the byte order mark.
func trimJS(s string) string {
	return strings.TrimFunc(s, func(r rune) bool { return unicode.IsSpace(r) || r == '\uFEFF' })
}

func isBlank(s string) bool { return trimJS(s) == "" }
