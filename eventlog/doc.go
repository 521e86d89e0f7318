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
//   - Only one process can hold the file. Open waits Options.LockTimeout
//     for the lock and then fails with ErrLocked.
//   - Values read through a Tx's view buckets are valid only inside the
//     transaction; Records returned by the package own their memory.
package eventlog
