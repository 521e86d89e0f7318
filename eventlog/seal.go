package eventlog

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// A log moved to another store (delegations migrate --to etcd) stays in
// its file, a backup that readers (replay, inspect, verify, show) still
// open, but it must never be written again: a daemon serving it would
// accept commands that the store the log moved to never sees, and the two
// would diverge without a word. So once the copy is verified the file is
// sealed: one transaction records where the log went (metaMigrated) and
// sets sealedBit in the file's format byte, which keeps out the builds
// that do not know the key (formatbits.go). A writer's Open refuses a
// sealed file with a MigratedError.

// metaMigrated, in the meta bucket, holds a sealed log's Migrated (JSON).
var metaMigrated = []byte("migrated")

// Migrated records where a log was migrated to.
type Migrated struct {
	// To names the destination as a person gives it ("etcd
	// https://etcd1:2379 prefix /delegations/").
	To string `json:"to"`
	// Log is the destination log's id (for etcd, "etcd log <id> at
	// prefix <p>"): a log migrated back must be this one.
	Log string `json:"log"`
	// Records is how many records the file held, each copied and
	// verified there.
	Records uint64    `json:"records"`
	At      time.Time `json:"at"`
}

// ErrMigrated reports a write to a log that was migrated to another store.
var ErrMigrated = errors.New("the log was migrated to another store")

// MigratedError is ErrMigrated with where the log went.
type MigratedError struct{ Migrated }

func (e *MigratedError) Error() string {
	return fmt.Sprintf("this log was migrated to %s at %s (%s, its %d records verified there) and is kept only for reading: "+
		"serve the log with --etcd and --etcd-prefix on a new data directory, or bring it back with `delegations migrate --from etcd` here",
		e.To, e.At.UTC().Format(time.RFC3339), e.Log, e.Records)
}

func (e *MigratedError) Unwrap() error { return ErrMigrated }

// Migrated returns where a sealed log was migrated to, nil for any other.
func (t *Tx) Migrated() (*Migrated, error) {
	return migrated(t.tx)
}

func migrated(tx *bolt.Tx) (*Migrated, error) {
	meta := tx.Bucket(bucketMeta)
	if meta == nil {
		return nil, nil // a new file
	}
	v := meta.Get(metaMigrated)
	if v == nil && !formatFlag(meta, sealedBit) {
		return nil, nil
	}
	var m Migrated
	if err := json.Unmarshal(v, &m); err != nil {
		return nil, &DamageError{Page: NoPage, Reason: fmt.Sprintf("the log is marked migrated, but the record of where (%q) is unreadable: %v", clip(v), err)}
	}
	return &m, nil
}

// refuseSealed fails a writer's Open of a sealed log.
func (l *Log) refuseSealed() error {
	return l.db.View(func(tx *bolt.Tx) error {
		m, err := migrated(tx)
		if err != nil || m == nil {
			return err
		}
		return &MigratedError{*m}
	})
}

// Seal marks the log at path as migrated to m.To, in one transaction,
// once every one of its m.Records records is verified there: from then on
// a writer's Open refuses it, and readers still open it. It refuses a log
// that holds another number of records (it was written since the copy)
// and a replica's file. Sealing again for the same destination log does
// nothing, so that a migration run again after an interruption goes on;
// a log sealed for another is refused with its MigratedError. It takes
// the file's lock, waiting up to opts.LockTimeout.
func Seal(path string, m Migrated, opts Options) error {
	if opts.LockTimeout <= 0 {
		opts.LockTimeout = time.Second
	}
	val, err := json.Marshal(m)
	if err != nil {
		return err
	}
	var db *bolt.DB
	err = guard("seal", func() error {
		var err error
		db, err = bolt.Open(path, 0o600, &bolt.Options{Timeout: opts.LockTimeout, FreelistType: bolt.FreelistMapType, OpenFile: opts.OpenFile})
		return err
	})
	if errors.Is(err, berrors.ErrTimeout) {
		err = ErrLocked
	}
	if err != nil {
		return fmt.Errorf("seal log %s: %w", path, err)
	}
	err = guard("seal", func() error {
		return db.Update(func(tx *bolt.Tx) error {
			meta := tx.Bucket(bucketMeta)
			if meta == nil || tx.Bucket(bucketEvents) == nil {
				return &DamageError{Page: NoPage, Reason: "the meta or events bucket is missing"}
			}
			if err := knownFormat(meta.Get(metaFormat)); err != nil {
				return err
			}
			if up, _, err := replicaOf(meta); err != nil {
				return err
			} else if up != nil {
				return fmt.Errorf("%w %q: its log already lives there, and is not migrated", ErrReplica, up)
			}
			if last := (&Tx{tx: tx}).Last(); last != m.Records {
				return fmt.Errorf("the log holds %d records, not the %d copied: it was written since; migrate it again", last, m.Records)
			}
			prev, err := migrated(tx)
			switch {
			case err != nil:
				return err
			case prev != nil && prev.Log == m.Log && prev.Records == m.Records:
				return nil // sealed by an earlier run of this migration
			case prev != nil:
				return &MigratedError{*prev}
			}
			if err := meta.Put(metaMigrated, val); err != nil {
				return err
			}
			return setFormatFlag(meta, sealedBit)
		})
	})
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("seal log %s: %w", path, err)
	}
	return nil
}
