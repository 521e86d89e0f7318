// Package replay answers "where did my result go" from the event log alone.
//
// Run re-applies the whole log through fsm.Evolve into fresh state in
// memory, checks the artifact files on disk, and returns a Report:
// findings per delegation, each with a stable code, a severity, a
// plain-language diagnosis (what happened, which step did not happen,
// what to run next) and the sequence numbers involved. Verify runs the
// integrity checks (records, indexes, views, artifacts): it rebuilds the
// views with the store's projector and compares them with the views the
// store keeps, and leaves out the lifecycle. Rebuild regenerates views and
// artifacts from the log and reports before and after with both. ReadTimeline lists every
// event of one delegation, refused ones included, with the gaps between
// steps. Diagnose gives Run's findings about one delegation from its own
// events, without the whole log's checks (the status page uses it).
//
// A delegation's steps are registered → (started, progressed) → a terminal
// event → persisted (artifact written) → notified (the bridge acknowledged
// the terminal notification) → read. Replay names the first step that did
// not happen:
//
//	code                      severity          meaning
//	not_persisted             error             terminal, but the artifact was never written
//	artifact_missing          error             persisted, but the file is gone
//	artifact_changed          error             persisted, but the file differs (size or xxhash)
//	artifact_unreadable       error             persisted, but the file cannot be read
//	artifact_not_reproducible info              the record no longer renders to the persisted bytes
//	not_notified              info, then error  persisted, the notification not acknowledged (error once older than Stale)
//	all_complete_not_notified info, then error  a cycle's all-complete not acknowledged (error once older than Stale)
//	unread                    info              notified, never read since it completed
//	overdue                   info, then error  active past its deadline (error once past DeadlineGrace)
//	late_result               warning           a completion arrived after the delegation had ended otherwise: refused, never delivered
//	late_events               info              other commands refused after the terminal state
//	corrupt_record            error             records that fail their checksum or are missing
//	bad_payload               error             a record whose payload does not decode
//	unknown_kinds             info              event kinds this build does not know (a newer build wrote them)
//	views_behind              warning           the views have not caught up with the log (error if ahead of it) (Verify)
//	view_mismatch             error             a view disagrees with the log (Verify)
//	index_corrupt             error             the log's own indexes disagree with its records (Verify)
//
// Severities: "error" means a step did not happen or something is damaged;
// "warning" means nothing is damaged but a result may be lost to the user;
// "info" is the normal life of a store worth knowing when hunting for a
// result (a fresh notification waiting for the bridge, an unread result).
// Report.Failed is true when there is an error or a warning: the CLI exits
// 1 then, so a healthy store with unread results still exits 0.
//
// # Caveats
//
//   - projection.Open finishes interrupted work (it persists pending
//     artifacts) before anything can be replayed. To observe a data
//     directory exactly as it is, pass Run the log opened alone:
//     eventlog.Open(filepath.Join(dir, projection.LogFile), ...) with no
//     projectors, which catches nothing up and writes nothing.
//   - Run folds the log alone: the lifecycle of every delegation, the
//     all-complete cycles of the parent sessions (fsm.Cycle, counted at the
//     same steps as the store's projection) and the artifacts. It reads the
//     log in short read transactions, in a goroutine a batch ahead of the
//     fold, and checks each artifact when its persisted event is applied,
//     in two workers beside the fold: the file against the size and hash
//     the event recorded (read with four system calls, the session
//     directories kept open, on Linux), the record's rendering against
//     them. Reading the files costs more than the fold.
//   - Memory: replay keeps a delegation only while it may still produce a
//     finding: active, ended and not persisted, not notified, unread, with
//     a refused command or a payload that does not decode. One that is
//     settled (ended, persisted, notified and read, or imported) is
//     dropped; a later event of it (a late command, a second read) folds
//     its stream again from the log's stream index. A parent session keeps
//     its cycle (a few numbers) and its waiting all-complete notification.
//     The reading holds a few batches of records, the artifact checks at
//     most 256 records waiting with their texts. A report lists at most
//     1,000 findings of each code, the first in the report's order, and
//     counts the others (Report.Unlisted; the counts by severity include
//     them), keeping of each only its delegation, the check's sequence
//     number and its severity: a store whose artifact directory is gone
//     has a finding per delegation, and 100,000 missing artifacts took 507
//     MiB to verify when each was listed, 220 MiB since.
//   - Views are checked by Verify (and Rebuild) by rebuilding them: the
//     records go, besides the fold, to the store's own projector
//     (projection.ViewsProjector), which writes the views into a scratch
//     file (eventlog.Scratch, without fsync, removed afterwards; in the
//     data directory, or the temporary directory when that is not
//     writable). The rebuilt views are then compared with the live ones
//     entry by entry, both walked in key order, so a view's layout is
//     compared byte for byte whatever it is, and the words of a finding
//     (which view, which delegation or parent, what the entry holds
//     against what the log says) come from decoding the two entries and
//     the delegation's replayed state (folded again from its stream if the
//     fold dropped it). The views' rules are the projector's alone;
//     projection's model-based test checks them independently.
//   - The views are compared in rounds of a few thousand entries, each in
//     a short read transaction of the live file: a running verify keeps no
//     writer waiting for bbolt's remap and no freed page from reuse.
//     Before each round the records committed since the last one are
//     applied to the fold and the rebuild, so each round compares both at
//     the live transaction's point: on a live store, a mismatch is one the
//     log cannot explain at that point.
//   - The rebuild runs the store's projector over the whole log: it is
//     most of the cost of verify (about 130,000 events per second of one
//     core), and the scratch file is about the size of the views. It holds
//     a batch of 4 MiB and its write transaction.
//   - Verify first runs eventlog.Log.Verify, which checks the file's
//     structure and the log's indexes in rounds of short read transactions.
//   - Views are compared only for a verify of the whole log. Artifacts are
//     checked either way (a file is written once).
//   - A record the store's projector refuses (a payload that does not
//     decode) is stepped over in the rebuild, and the views are then not
//     compared: the store could not have projected it.
//   - Imported delegations (legacy plugin files, see projection.Import) are
//     persisted with the file as it is and never notified: replay does not
//     report them as not notified, and checks their file by its recorded
//     hash only, since a legacy file is not the store's rendering. Rebuild
//     cannot regenerate a lost legacy file.
//   - A damaged record is reported with its sequence number and replay
//     goes on after it, so the delegation it belonged to replays without
//     that event and may show further findings. Its owner is named from
//     the stream index: a delegation whose stream holds more records than
//     it replayed; for the delegations the fold dropped, the log is read
//     again for their registrations (only when a record is damaged).
//     Rebuild cannot get past a damaged record: restore the log file from
//     a backup.
//   - A delegation whose registered event is not in the log (a recovery
//     of a damaged log kept its later, intact events) replays from its
//     first surviving event; the views keep only its record, since it
//     names no root, parent or deadline to index it under.
//   - Rebuild needs the data directory to itself: close the store (stop
//     the daemon) first; it opens the log twice, with the lock timeout given.
//   - The library never prints; progress goes to an optional callback.
package replay
