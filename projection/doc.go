// Package projection is the store: the commands of the delegation
// lifecycle, decided by package fsm and appended to the event log, and the
// views that answer every question about them, kept by a projector in the
// same bbolt transaction as the events they derive from.
//
// The data flow of one command: a Store method validates its input, loads
// the delegation's record from the records view, asks fsm to decide the
// events, and appends them (with the stream's expected version, so a
// concurrent command that got there first is a conflict to decide
// again); the projector folds the events into the views inside the commit.
// A terminal command writes its artifact file (package artifact) while it
// appends its events, and records the persisted event only once the file
// is durable: in the same commit, which waits for the file, or, for a
// large artifact, in a second one (Store.end). That is when the
// notification enters the outbox (persist before notify); an artifact that
// could not be written is retried, and the notification waits for it.
// Readers (list, read, compaction, the status page) read the views; Wait and the read watches learn of new commits from the log.
//
// When several daemons share one log (Options.Peers), each delegation has
// an owner, recorded in the log, which alone enforces its deadline, writes
// its artifact and serves its notifications; a daemon that is gone has
// its delegations taken over (owner.go). Without Peers the store owns
// everything.
//
// Views (records, texts, roots, parents, running, unread, deadlines,
// pending, cycles, members, outbox, due) are never the source of truth:
// Open rebuilds them from the log when their version changes or they are
// missing, and replay compares them with the log.
//
// Sub-packages hold what the store uses but does not own: package
// artifact (the plugin's text formats and the atomic writer of artifact
// files) and package projectid (the OpenCode project id of a directory,
// which runs git).
package projection
