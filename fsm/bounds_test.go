package fsm

import (
	"errors"
	"regexp"
	"strings"
	"testing"
	"time"
)

func TestValidateID(t *testing.T) {
	for _, id := range []string{"elegant-blue-tiger", "a-b-c"} {
		if err := ValidateID(id); err != nil {
			t.Errorf("ValidateID(%q) = %v", id, err)
		}
	}
	if err := ValidateID("x-y-" + strings.Repeat("z", 60)); err != nil { // exactly 64
		t.Errorf("64-byte id: %v", err)
	}
	bad := []string{"", "../x", "elegant-blue", "elegant-blue-tiger-x", "Elegant-blue-tiger", "elegant--tiger",
		"-blue-tiger", "elegant-blue-", " elegant-blue-tiger", "elegant-blue-tiger\n", "elegant_blue_tiger",
		"élégant-blue-tiger", "x-y-" + strings.Repeat("z", 61), "a-b-c/../../etc"}
	for _, id := range bad {
		err := ValidateID(id)
		if !errors.Is(err, ErrInvalid) {
			t.Errorf("ValidateID(%q) = %v, want ErrInvalid", id, err)
			continue
		}
		if !strings.Contains(err.Error(), "delegation id") || !strings.Contains(err.Error(), "adjective-color-animal") {
			t.Errorf("message does not name the field and grammar: %v", err)
		}
	}
	want := `invalid delegation id "../x": want adjective-color-animal, lower-case letters and two hyphens (e.g. elegant-blue-tiger)`
	if err := ValidateID("../x"); err.Error() != want {
		t.Errorf("message:\n got %v\nwant %s", err, want)
	}
}

func FuzzValidateID(f *testing.F) {
	for _, s := range []string{"elegant-blue-tiger", "../x", "a-b-c", "a--b", ""} {
		f.Add(s)
	}
	re := regexp.MustCompile(`^[a-z]+-[a-z]+-[a-z]+$`)
	f.Fuzz(func(t *testing.T, s string) {
		want := re.MatchString(s) && len(s) <= MaxIDLen
		if got := ValidateID(s) == nil; got != want {
			t.Fatalf("ValidateID(%q) ok = %v, grammar says %v", s, got, want)
		}
	})
}

func TestValidateSessionID(t *testing.T) {
	for _, s := range []string{"ses_01HZX", "0123456789abcdef", "a", "A.b-c_d", strings.Repeat("x", 128)} {
		if err := ValidateSessionID(FieldRootSessionID, s); err != nil {
			t.Errorf("ValidateSessionID(%q) = %v", s, err)
		}
	}
	for _, s := range []string{"", ".", "..", "../etc", "a/b", `a\b`, "_x", "-x", ".hidden", "a b", "a\x00", "ses\n",
		strings.Repeat("x", 129), "séance"} {
		err := ValidateSessionID(FieldParentSessionID, s)
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "parent session id") {
			t.Errorf("ValidateSessionID(%q) = %v, want ErrInvalid naming the field", s, err)
		}
	}
}

func FuzzValidateSessionID(f *testing.F) {
	for _, s := range []string{"ses_1", "..", ".", "a/b", ""} {
		f.Add(s)
	}
	re := regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$`)
	f.Fuzz(func(t *testing.T, s string) {
		want := re.MatchString(s) && s != "." && s != ".."
		if got := ValidateSessionID("session id", s) == nil; got != want {
			t.Fatalf("ValidateSessionID(%q) ok = %v, grammar says %v", s, got, want)
		}
	})
}

func TestValidateName(t *testing.T) {
	for _, s := range []string{"explore", "anthropic/claude-sonnet-4.5", "Agent Smith", "日本語", strings.Repeat("n", 256)} {
		if err := ValidateName(FieldModel, s); err != nil {
			t.Errorf("ValidateName(%q) = %v", s, err)
		}
	}
	for _, s := range []string{"", "a\nb", "tab\there", "nul\x00", "esc\x1b[31m", "\xff", strings.Repeat("n", 257), "zero\u200bwidth"} {
		err := ValidateName(FieldModel, s)
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "model") {
			t.Errorf("ValidateName(%q) = %v, want ErrInvalid naming the field", s, err)
		}
	}
}

func TestValidateText(t *testing.T) {
	if err := ValidateText(FieldResult, "", MaxResultLen); err != nil {
		t.Errorf("empty text: %v", err)
	}
	if err := ValidateText(FieldResult, "multi\nline\ttext 🙂 \uFFFD", MaxResultLen); err != nil {
		t.Errorf("ordinary text: %v", err)
	}
	err := ValidateText(FieldResult, strings.Repeat("r", MaxResultLen+1), MaxResultLen)
	if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "result") ||
		!strings.Contains(err.Error(), "4194305 bytes") || !strings.Contains(err.Error(), "4 MiB") {
		t.Errorf("oversize: %v", err)
	}
	if err := ValidateText(FieldResult, "a\x00b", MaxResultLen); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "NUL") {
		t.Errorf("NUL: %v", err)
	}
	if err := ValidateText(FieldResult, "a\xc3", MaxResultLen); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "UTF-8") {
		t.Errorf("bad UTF-8: %v", err)
	}
}

func TestValidateTimeout(t *testing.T) {
	for _, d := range []time.Duration{0, time.Second, 15 * time.Minute, 7 * 24 * time.Hour} {
		if err := ValidateTimeout(d); err != nil {
			t.Errorf("ValidateTimeout(%v) = %v", d, err)
		}
	}
	for _, d := range []time.Duration{-time.Second, time.Millisecond, 7*24*time.Hour + 1} {
		if err := ValidateTimeout(d); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "timeout") {
			t.Errorf("ValidateTimeout(%v) = %v", d, err)
		}
	}
}

// TestDecideBounds checks that Decide enforces every bound, naming the field.
func TestDecideBounds(t *testing.T) {
	over := func(n int) string { return strings.Repeat("x", n+1) }
	reg := func(f func(*Event)) Event { e := regCmd(); f(&e); return e }
	on := func(k Kind, f func(*Event)) Event { e := Event{Kind: k, ID: testID, At: at(1)}; f(&e); return e }
	tests := []struct {
		field string
		cmd   Event
	}{
		{"delegation id", reg(func(e *Event) { e.ID = "../x" })},
		{"delegation id", on(KindProgressed, func(e *Event) { e.ID = "Elegant-Blue-Tiger" })},
		{"time", reg(func(e *Event) { e.At = time.Time{} })},
		{"kind", on(KindPersisted, func(*Event) {})},
		{"project id", reg(func(e *Event) { e.ProjectID = "" })},
		{"project id", reg(func(e *Event) { e.ProjectID = "../../etc" })},
		{"root session id", reg(func(e *Event) { e.RootSessionID = "" })},
		{"root session id", reg(func(e *Event) { e.RootSessionID = ".." })},
		{"parent session id", reg(func(e *Event) { e.ParentSessionID = "" })},
		{"parent session id", reg(func(e *Event) { e.ParentSessionID = "a/b" })},
		{"session id", reg(func(e *Event) { e.SessionID = "a b" })},
		{"agent", reg(func(e *Event) { e.Agent = "" })},
		{"agent", reg(func(e *Event) { e.Agent = over(MaxNameLen) })},
		{"agent", reg(func(e *Event) { e.Agent = "a\nb" })},
		{"model", reg(func(e *Event) { e.Model = over(MaxNameLen) })},
		{"parent agent", reg(func(e *Event) { e.ParentAgent = "\x07" })},
		{"parent message id", reg(func(e *Event) { e.ParentMessageID = over(MaxNameLen) })},
		{"prompt", reg(func(e *Event) { e.Prompt = over(MaxPromptLen) })},
		{"prompt", reg(func(e *Event) { e.Prompt = "a\x00" })},
		{"timeout", reg(func(e *Event) { e.Timeout = time.Millisecond })},
		{"timeout", reg(func(e *Event) { e.Timeout = 8 * 24 * time.Hour })},
		{"timeout", reg(func(e *Event) { e.Timeout = -time.Minute })},
		{"session id", on(KindStarted, func(e *Event) { e.SessionID = "." })},
		{"message", on(KindProgressed, func(e *Event) { e.Message = over(MaxMessageLen) })},
		{"message", on(KindProgressed, func(e *Event) { e.Message = "\xff" })},
		{"result", on(KindCompleted, func(e *Event) { e.Result = over(MaxResultLen) })},
		{"error", on(KindFailed, func(e *Event) { e.Error = over(MaxErrorLen) })},
		{"error", on(KindTimedOut, func(e *Event) { e.Error = over(MaxErrorLen) })},
		{"reason", on(KindCancelled, func(e *Event) { e.Reason = over(MaxReasonLen) })},
		{"title", on(KindCompleted, func(e *Event) { e.Title = over(MaxTitleLen) })},
		{"description", on(KindFailed, func(e *Event) { e.Description = over(MaxDescriptionLen) })},
	}
	running := inState(t, Running)
	for _, tt := range tests {
		var d *Delegation
		if tt.cmd.Kind != KindRegistered {
			d = &running
		}
		evs, err := Decide(d, tt.cmd, Config{})
		var ie *InputError
		if !errors.Is(err, ErrInvalid) || !errors.As(err, &ie) || evs != nil {
			t.Errorf("%s: %v, %v; want an InputError and no events", tt.field, evs, err)
			continue
		}
		if ie.Field != tt.field || !strings.HasPrefix(err.Error(), "invalid "+tt.field) {
			t.Errorf("error names %q (%v), want %q", ie.Field, err, tt.field)
		}
	}
	// bounds are checked before state: an invalid command on a terminal
	// delegation is invalid, not rejected
	done := inState(t, Complete)
	if evs, err := Decide(&done, on(KindProgressed, func(e *Event) { e.Message = "\x00" }), Config{}); !errors.Is(err, ErrInvalid) || evs != nil {
		t.Errorf("invalid late command: %v, %v", evs, err)
	}
	// at the limits exactly: accepted
	ok := reg(func(e *Event) {
		e.Prompt, e.Agent, e.Timeout = strings.Repeat("p", MaxPromptLen), strings.Repeat("a", MaxNameLen), MaxTimeout
	})
	if _, err := Decide(nil, ok, Config{}); err != nil {
		t.Errorf("limits exactly: %v", err)
	}
}
