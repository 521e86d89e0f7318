// Package etcdlog is the event log of package eventlog kept in etcd instead
// of a bbolt file: the same Append, Result and Record, the same checks and
// errors, the same record bytes, so that several processes on several
// machines can share one log. etcd replicates it (Raft) and answers a
// write once a quorum of its members has it on disk.
//
// # Keys
//
// Everything lives under a prefix P (Options.Prefix, "/delegations/" by
// default). Small values are decimal text, so that etcdctl shows them:
//
//	P/id                       the log's id, random, written by the first Open
//	P/head                     last sequence number
//	P/r/<seq, 16 hex digits>   the record, in eventlog's encoding
//	P/s/<stream>               the stream's version (its number of records)
//	P/x/<stream>\x00<version>  "first last": the records of one append to
//	                           the stream, version being the stream's
//	                           version before it (16 hex digits)
//	P/k/<key>                  "first last": the result of the append that
//	                           carried the idempotency key
//	P/c/<id>/<n>               chunk n of a large payload (id: 16 hex digits)
//	P/daemons/<daemon id>      a daemon sharing the log, bound to its lease
//	                           ("pid N on HOST"; see Presence)
//
// A stream id cannot hold a NUL byte, so P/x/<stream>\x00 is a prefix of
// that stream's index entries and of no other stream's.
//
// # Appends
//
// One writer goroutine per Log gathers concurrent appends (group commit)
// into one etcd transaction per batch. The transaction compares P/head's
// revision (so that several writers on one etcd keep the sequence
// contiguous), the version of every stream in the batch and the absence of
// every idempotency key, then puts the records, index entries, stream
// versions, keys and the new head. When a comparison fails, the same
// transaction's else branch reads the head, the streams and the keys; the
// writer answers the appends that now conflict or are duplicates and
// retries the rest. Nothing is answered before the transaction that
// decides it has committed, so an appender never gets a wrong answer, and
// a transaction is atomic, so nothing is half-written. A batch respects
// etcd's limits on operations per transaction (--max-txn-ops) and request
// size (--max-request-bytes), given in Options.
//
// A payload that would make an append too large for one request is stored
// in chunks (P/c/...), each put in its own request by the appender before
// the append is queued; the record then holds a reference: the chunks' id,
// count, total size and xxhash64. Reads check all three: a missing or
// damaged chunk is a *eventlog.CorruptError for that record. A chunked
// record's checksum is computed over its sequence number with the top bit
// set, so a reference can never be read as a payload nor the reverse.
// Chunks of an append that is known not to have been written (conflict,
// duplicate, cancelled before it was taken) are deleted; those of an
// append whose outcome is unknown (etcd did not answer) are kept, since
// the record may reference them. They cost space, never correctness.
//
// # Reads
//
// Records reads pages of records by key range; Stream reads the stream's
// index entries and then its records; Last and Wait follow P/head through
// a watch that resumes from the last revision it saw after a disconnect,
// and rereads the head if etcd compacted that revision. Tail combines them:
// it reads by sequence number, so a follower never skips nor repeats a
// record, whatever happens to the watch.
//
// # Caveats
//
//   - Every call to etcd has a deadline (Options.RequestTimeout). Without
//     a quorum, an append fails with ErrUnavailable: it may or may not have
//     been written; retry with the same idempotency key once etcd is back.
//     Unlike a bbolt log, nothing needs reopening: the next transaction
//     compares the head and learns what happened.
//   - An append holds at most Options.MaxTxnOps-4 entries (124 with etcd's
//     default of 128 operations per transaction): its records, stream
//     version, index entry, key and the head go in one transaction.
//   - Last is what this process has seen: its own commits and the head as
//     the watch reports it. Records and Stream read from etcd (linearizable
//     reads) and may see further.
//   - There are no projectors: views over an etcd log are built by tailing.
//   - The log never deletes a record, and etcd keeps every key in its own
//     bbolt file, whose size its --quota-backend-bytes caps (2 GiB by
//     default; past it etcd refuses writes). Each append also rewrites the
//     head and the stream's version, so etcd needs compaction
//     (--auto-compaction-retention) to drop their old revisions; the
//     watch copes with it.
package etcdlog
