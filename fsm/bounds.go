package fsm

import (
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Input bounds. Decide checks every command against them; the validators
// below are exported so that the CLI and the API can check outside input
// before it reaches a path or the log.
const (
	MaxIDLen          = 64  // bytes in a delegation id
	MaxSessionIDLen   = 128 // bytes in a session or project id
	MaxNameLen        = 256 // bytes in an agent, model or parent message id
	MaxPromptLen      = 256 << 10
	MaxMessageLen     = 1 << 20 // progress text
	MaxResultLen      = 4 << 20
	MaxErrorLen       = 64 << 10
	MaxTitleLen       = 512
	MaxDescriptionLen = 4 << 10
	MaxReasonLen      = 4 << 10

	MinTimeout     = time.Second
	MaxTimeout     = 7 * 24 * time.Hour
	DefaultTimeout = 15 * time.Minute // the plugin's
)

// Display names of the validated fields, used in InputError.Field.
const (
	FieldID              = "delegation id"
	FieldProjectID       = "project id"
	FieldRootSessionID   = "root session id"
	FieldParentSessionID = "parent session id"
	FieldParentMessageID = "parent message id"
	FieldParentAgent     = "parent agent"
	FieldSessionID       = "session id"
	FieldAgent           = "agent"
	FieldModel           = "model"
	FieldPrompt          = "prompt"
	FieldTimeout         = "timeout"
	FieldMessage         = "message"
	FieldResult          = "result"
	FieldError           = "error"
	FieldTitle           = "title"
	FieldDescription     = "description"
	FieldReason          = "reason"
	FieldKind            = "kind"
	FieldTime            = "time"
)

// InputError describes a value that breaks an input bound. It wraps
// ErrInvalid.
type InputError struct {
	Field   string // which input, e.g. "delegation id" or "prompt"
	Value   string // the offending value when it is short enough to show; else ""
	Problem string // what is wrong and what is wanted
}

func (e *InputError) Error() string {
	if e.Value == "" {
		return "invalid " + e.Field + ": " + e.Problem
	}
	v := e.Value
	if len(v) > 80 {
		v = v[:80] + "..."
	}
	return "invalid " + e.Field + " " + strconv.Quote(v) + ": " + e.Problem
}

// Unwrap returns ErrInvalid.
func (e *InputError) Unwrap() error { return ErrInvalid }

func invalid(field, value, problem string) error {
	return &InputError{Field: field, Value: value, Problem: problem}
}

// ValidateID checks a delegation id against the grammar adjective-color-animal:
// three runs of lower-case ASCII letters joined by two hyphens, at most
// MaxIDLen bytes. It does not trim: the CLI does.
func ValidateID(id string) error {
	const want = "want adjective-color-animal, lower-case letters and two hyphens (e.g. elegant-blue-tiger)"
	if id == "" {
		return invalid(FieldID, "", "required; "+want)
	}
	if len(id) > MaxIDLen {
		return invalid(FieldID, id, fmt.Sprintf("%d bytes, over the limit of %d; %s", len(id), MaxIDLen, want))
	}
	hyphens, run := 0, 0
	for i := 0; i < len(id); i++ {
		switch c := id[i]; {
		case c >= 'a' && c <= 'z':
			run++
		case c == '-' && run > 0:
			hyphens++
			run = 0
		default:
			return invalid(FieldID, id, want)
		}
	}
	if hyphens != 2 || run == 0 {
		return invalid(FieldID, id, want)
	}
	return nil
}

// ValidateSessionID checks a session id (root, parent or child) or a project
// id. These become path components, so they must match
// ^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$ and must not be "." or "..". field
// names the input in the error (e.g. FieldRootSessionID).
func ValidateSessionID(field, s string) error {
	const want = "want 1 to 128 letters, digits, '_', '.' or '-', starting with a letter or digit (it is used as a directory name)"
	if s == "" {
		return invalid(field, "", "required; "+want)
	}
	if len(s) > MaxSessionIDLen {
		return invalid(field, s, fmt.Sprintf("%d bytes, over the limit of %d; %s", len(s), MaxSessionIDLen, want))
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		if !alnum && (i == 0 || c != '_' && c != '.' && c != '-') {
			return invalid(field, s, want)
		}
	}
	// "." and ".." cannot pass the first-byte rule; kept explicit because
	// the rule is about paths, not about this grammar.
	if s == "." || s == ".." {
		return invalid(field, s, want)
	}
	return nil
}

// ValidateName checks a short name (agent, model, parent agent, parent
// message id): 1 to MaxNameLen bytes of printable UTF-8, no control
// characters. An empty name is an error; skip the call for optional names.
func ValidateName(field, s string) error {
	if s == "" {
		return invalid(field, "", "required")
	}
	if len(s) > MaxNameLen {
		return invalid(field, "", fmt.Sprintf("%d bytes, over the limit of %d", len(s), MaxNameLen))
	}
	for i, r := range s {
		if r == utf8.RuneError {
			if _, size := utf8.DecodeRuneInString(s[i:]); size <= 1 {
				return invalid(field, s, fmt.Sprintf("not valid UTF-8 at byte %d", i))
			}
		}
		if !unicode.IsPrint(r) {
			return invalid(field, s, fmt.Sprintf("non-printable character %U at byte %d; want printable text on one line", r, i))
		}
	}
	return nil
}

// ValidateText checks free text (prompt, progress, result, error, title,
// description, reason): at most max bytes, valid UTF-8, no NUL bytes.
// Empty text is valid.
func ValidateText(field, s string, max int) error {
	if len(s) > max {
		return invalid(field, "", fmt.Sprintf("%d bytes, over the limit of %d (%s); shorten it", len(s), max, sizeName(max)))
	}
	// Two passes the runtime makes fast, for a text of megabytes; the
	// walk below only says where a bad text goes wrong.
	if strings.IndexByte(s, 0) < 0 && utf8.ValidString(s) {
		return nil
	}
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c == 0 {
				return invalid(field, "", fmt.Sprintf("NUL byte at offset %d; text must not contain NUL", i))
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			return invalid(field, "", fmt.Sprintf("not valid UTF-8 at byte %d", i))
		}
		i += size
	}
	return nil
}

// ValidateTimeout checks a per-delegation timeout: 0 (use the default) or
// between MinTimeout and MaxTimeout.
func ValidateTimeout(d time.Duration) error {
	if d == 0 || d >= MinTimeout && d <= MaxTimeout {
		return nil
	}
	return invalid(FieldTimeout, d.String(), "want between 1s and 7 days (168h), or 0 for the default")
}

func sizeName(n int) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return strconv.Itoa(n>>20) + " MiB"
	case n >= 1<<10 && n%(1<<10) == 0:
		return strconv.Itoa(n>>10) + " KiB"
	}
	return strconv.Itoa(n) + " bytes"
}
