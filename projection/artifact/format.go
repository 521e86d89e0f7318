package artifact

import (
	"bytes"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/cespare/xxhash/v2"

	"github.com/delegations/delegations/fsm"
)

// This file renders the texts the plugin shows (README, "Compatibility
// with the background-agents plugin"): the artifact file, the
// notifications, and the delegation_read and delegation_list texts. The functions are pure: the same record gives the same bytes, so
// a replay rebuilds every artifact exactly.
//
// Titles and descriptions are one-line fields everywhere: every run of
// white space in them (including line breaks) is rendered as one space and
// the ends are trimmed. The plugin writes them raw, which lets a title with
// a line break shift every line of the artifact under the parse-back rules.

// Texts fixed by the plugin.
const (
	// ReadIDRequired is delegation_read's error for a blank id.
	ReadIDRequired = "Delegation ID is required"

	// ListEmptyText is delegation_list's text when nothing is visible.
	ListEmptyText = "No delegations found for this session."

	noDescriptionText = "(No description generated)"
	runningText       = "(running)"
	notApplicable     = "N/A"
)

// MaxSize is the largest artifact file Parse and
// Read accept, and Write writes: the largest result plus
// room for the header, so that any artifact the store renders reads back.
const MaxSize = fsm.MaxResultLen + 64<<10

// Parsed is what the plugin's parse-back rules read from an
// artifact file. The importer adopts legacy files with it.
type Parsed struct {
	ID          string    // the file name without ".md"
	Title       string    // the first "# " heading; "" when there is none
	Agent       string    // "" when there is no **Agent:** line
	Status      fsm.State // always terminal: unknown or missing reads as complete
	Description string    // line index 2, at most 150 characters; "" when absent
	Session     string    // the child session; "" in legacy files
	Started     time.Time // zero when absent or unparsable
	Completed   time.Time // zero when "N/A", absent or unparsable
	Result      string    // the text after the "---" separator line and its blank line
}

// Render returns the markdown file of a terminal delegation, in the
// plugin's layout (README, "Compatibility with the background-agents plugin": the artifact):
//
//	# <title, or the id when no title>
//
//	<description, or "(No description generated)">
//
//	**ID:** <id>
//	**Agent:** <agent>
//	**Status:** <status>
//	**Session:** <child session id>
//	**Started:** <startedAt, or createdAt if never started>
//	**Completed:** <completedAt, or N/A>
//
//	---
//
//	<d.ResultText()>
//
// The file ends with the result text itself, no newline added, as the
// plugin writes it. Improvements on the plugin: the title and description
// are made one line (see above) so the parse-back rules read them back;
// the **Session:** line is left out when the delegation never had a child
// session, which reads back as a legacy file does; invalid UTF-8 (never in
// a record Decide accepted) is replaced by U+FFFD so the file always parses.
func Render(d *fsm.Delegation) []byte {
	var p renderPieces
	pieces := p.of(d)
	n := 0
	for _, s := range pieces {
		n += len(s)
	}
	b := make([]byte, 0, n)
	for _, s := range pieces {
		b = append(b, s...)
	}
	if !utf8.Valid(b) {
		b = bytes.ToValidUTF8(b, []byte("\uFFFD"))
	}
	return b
}

// RenderSum returns the size and the xxhash (Sum) of Render(d) without
// making it (see Rendering). Replay checks every persisted artifact
// against its record's rendering this way.
func RenderSum(d *fsm.Delegation) (size int64, sum uint64) {
	r := Rendered(d)
	sum = r.Sum()
	return r.Len(), sum
}

// Rendering is Render(d) kept as its two parts: the header, a few hundred
// bytes, and the result text where it lies. A result of megabytes is then
// checked, hashed and written (WriteRendering) without being copied into
// one buffer first, which cost a cleared allocation and a copy of the
// result, and its checks, a pass each over it, are made block by block
// while the block is in the cache. Not safe for concurrent use.
type Rendering struct {
	head   []byte
	text   string
	sum    uint64
	summed bool
}

// Rendered returns d's rendering, not yet checked (see Sum).
func Rendered(d *fsm.Delegation) *Rendering {
	var p renderPieces
	pieces := p.of(d)
	last := len(pieces) - 1
	n := 0
	for _, s := range pieces[:last] {
		n += len(s)
	}
	head := make([]byte, 0, n)
	for _, s := range pieces[:last] {
		head = append(head, s...)
	}
	return &Rendering{head: head, text: pieces[last]}
}

// Len is the size of the rendering: Render(d)'s once Sum has run (which
// replaces what is not UTF-8).
func (r *Rendering) Len() int64 { return int64(len(r.head) + len(r.text)) }

// Sum returns the xxhash (artifact.Sum) of Render(d), checking on the first
// call that the parts are UTF-8: invalid UTF-8 (never in a record Decide
// accepted) makes the rendering Render's bytes, replaced as Render
// replaces them.
func (r *Rendering) Sum() uint64 {
	if r.summed {
		return r.sum
	}
	var h xxhash.Digest
	h.Reset()
	_, _ = h.Write(r.head)
	if !utf8.Valid(r.head) || !hashUTF8(&h, r.text) {
		b := bytes.ToValidUTF8(append(r.head, r.text...), []byte("\uFFFD"))
		r.head, r.text = b, ""
		h.Reset()
		_, _ = h.Write(b)
	}
	r.sum, r.summed = h.Sum64(), true
	return r.sum
}

// hashBlock is how many bytes of a text hashUTF8 checks and hashes at a
// time: the block is read from memory once, checked and hashed from the
// cache.
const hashBlock = 64 << 10

// hashUTF8 writes s to h and reports whether s is UTF-8. It stops early
// when it is not. Blocks are cut where a rune starts, so that s is UTF-8
// exactly when each block is.
func hashUTF8(h *xxhash.Digest, s string) bool {
	for len(s) > 0 {
		n := min(len(s), hashBlock)
		for back := 0; n < len(s) && !utf8.RuneStart(s[n]); back++ {
			if back == utf8.UTFMax-1 {
				return false // a run of continuation bytes longer than any rune has
			}
			n--
		}
		if !utf8.ValidString(s[:n]) {
			return false
		}
		_, _ = h.WriteString(s[:n])
		s = s[n:]
	}
	return true
}

// RenderIs reports whether Render(d) is b, without making it: the pieces
// are compared where they lie with b, and b checked once for UTF-8. Replay
// checks each artifact file it read against its record's rendering this
// way, cheaper than hashing the rendering (RenderSum) and comparing the
// sums.
func RenderIs(d *fsm.Delegation, b []byte) bool {
	var p renderPieces
	rest := b
	for _, s := range p.of(d) {
		if len(rest) < len(s) || string(rest[:len(s)]) != s {
			return bytes.Equal(Render(d), b) // Render replaced what is not UTF-8, or b differs
		}
		rest = rest[len(s):]
	}
	// The pieces are b: Render(d) is b when b is UTF-8, and b with its
	// invalid bytes replaced when it is not.
	return len(rest) == 0 && utf8.Valid(b)
}

// renderPieces holds an artifact's text as the pieces Render writes one
// after the other: the one home of its layout, for Render and Rendered.
type renderPieces [18]string

// of returns d's pieces, in p's memory.
func (p *renderPieces) of(d *fsm.Delegation) []string {
	title := fmtOneLine(d.Title)
	if title == "" {
		title = d.ID
	}
	desc := fmtHeaderSafe(fmtOneLine(d.Description))
	if desc == "" {
		desc = noDescriptionText
	}
	started, completed := fmtStartedCompleted(d)
	out := append(p[:0], "# ", title, "\n\n", desc,
		"\n\n**ID:** ", d.ID,
		"\n**Agent:** ", fmtAgent(d.Agent),
		"\n**Status:** ", string(d.State))
	if s := fmtOneLine(d.SessionID); s != "" {
		out = append(out, "\n**Session:** ", s)
	}
	return append(out,
		"\n**Started:** ", fsm.FormatTime(started),
		"\n**Completed:** ", completed,
		"\n\n---\n\n", d.ResultText())
}

// Parse reads an artifact file back with the plugin's rules: id =
// fileName (its base name) without ".md"; title = the first line matching
// ^# (.+)$; agent = ^\*\*Agent:\*\* (.+)$; status = ^\*\*Status:\*\* (.+)$,
// where anything but a terminal state, or no line, reads as complete;
// description = line index 2 (lines split at "\n"), cut to 150 characters.
// "Line" in the patterns ends at \n, \r, U+2028 or U+2029, as in the
// plugin's JavaScript multi-line regular expressions.
//
// Improvements on the plugin, which agree with it on every file it wrote:
// the title and the **Agent:**, **Status:**, **Session:**, **Started:** and
// **Completed:** lines are looked for only in the header, the text before
// the separator (the first line "---" after line index 2), so that a
// result quoting such a line cannot change them; the whole file is the
// header when there is no separator. Characters are runes, so a cut never
// splits UTF-8 (the plugin counts UTF-16 units). A "\r" ending the
// description line is dropped.
//
// Legacy files without **Session:** parse; so does any text without a
// heading (its Title is ""). The error cases are only what cannot be an
// artifact at all: a file name that is not <valid id>.md, content over
// MaxSize, or content that is not UTF-8. Errors wrap fsm.ErrInvalid.
func Parse(fileName string, content []byte) (Parsed, error) {
	var p Parsed
	base := filepath.Base(fileName)
	id, ok := strings.CutSuffix(base, ".md")
	if !ok {
		return p, fmt.Errorf("artifact %q: %w: want a file named <delegation id>.md", fileName, fsm.ErrInvalid)
	}
	if err := fsm.ValidateID(id); err != nil {
		return p, fmt.Errorf("artifact %q: %w", fileName, err)
	}
	if len(content) > MaxSize {
		return p, fmt.Errorf("artifact %q: %w: %d bytes, over the limit of %d", fileName, fsm.ErrInvalid, len(content), MaxSize)
	}
	if !utf8.Valid(content) {
		return p, fmt.Errorf("artifact %q: %w: not valid UTF-8", fileName, fsm.ErrInvalid)
	}
	text := string(content)
	p.ID = id
	p.Status = fsm.Complete

	header, result, _ := fmtSplitArtifact(text)
	p.Result = result

	p.Title, _ = fmtFirstMatch(header, "# ")
	p.Agent, _ = fmtFirstMatch(header, "**Agent:** ")
	if s, ok := fmtFirstMatch(header, "**Status:** "); ok {
		if st, err := fsm.ParseState(s); err == nil && st.Terminal() {
			p.Status = st
		}
	}
	p.Session, _ = fmtFirstMatch(header, "**Session:** ")
	if s, ok := fmtFirstMatch(header, "**Started:** "); ok {
		p.Started = fmtParseTime(s)
	}
	if s, ok := fmtFirstMatch(header, "**Completed:** "); ok {
		p.Completed = fmtParseTime(s)
	}

	// Description: the plugin's content.split("\n")[2].
	rest := text
	for range 2 {
		i := strings.IndexByte(rest, '\n')
		if i < 0 {
			rest = ""
			break
		}
		rest = rest[i+1:]
	}
	if i := strings.IndexByte(rest, '\n'); i >= 0 {
		rest = rest[:i]
	}
	rest = strings.TrimSuffix(rest, "\r")
	p.Description = fmtCutRunes(rest, fsm.FallbackDescriptionLen)
	return p, nil
}

// fmtSplitArtifact splits an artifact at its separator: the first line
// (split at "\n", a trailing "\r" ignored) that is exactly "---", at line
// index 3 or later so that a description of "---" is not taken for it. The
// result is the text after the separator line less one blank line. Without
// a separator the header is the whole text and the result is "".
func fmtSplitArtifact(text string) (header, result string, found bool) {
	start := 0
	for line := 0; start <= len(text); line++ {
		end := strings.IndexByte(text[start:], '\n')
		next := len(text) + 1
		if end >= 0 {
			end += start
			next = end + 1
		} else {
			end = len(text)
		}
		if line >= 3 && strings.TrimSuffix(text[start:end], "\r") == "---" {
			if next > len(text) {
				return text[:start], "", true
			}
			result = text[next:]
			if r, ok := strings.CutPrefix(result, "\n"); ok {
				result = r
			} else if r, ok := strings.CutPrefix(result, "\r\n"); ok {
				result = r
			}
			return text[:start], result, true
		}
		start = next
	}
	return text, "", false
}

// fmtFirstMatch applies the multi-line pattern ^<prefix>(.+)$ the way
// JavaScript does: lines end at \n, \r, U+2028 and U+2029, and the capture
// must not be empty.
func fmtFirstMatch(text, prefix string) (string, bool) {
	for text != "" {
		end := fmtLineEnd(text)
		line := text[:end]
		if v, ok := strings.CutPrefix(line, prefix); ok && v != "" {
			return v, true
		}
		if end == len(text) {
			break
		}
		_, size := utf8.DecodeRuneInString(text[end:])
		text = text[end+size:]
	}
	return "", false
}

// fmtLineEnd is the index of the first JavaScript line terminator in s, or
// len(s).
func fmtLineEnd(s string) int {
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '\n', '\r':
			return i
		case 0xE2: // U+2028 and U+2029 are E2 80 A8 and E2 80 A9
			if i+2 < len(s) && s[i+1] == 0x80 && (s[i+2] == 0xA8 || s[i+2] == 0xA9) {
				return i
			}
		}
	}
	return len(s)
}

// fmtParseTime reads a timestamp the plugin wrote (toISOString); anything
// else, "N/A" included, is the zero time.
func fmtParseTime(s string) time.Time {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}
	}
	return t.UTC()
}

// fmtCutRunes returns the first n runes of s.
func fmtCutRunes(s string, n int) string {
	i := 0
	for j := range s {
		if i == n {
			return s[:j]
		}
		i++
	}
	return s
}

// fmtHeaderSafe keeps a one-line text written above the header fields
// (the description, line index 2) from reading as one of them: the
// plugin's rules take the first line matching ^\*\*Agent:\*\* (or Status,
// ...) anywhere in the file, and the description comes first. A leading
// "**" is escaped as "\*\*", which markdown renders as the same two
// asterisks. The title needs nothing: its line starts with "# ".
//
// What this cannot prevent: the result, after the header, may hold any
// line, "**Status:** cancelled" included. Every reader that takes the
// first match (the plugin) meets the real header lines first, and our own
// readers (Parse) look for fields only in the header; a foreign
// reader that takes the last match, or searches the whole file for a field
// the header lacks (**Session:** is absent when there was no child
// session), can still be fooled, and nothing in the file's format can stop
// it.
func fmtHeaderSafe(s string) string {
	if rest, ok := strings.CutPrefix(s, "**"); ok {
		return `\*\*` + rest
	}
	return s
}

// fmtOneLine renders a one-line field: every run of white space (line
// breaks included) becomes one space, and the ends are trimmed.
func fmtOneLine(s string) string {
	if isOneLine(s) {
		return s // most titles and descriptions: no copy (a listing renders thousands)
	}
	return strings.Join(strings.Fields(s), " ")
}

// isOneLine reports whether fmtOneLine leaves s as it is: its only white
// space is single ' ' between other characters.
func isOneLine(s string) bool {
	space := true // a space at the start is trimmed
	for _, r := range s {
		switch {
		case r == ' ':
			if space {
				return false
			}
			space = true
		case r < utf8.RuneSelf && r > ' ' || r >= utf8.RuneSelf && !unicode.IsSpace(r):
			space = false
		default:
			return false // white space other than a single space, or a control character (fmtOneLine decides)
		}
	}
	return !space || s == ""
}

// fmtAgent keeps an agent name as it is unless it would break its line;
// the store's agents never do (fsm.ValidateName refuses control characters).
func fmtAgent(s string) string {
	if fmtLineEnd(s) == len(s) {
		return s
	}
	return fmtOneLine(s)
}

// TagEscaper makes text from outside (a title, an error, a path, a
// session id) inert between the tags of a text a model reads: "&", "<" and
// ">" become "&amp;", "&lt;" and "&gt;", so that no text can close the tag
// it sits in or forge another. It is the one home of that rule, for the
// task notifications here and for the compaction block (package
// compaction). A Replacer substitutes in one pass, which is the same as
// replacing & first and then < and >.
//
// The two contexts add different rules to it, on purpose. A notification
// is the plugin's, byte for byte: it escapes these three and nothing more,
// keeps an error's lines, and makes the title and description one line.
// The block is markdown the model reads line by line, with ids inside code
// spans: there every text is also made one line (control characters
// included), and backticks (in ids, double quotes too) become "'" so that
// nothing leaves its code span. (The status page shows these texts to a
// browser, not a model: there html/template and html.EscapeString escape
// every character HTML treats specially.)
var TagEscaper = strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;")

// TerminalNotification returns the <task-notification> sent to the parent
// when d becomes terminal, as the plugin words it. remaining is the number
// of active delegations of the same parent, not counting d; artifactPath is the
// artifact's absolute path. The <title>, <description> and <error> lines
// appear only when the field is not blank and <remaining> only when
// remaining > 0, leaving no blank line. Every field value is escaped (&, <
// and >), so no text of the child can close the notification or forge a
// tag; title and description are made one line as in the artifact. The text
// ends with "</task-notification>" and no newline.
func TerminalNotification(d *fsm.Delegation, artifactPath string, remaining int) string {
	title := fmtOneLine(d.Title)
	desc := fmtOneLine(d.Description)
	name := title
	if name == "" {
		name = d.ID
	}
	id, status := TagEscaper.Replace(d.ID), TagEscaper.Replace(string(d.State))

	var b strings.Builder
	b.WriteString("<task-notification>\n<task-id>")
	b.WriteString(id)
	b.WriteString("</task-id>\n<status>")
	b.WriteString(status)
	b.WriteString("</status>\n<summary>Background agent ")
	b.WriteString(status)
	b.WriteString(": ")
	b.WriteString(TagEscaper.Replace(name))
	b.WriteString("</summary>\n")
	if title != "" {
		b.WriteString("<title>")
		b.WriteString(TagEscaper.Replace(title))
		b.WriteString("</title>\n")
	}
	if desc != "" {
		b.WriteString("<description>")
		b.WriteString(TagEscaper.Replace(desc))
		b.WriteString("</description>\n")
	}
	if strings.TrimSpace(d.Error) != "" {
		b.WriteString("<error>")
		b.WriteString(TagEscaper.Replace(d.Error))
		b.WriteString("</error>\n")
	}
	b.WriteString("<artifact>")
	b.WriteString(TagEscaper.Replace(artifactPath))
	b.WriteString("</artifact>\n<retrieval>Use delegation_read(\"")
	b.WriteString(id)
	b.WriteString("\") for full output.</retrieval>\n")
	if remaining > 0 {
		b.WriteString("<remaining>")
		b.WriteString(strconv.Itoa(remaining))
		b.WriteString("</remaining>\n")
	}
	b.WriteString("</task-notification>")
	return b.String()
}

// AllCompleteNotification returns the <task-notification> that tells a
// parent every delegation of its cycle has been notified, as the plugin
// words it. The parent session id is escaped. The text ends with "</task-notification>"
// and no newline.
func AllCompleteNotification(parentSessionID string, cycle uint64) string {
	p := TagEscaper.Replace(parentSessionID)
	n := strconv.FormatUint(cycle, 10)
	return "<task-notification>\n" +
		"<type>all-complete</type>\n" +
		"<status>completed</status>\n" +
		"<summary>All delegations complete.</summary>\n" +
		"<parent-session-id>" + p + "</parent-session-id>\n" +
		"<cycle>" + n + "</cycle>\n" +
		"<cycle-token>" + p + ":" + n + "</cycle-token>\n" +
		"</task-notification>"
}

// PendingReadText is what delegation_read returns for a terminal delegation
// whose artifact is not written yet (delegation_read: a result not yet persisted). It
// is deterministic, so a retry gives the same text. Started falls back to
// createdAt as in the artifact; the Title, Description and Error lines
// appear only when not blank (title and description made one line, the
// error as it is). A blank line precedes the closing sentence; there is no
// trailing newline.
func PendingReadText(d *fsm.Delegation, artifactPath string) string {
	started, completed := fmtStartedCompleted(d)
	var b strings.Builder
	b.WriteString("Delegation ID: " + d.ID + "\n")
	b.WriteString("Status: " + string(d.State) + "\n")
	b.WriteString("Agent: " + d.Agent + "\n")
	b.WriteString("Started: " + fsm.FormatTime(started) + "\n")
	b.WriteString("Completed: " + completed + "\n")
	b.WriteString("Artifact: " + artifactPath + "\n")
	if t := fmtOneLine(d.Title); t != "" {
		b.WriteString("Title: " + t + "\n")
	}
	if s := fmtOneLine(d.Description); s != "" {
		b.WriteString("Description: " + s + "\n")
	}
	if strings.TrimSpace(d.Error) != "" {
		b.WriteString("Error: " + d.Error + "\n")
	}
	b.WriteString("\nUse delegation_read(\"" + d.ID + "\") again after persistence completes.")
	return b.String()
}

// NotFoundReadText is delegation_read's error for an id with neither a
// record nor an artifact (delegation_read: an unknown id). The id is
// shown as given: it is the caller's own input.
func NotFoundReadText(id string) string {
	return "Delegation \"" + id + "\" not found.\n\nUse delegation_list() to see available delegations."
}

// ListText renders the plugin's delegation_list() for ds in the order
// given; the caller sorts (the plugin's order is by id):
//
//	## Delegations
//
//	- **<id>** | <title> [<status>] [unread]
//	  → <description>
//	- **<id>** ...
//
// where " | <title>" needs a title, " [unread]" needs d.Unread(), and the
// arrow line needs a description. An active delegation shows its id as
// title and "(running)" as description, as the plugin does. Entries are
// joined by one newline; the text has no trailing newline. No delegations
// give ListEmptyText.
func ListText(ds []fsm.Delegation) string {
	var l ListTextBuilder
	n := 16
	for i := range ds {
		n += 32 + 2*len(ds[i].ID) + len(ds[i].Title) + len(ds[i].Description)
	}
	l.b.Grow(n)
	for i := range ds {
		l.Add(&ds[i])
	}
	return l.String()
}

// ListTextBuilder renders ListText one delegation at a time, for a
// listing that does not hold its delegations (projection.Store.EachSummary).
// The zero value is ready to use.
type ListTextBuilder struct {
	b strings.Builder
}

// Grow makes room for n more entries of a usual size (a title and a
// description of a sentence each).
func (l *ListTextBuilder) Grow(n int) {
	l.b.Grow(16 + n*listEntrySize)
}

// listEntrySize is a usual entry's length: an id, a title and a
// description of a sentence, a status.
const listEntrySize = 128

// Add renders d's entry after those added before it.
func (l *ListTextBuilder) Add(d *fsm.Delegation) {
	b := &l.b
	if b.Len() == 0 {
		b.WriteString("## Delegations\n\n")
	} else {
		b.WriteByte('\n')
	}
	title, desc := fmtOneLine(d.Title), fmtOneLine(d.Description)
	if d.State.Active() {
		title, desc = d.ID, runningText
	}
	b.WriteString("- **")
	b.WriteString(d.ID)
	b.WriteString("**")
	if title != "" {
		b.WriteString(" | ")
		b.WriteString(title)
	}
	b.WriteString(" [")
	b.WriteString(string(d.State))
	b.WriteString("]")
	if d.Unread() {
		b.WriteString(" [unread]")
	}
	if desc != "" {
		b.WriteString("\n  → ")
		b.WriteString(desc)
	}
}

// String returns the text of the delegations added: ListEmptyText when
// none was.
func (l *ListTextBuilder) String() string {
	if l.b.Len() == 0 {
		return ListEmptyText
	}
	return l.b.String()
}

// fmtStartedCompleted is how the plugin shows a delegation's times: started
// falls back to createdAt for one never started, completed is N/A while
// active.
func fmtStartedCompleted(d *fsm.Delegation) (started time.Time, completed string) {
	started = d.StartedAt
	if started.IsZero() {
		started = d.CreatedAt
	}
	completed = fsm.FormatTime(d.CompletedAt)
	if completed == "" {
		completed = notApplicable
	}
	return started, completed
}
