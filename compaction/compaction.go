package compaction

import (
	"path/filepath"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/delegations/delegations/fsm"
	"github.com/delegations/delegations/projection/artifact"
)

// DefaultMaxUnread is the plugin's limit on unread entries in a block.
const DefaultMaxUnread = 10

// PromptCut is how many characters of a running delegation's prompt the
// block shows (the plugin's 200); BriefCut is the limit for prompts and
// titles in the brief variant.
const (
	PromptCut = 200
	BriefCut  = 80
)

// Options shape a block. The zero value renders the plugin's block with no
// size budget and no artifact paths.
type Options struct {
	// MaxUnread is the most unread entries rendered; 0 (or less) means
	// DefaultMaxUnread.
	MaxUnread int
	// MaxBytes is the size budget of the whole text in bytes; 0 (or less)
	// means no budget. See the package caveats.
	MaxBytes int
	// DataDir is the absolute data directory, for the artifact paths of
	// unread entries; "" leaves the **Artifact:** hint out.
	DataDir string
	// Brief selects the short per-turn variant (see Brief).
	Brief bool
}

// Result is a rendered block and what went into it.
type Result struct {
	Text    string // "" when there is nothing to carry
	Running int    // running entries shown
	Unread  int    // unread entries shown
	Omitted int    // entries the size budget left out
}

// Block renders the <delegation-context> block for running and unread
// delegations (as projection.Store.Carried returns them), or "" when both
// are empty. The text has no trailing newline.
func Block(running, unread []fsm.Delegation, o Options) string {
	o.Brief = false
	return Render(running, unread, o).Text
}

// Brief renders the shorter per-turn variant: one line per delegation with
// the same facts (id, agent, status, prompt or title, retrieval hints), or
// "" when both are empty. The text has no trailing newline.
func Brief(running, unread []fsm.Delegation, o Options) string {
	o.Brief = true
	return Render(running, unread, o).Text
}

// Render renders the block (or, with o.Brief, its short variant) and
// reports how many entries it shows and how many the budget left out.
func Render(running, unread []fsm.Delegation, o Options) Result {
	maxUnread := o.MaxUnread
	if maxUnread <= 0 {
		maxUnread = DefaultMaxUnread
	}
	if len(unread) > maxUnread {
		unread = unread[:maxUnread]
	}
	if len(running) == 0 && len(unread) == 0 {
		return Result{}
	}
	l := &fullLayout
	if o.Brief {
		l = &briefLayout
	}

	// Render the whole block in one pass, noting where each entry lies
	// (running entries first, then unread ones). Within the budget, or
	// with none, that is the answer.
	var b strings.Builder
	b.Grow(estimate(running, unread, &o))
	spans := make([]span, 0, len(running)+len(unread))
	b.WriteString(l.open)
	if len(running) > 0 {
		b.WriteString(l.runHead)
		for i := range running {
			start := b.Len()
			l.running(&b, &running[i], &o)
			spans = append(spans, span{start, b.Len()})
		}
		b.WriteString(l.runTail)
	}
	if len(unread) > 0 {
		b.WriteString(l.unreadHead)
		for i := range unread {
			start := b.Len()
			l.unread(&b, &unread[i], &o)
			spans = append(spans, span{start, b.Len()})
		}
		b.WriteString(l.unreadTail)
	}
	b.WriteString(l.close)
	text := b.String()
	if o.MaxBytes <= 0 || len(text) <= o.MaxBytes {
		return Result{Text: text, Running: len(running), Unread: len(unread)}
	}

	// Over budget: choose the entries to keep and put them together again.
	entry := func(i int) string { return text[spans[i].start:spans[i].end] }
	root := rootOf(running, unread)
	p := plan{l: l, root: root, nRun: len(running), keep: make([]bool, len(spans))}
	for i := range p.keep {
		p.keep[i] = true
		p.add(i, len(entry(i)), 1)
	}
	p.fit(o.MaxBytes, entry)
	var out strings.Builder
	out.Grow(p.size())
	out.WriteString(l.open)
	if p.keptRun > 0 {
		out.WriteString(l.runHead)
		for i := 0; i < p.nRun; i++ {
			if p.keep[i] {
				out.WriteString(entry(i))
			}
		}
		out.WriteString(l.runTail)
	}
	if p.keptUnread > 0 {
		out.WriteString(l.unreadHead)
		for i := p.nRun; i < len(spans); i++ {
			if p.keep[i] {
				out.WriteString(entry(i))
			}
		}
		out.WriteString(l.unreadTail)
	}
	if p.omitted > 0 {
		out.WriteString(l.omission(p.omitted, root))
	}
	out.WriteString(l.close)
	return Result{Text: out.String(), Running: p.keptRun, Unread: p.keptUnread, Omitted: p.omitted}
}

// span is where one entry lies in the rendered text.
type span struct{ start, end int }

// estimate is a generous guess of the block's size, so that the builder
// grows once: fixed text per entry plus the fields that vary.
func estimate(running, unread []fsm.Delegation, o *Options) int {
	n := 512
	for i := range running {
		n += 160 + len(running[i].ID) + len(running[i].Agent) + min(len(running[i].Prompt), 4*PromptCut+8)
	}
	for i := range unread {
		d := &unread[i]
		n += 256 + 2*len(d.ID) + len(d.Title) + len(d.Description) + len(o.DataDir) + len(d.ProjectID) + len(d.RootSessionID)
	}
	return n
}

// plan decides which entries fit the budget. Counts and sizes are kept as
// running sums so that a drop costs O(1).
type plan struct {
	l                     *layout
	root                  string
	nRun                  int    // entries [0, nRun) are running, the rest unread
	keep                  []bool // entry i is shown
	keptRun, keptUnread   int
	runBytes, unreadBytes int // bytes of the kept entries
	omitted               int
}

// add counts entry i, of n bytes, in (sign 1) or out (sign -1).
func (p *plan) add(i, n, sign int) {
	if i < p.nRun {
		p.keptRun += sign
		p.runBytes += sign * n
	} else {
		p.keptUnread += sign
		p.unreadBytes += sign * n
	}
}

// size is the length of the text the plan renders.
func (p *plan) size() int {
	n := len(p.l.open) + len(p.l.close)
	if p.keptRun > 0 {
		n += len(p.l.runHead) + p.runBytes + len(p.l.runTail)
	}
	if p.keptUnread > 0 {
		n += len(p.l.unreadHead) + p.unreadBytes + len(p.l.unreadTail)
	}
	if p.omitted > 0 {
		n += len(p.l.omission(p.omitted, p.root))
	}
	return n
}

// drop leaves entry i, of n bytes, out.
func (p *plan) drop(i, n int) {
	p.keep[i] = false
	p.omitted++
	p.add(i, n, -1)
}

// fit drops entries until the text fits max bytes or none is left. First
// goes every entry that could not fit even alone (with its section's frame
// and the line omitting all the others): it fits in no choice. Then the
// oldest first: unread entries from the last (oldest completion) to the
// first, then running entries from the first (oldest registration) on.
func (p *plan) fit(max int, entry func(int) string) {
	total := len(p.keep)
	alone := len(p.l.open) + len(p.l.close)
	if total > 1 {
		alone += len(p.l.omission(total-1, p.root))
	}
	for i := range p.keep {
		n := len(entry(i))
		frame := len(p.l.unreadHead) + len(p.l.unreadTail)
		if i < p.nRun {
			frame = len(p.l.runHead) + len(p.l.runTail)
		}
		if alone+frame+n > max {
			p.drop(i, n)
		}
	}
	for k := 0; k < total && p.size() > max; k++ {
		i := total - 1 - k // unread, oldest first
		if k >= total-p.nRun {
			i = k - (total - p.nRun) // then running, oldest first
		}
		if p.keep[i] {
			p.drop(i, len(entry(i)))
		}
	}
}

// rootOf is the root session of the entries, for the omission line.
func rootOf(running, unread []fsm.Delegation) string {
	for i := range running {
		if running[i].RootSessionID != "" {
			return running[i].RootSessionID
		}
	}
	for i := range unread {
		if unread[i].RootSessionID != "" {
			return unread[i].RootSessionID
		}
	}
	return ""
}

// layout is one variant's fixed text and entry renderers.
type layout struct {
	open, close            string
	runHead, runTail       string
	unreadHead, unreadTail string
	running, unread        func(b *strings.Builder, d *fsm.Delegation, o *Options)
	omissionTail           string // after the omission sentence
}

// omission is the line saying how many entries the budget left out and
// how to list them.
func (l *layout) omission(n int, root string) string {
	var b strings.Builder
	b.WriteString("> ")
	b.WriteString(strconv.Itoa(n))
	if n == 1 {
		b.WriteString(" more delegation not shown")
	} else {
		b.WriteString(" more delegations not shown")
	}
	b.WriteString(" (size budget); list them with `delegation_list()`")
	if root != "" {
		b.WriteString(" or `delegations list --root-session ")
		writeText(&b, root, 0, true)
		b.WriteString("`")
	}
	b.WriteString(".\n")
	b.WriteString(l.omissionTail)
	return b.String()
}

// The plugin's fixed texts (README "Compatibility with the background-agents plugin").
var fullLayout = layout{
	open:    "<delegation-context>\n",
	runHead: "## Running Delegations\n\n",
	runTail: "> **Note:** You WILL be notified via `<task-notification>` when delegations complete.\n" +
		"> Do NOT poll `delegation_list` - continue productive work.\n\n",
	unreadHead:   "## Unread Completed Delegations\n\n",
	unreadTail:   "> These are unread terminal delegations carried forward through compaction.\n\n",
	omissionTail: "\n",
	close: "## Retrieval\n" +
		"Use `delegation_read(\"id\")` to access full delegation output.\n" +
		"Do not poll delegation_list for completion; rely on task notifications.\n" +
		"</delegation-context>",
	running: fullRunning,
	unread:  fullUnread,
}

var briefLayout = layout{
	open:       "<delegation-context>\n",
	runHead:    "Running delegations (you will be notified when each finishes; do not poll delegation_list):\n",
	unreadHead: "Unread completed delegations (read each with delegation_read):\n",
	close:      "</delegation-context>",
	running:    briefRunning,
	unread:     briefUnread,
}

// fullRunning renders one running entry:
//
//	### `<id>` (<agent>)
//	**Started:** <ISO>
//	**Last heartbeat:** <ISO>
//	**Prompt:** <prompt cut to 200 characters, plus "..." when longer>
//	<blank line>
func fullRunning(b *strings.Builder, d *fsm.Delegation, _ *Options) {
	b.WriteString("### `")
	writeText(b, d.ID, 0, true)
	b.WriteString("`")
	writeAgent(b, d.Agent)
	b.WriteString("\n")
	started := d.StartedAt
	if started.IsZero() {
		started = d.CreatedAt
	}
	if !started.IsZero() {
		b.WriteString("**Started:** ")
		writeTime(b, started)
		b.WriteString("\n")
	}
	beat := d.LastHeartbeatAt
	if beat.IsZero() {
		beat = d.LastUpdateAt
	}
	if !beat.IsZero() {
		b.WriteString("**Last heartbeat:** ")
		writeTime(b, beat)
		b.WriteString("\n")
	}
	if hasText(d.Prompt) {
		b.WriteString("**Prompt:** ")
		writeText(b, d.Prompt, PromptCut, false)
		b.WriteString("\n")
	}
	b.WriteString("\n")
}

// fullUnread renders one unread entry:
//
//	### <emoji> `<id>`
//	**Title:** <title or "(no title)">
//	**Status:** <status>
//	**Description:** <description or "(no description)">
//	**Completed:** <ISO>
//	**Retrieve:** `delegation_read("<id>")`
//	**Artifact:** <DataDir>/<projectId>/<rootSessionID>/<id>.md
//	<blank line>
func fullUnread(b *strings.Builder, d *fsm.Delegation, o *Options) {
	b.WriteString("### ")
	b.WriteString(emoji(d.State))
	b.WriteString(" `")
	writeText(b, d.ID, 0, true)
	b.WriteString("`\n**Title:** ")
	if !writeText(b, d.Title, 0, false) {
		b.WriteString("(no title)")
	}
	b.WriteString("\n**Status:** ")
	writeText(b, string(d.State), 0, false)
	b.WriteString("\n**Description:** ")
	if !writeText(b, d.Description, 0, false) {
		b.WriteString("(no description)")
	}
	b.WriteString("\n")
	if !d.CompletedAt.IsZero() {
		b.WriteString("**Completed:** ")
		writeTime(b, d.CompletedAt)
		b.WriteString("\n")
	}
	b.WriteString("**Retrieve:** `delegation_read(\"")
	writeText(b, d.ID, 0, true)
	b.WriteString("\")`\n")
	if rel := artifactRel(d, o.DataDir); rel != "" {
		b.WriteString("**Artifact:** ")
		writePath(b, o.DataDir, rel)
		b.WriteString("\n")
	}
	b.WriteString("\n")
}

// briefRunning renders "- `<id>` (<agent>) <status>: <prompt cut to 80>".
func briefRunning(b *strings.Builder, d *fsm.Delegation, _ *Options) {
	b.WriteString("- `")
	writeText(b, d.ID, 0, true)
	b.WriteString("`")
	writeAgent(b, d.Agent)
	b.WriteString(" ")
	writeText(b, string(d.State), 0, false)
	if hasText(d.Prompt) {
		b.WriteString(": ")
		writeText(b, d.Prompt, BriefCut, false)
	}
	b.WriteString("\n")
}

// briefUnread renders "- <emoji> `<id>` (<agent>) <status>: <title>; read
// with `delegation_read("<id>")` or <artifact path>".
func briefUnread(b *strings.Builder, d *fsm.Delegation, o *Options) {
	b.WriteString("- ")
	b.WriteString(emoji(d.State))
	b.WriteString(" `")
	writeText(b, d.ID, 0, true)
	b.WriteString("`")
	writeAgent(b, d.Agent)
	b.WriteString(" ")
	writeText(b, string(d.State), 0, false)
	b.WriteString(": ")
	if !writeText(b, d.Title, BriefCut, false) {
		b.WriteString("(no title)")
	}
	b.WriteString("; read with `delegation_read(\"")
	writeText(b, d.ID, 0, true)
	b.WriteString("\")`")
	if rel := artifactRel(d, o.DataDir); rel != "" {
		b.WriteString(" or ")
		writePath(b, o.DataDir, rel)
	}
	b.WriteString("\n")
}

// writeAgent writes " (<agent>)", or nothing for a blank agent.
func writeAgent(b *strings.Builder, agent string) {
	if !hasText(agent) {
		return
	}
	b.WriteString(" (")
	writeText(b, agent, 0, false)
	b.WriteString(")")
}

// emoji is the plugin's status mark; anything but complete, error and
// timeout gets cancelled's, as in the plugin.
func emoji(s fsm.State) string {
	switch s {
	case fsm.Complete:
		return "✅"
	case fsm.Error:
		return "❌"
	case fsm.Timeout:
		return "⏱️"
	}
	return "🚫"
}

// artifactRel is the artifact's path relative to dataDir, or "" when
// dataDir is unset or the record cannot name a path.
func artifactRel(d *fsm.Delegation, dataDir string) string {
	if dataDir == "" {
		return ""
	}
	rel, err := artifact.RelPath(d.ProjectID, d.RootSessionID, d.ID)
	if err != nil {
		return ""
	}
	return rel
}

// writePath writes dir joined with rel, as inert text.
func writePath(b *strings.Builder, dir, rel string) {
	writeText(b, dir, 0, false)
	if !strings.HasSuffix(dir, string(filepath.Separator)) {
		b.WriteByte(filepath.Separator)
	}
	writeText(b, rel, 0, false)
}

// writeTime writes t as fsm.FormatTime does (2026-11-21T10:38:45.282Z),
// the zero time included, without allocating.
func writeTime(b *strings.Builder, t time.Time) {
	var buf [32]byte
	b.Write(t.UTC().AppendFormat(buf[:0], fsm.TimeLayout))
}

// blank reports whether r is written as (part of) one space: white space,
// line breaks of every kind, and control characters.
func blank(r rune) bool {
	if r < utf8.RuneSelf {
		return r <= ' ' || r == 0x7f
	}
	return unicode.IsSpace(r) || unicode.IsControl(r)
}

// hasText reports whether writeText would write anything for s.
func hasText(s string) bool {
	for _, r := range s {
		if !blank(r) {
			return true
		}
	}
	return false
}

// writeText writes s as one line of inert text (artifact.TagEscaper says
// why the rule is the notifications' and more): runs of blank runes become
// one space and the ends are trimmed; "&", "<" and ">" are escaped by
// artifact.TagEscaper; a backtick becomes "'" (and, with code, a double
// quote too); invalid UTF-8 becomes U+FFFD. With max > 0 at most max characters of the one-line text
// are written, followed by "..." when there were more. It reports whether
// it wrote anything. Runs of plain ASCII are copied whole: the common case
// costs a byte scan and one copy.
func writeText(b *strings.Builder, s string, max int, code bool) bool {
	n, space := 0, false
	// flush writes a pending space; false means the cut was reached and
	// "..." written instead.
	flush := func() bool {
		if !space {
			return true
		}
		space = false
		if max > 0 && n+1 >= max {
			b.WriteString("...")
			return false
		}
		b.WriteByte(' ')
		n++
		return true
	}
	for i := 0; i < len(s); {
		if plain(s[i]) {
			j := i + 1
			for j < len(s) && plain(s[j]) {
				j++
			}
			if !flush() {
				return true
			}
			run := s[i:j]
			if max > 0 && n+len(run) > max {
				b.WriteString(run[:max-n])
				b.WriteString("...")
				return true
			}
			b.WriteString(run)
			n += len(run)
			i = j
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:]) // an invalid byte is utf8.RuneError, U+FFFD
		i += size
		if blank(r) {
			space = n > 0
			continue
		}
		if !flush() {
			return true
		}
		if max > 0 && n >= max {
			b.WriteString("...")
			return true
		}
		switch {
		case r == '`' || r == '"' && code:
			b.WriteByte('\'')
		case r < utf8.RuneSelf:
			artifact.TagEscaper.WriteString(b, s[i-size:i])
		default:
			b.WriteRune(r)
		}
		n++
	}
	return n > 0
}

// plain reports whether c is printable ASCII that writeText copies as it
// is: not a space, not a backtick or double quote, and not escaped by
// artifact.TagEscaper.
func plain(c byte) bool { return plainBytes[c] }

var plainBytes = func() (t [256]bool) {
	for c := byte('!'); c < 0x7f; c++ {
		t[c] = c != '`' && c != '"' && artifact.TagEscaper.Replace(string(c)) == string(c)
	}
	return t
}()
