// Package eventlog is an append-only, durable event log in one bbolt file.
// It knows nothing about what the events mean: a record is a kind number, a
// stream id, a time and an opaque payload, stored under a sequence number
// that runs from 1 without gaps.
//
// The nouns are few: a Log, which takes an Append (entries for one stream)
// and returns a Result; a Record, read back with Records, Stream or a Tx;
// and a Projector, which keeps views in step with the records inside the
// same transaction.
//
// Every append is durable when Append returns: concurrent appends are
// gathered by one writer goroutine into a single bbolt commit (group
// commit), so many appenders pay for one pair of fdatasyncs. An append can
// carry an idempotency key (a retry returns the first result and writes
// nothing) and an expected stream version (a mismatch is a *ConflictError
// and writes nothing). Every record carries an xxhash64 checksum over its
// sequence number and contents, checked on every read; Verify checks the
// whole file and its indexes.
//
// A payload longer than InlineLen is stored in chunks of at most ChunkLen
// bytes, in a bucket of its own, written in the same commit as its record
// and each with its checksum in the record (chunks.go): bbolt writes a
// whole leaf
// again whenever a key in it changes, so a large payload kept in the
// events bucket's last leaf would be written again by every append after
// it. A record costs its own bytes once, whatever its size, and no stored
// value is larger than a chunk.
//
// A Log can also be the local replica of a log several processes share
// (Options.Upstream, upstream.go; eventlog/etcdlog keeps one in etcd):
// appends go upstream, which decides them, and a follower goroutine
// applies the shared log's records to the file through the same write
// path, projectors included, so readers see what a single-file log would
// hold. Append returns once the file holds the append's records.
//
// # Caveats
//
//   - Nothing is ever updated or deleted: the package has no way to do it.
//     Views are the only mutable state, and they belong to projectors.
//   - After a commit error the outcome of that commit is unknown. The log
//     then refuses every append with ErrBroken until it is closed and
//     reopened; retry with the same idempotency key to learn what happened.
//   - A Projector runs inside the write transaction. It must be
//     deterministic and do no I/O, and an error from it drops the append
//     that produced the records. Work with side effects (files,
//     notifications) belongs after the commit: use Wait to learn of it.
//   - Checks (idempotency, expected version) run inside the writer's own
//     transaction, which bbolt never re-runs; callers decide what to append
//     (guards, validation) before calling Append.
//   - Only one process can write the file; readers (Options.ReadOnly) share
//     it with each other. Open waits Options.LockTimeout for the lock and
//     then fails with ErrLocked.
//   - bbolt trusts its pages: a damaged file makes it panic, fault (SIGSEGV
//     or SIGBUS, beyond recover unless debug.SetPanicOnFault is set in that
//     goroutine), allocate without bound, or plant a pointer that kills the
//     garbage collector. So Open reads the file itself first (pages.go,
//     with bounds checks and no trust): a writer checks every page and
//     refuses a damaged file with a *DamageError, since writing through
//     damage turns it into lost records; a reader checks what bbolt reads
//     before any record, in constant time. Every call that touches pages
//     runs under guard, which turns a panic or fault into a *DamageError.
//     Writer opens therefore cost a read of the whole file (about 170 ms
//     per million records); reader opens do not.
//   - Salvage and Restore are the recovery: every record that passes its
//     checksum (and whose chunks all pass theirs), found without trusting
//     the tree, written into a new log. A chunk that is missing or damaged
//     loses its record, as damage to the record itself would; a chunk of
//     another payload with the same key (a failed commit's) is never
//     taken for the record's, and is reported.
//     Sequence numbers have no gaps, so records after a lost one are
//     renumbered.
//   - On a replica, a projector's error cannot drop the record: it is
//     committed upstream. The follower stops there, appends fail with
//     ErrBroken naming the cause, and opening the file again fails the
//     same way until the projector accepts the record. A replica's file
//     is bound to its upstream's ID: another upstream, or a writer with
//     none, is refused (ErrReplica), since its records would diverge from
//     the shared log's; readers may open it. Reads are as fresh as the
//     follower (Sync waits for the upstream's head); appends never act on
//     stale reads unnoticed, since the upstream checks expected versions.
//   - Verify reads in rounds of short read transactions (a few thousand
//     entries or 5 ms each) that resume by key, so a writer beside it is
//     held a few milliseconds at most and freed pages are reused. On a log
//     appended to meanwhile it is exact for the records up to the last one
//     when it starts, and for the index entries naming them; later entries
//     are skipped, or checked only as far as one round can. Its page walk
//     holds no transaction on a writable log and is trusted when it finds nothing or no commit ran during it;
//     damage found while commits ran is checked again inside a read
//     transaction, which then holds a writer's growth for the walk (about
//     20 ms per 100,000 records). Memory does not grow with the log.
//   - Values read through a Tx's view buckets are valid only inside the
//     transaction; Records returned by the package own their memory.
package eventlog
