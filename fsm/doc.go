// Package fsm is the pure lifecycle of a background delegation: its states,
// the events that move it, the guard that turns a command into events
// (Decide), the fold that turns events into a record (Evolve), and the
// binary payload codec the event log stores.
//
// A delegation moves registered → running → exactly one of complete, error,
// cancelled or timeout. The store drives it in three steps:
//
//	events, err := fsm.Decide(current, cmd, cfg) // guard: no I/O
//	// append events to the log (even when err is a *TransitionError)
//	next := fsm.Fold(history...)                  // or Evolve one event at a time
//
// The package does no I/O, reads no clock and draws no randomness of its
// own: times come in on commands, and ids come from an IDGenerator over an
// injected reader. The same events always fold to the same record, which is
// what makes the log replayable.
//
// The lifecycle rules are one github.com/looplab/fsm table (lifecycle in
// fsm.go, checked with Can on a fresh FSM); the rest is plain Go so that
// replay stays at millions of events per second.
//
// # Caveats
//
//   - Kind numbers and payload tags are stored on disk. Never renumber or
//     reuse one; only append. A payload starts with a format version byte;
//     readers skip tags they do not know, so add fields as new tags rather
//     than changing an old one's meaning.
//   - Decide refuses a late command on a terminal delegation with a
//     *TransitionError (errors.Is ErrTerminal) and also returns one rejected
//     event. Append that event: rejections are history, and Version counts
//     them. A repeat of the very command that ended the delegation returns
//     no events and no error.
//   - Evolve does not validate: it trusts the log. It never panics, and it
//     keeps terminal states final even for a log that breaks the rules.
//   - Version counts every event applied, of every kind including rejected
//     and unknown ones, so it equals the stream version in the log. Fold
//     the whole stream or the expected-version check will not match.
//   - Strings decoded by UnmarshalPayload share one copy of the payload;
//     holding any one field keeps that copy alive.
//   - Decide fills a fallback title and description from the result text
//     (as the plugin does) when the caller gives none; titles may still
//     contain line breaks when a caller supplies them, so renderers must
//     escape.
//   - A cancel's reason is kept as the record's Error, as the plugin does.
//   - Do not call Event on a looplab/fsm FSM: it wedges forever on a
//     cancelled context, and a repeated terminal event is an error there.
package fsm
