// Package compaction renders what a compacted conversation must carry about
// its delegations: the <delegation-context> block of the OpenCode
// background-agents plugin (README "Compatibility with the background-agents
// plugin"), and a shorter per-turn variant for a system prompt.
//
// It is pure rendering: no I/O, no clock. Feed it what
// projection.Store.Carried returns (running delegations in registration
// order, unread ones newest completion first):
//
//	running, unread, err := store.Carried(root, compaction.DefaultMaxUnread)
//	block := compaction.Block(running, unread, compaction.Options{DataDir: store.Dir()})
//
// Render does the same and also says how many entries were shown and how
// many the size budget left out; Block and Brief are thin wrappers.
//
// The block follows the plugin's layout byte for byte, with the
// improvements that README section lists:
//
//   - Text from outside (prompts, titles, descriptions, agents, even ids
//     and statuses) is written on one line: every run of white space or
//     control characters, line breaks included, becomes one space. So a
//     prompt holding "\n## Retrieval\n" cannot start a line, let alone a
//     section.
//   - "&", "<" and ">" in that text are HTML-escaped ("&amp;", "&lt;",
//     "&gt;") by artifact.TagEscaper, as in the task notifications, so
//     no text can close the block or forge a tag. Backticks become "'" so
//     that nothing breaks out of a code span, and in ids (which sit inside
//     `delegation_read("<id>")`) double quotes become "'" too. Invalid
//     UTF-8 becomes U+FFFD.
//   - Each unread entry names its artifact file, <DataDir>/<projectId>/
//     <rootSessionID>/<id>.md, on an **Artifact:** line after the
//     **Retrieve:** line: a second way to the result when the tool is not
//     at hand.
//   - A size budget (Options.MaxBytes): entries are dropped whole, never cut,
//     and a line says how many were left out and how to list them.
//
// # Caveats
//
//   - Prompts are cut to 200 characters after their white space is made one
//     line, so a prompt shows more of its text than the plugin's (which cuts
//     first and keeps the line breaks). Characters are runes; the plugin
//     counts UTF-16 units. Titles and descriptions are not cut.
//   - As in the plugin, a missing start time, heartbeat, completion time,
//     prompt or agent leaves its line (or the " (agent)" of a heading) out.
//     Started falls back to the creation time and Last heartbeat to the
//     last update, so a record from the store always has both.
//   - At most Options.MaxUnread unread entries are rendered (10 by
//     default); the ones past it are not counted as omitted, since the
//     caller usually never loaded them (Carried takes the same limit).
//   - Budget: the fixed skeleton (the tags, the Retrieval section and the
//     omission line) is never dropped. An entry that cannot fit even alone
//     beside the skeleton is dropped first; then entries go oldest first:
//     the oldest unread, ..., the newest unread, then the oldest running.
//     The output never exceeds MaxBytes when MaxBytes is at least the
//     skeleton's size (what a budget of 1 byte returns); below that the
//     skeleton with its omission line is returned anyway, over budget,
//     because an empty block would read as "nothing to carry" and the
//     model would forget its delegations exist.
//   - The artifact line needs Options.DataDir and a record whose project,
//     root session and id are valid path parts (every record the store
//     accepted); otherwise it is left out.
package compaction
