package eventlog

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	bolt "go.etcd.io/bbolt"
)

// Backup writes a consistent copy of the log to path, which must not
// exist, from one read transaction: appends go on meanwhile and are not in
// the copy. The copy is written beside path under a temporary name, synced,
// then linked into place (so an existing file is never overwritten and a
// crash never leaves half a backup at path), and the directory is synced.
// It returns the size of the copy.
func (l *Log) Backup(path string) (int64, error) {
	if l.isClosed() {
		return 0, ErrClosed
	}
	dir := filepath.Dir(path)
	if _, err := os.Lstat(path); err == nil {
		return 0, fmt.Errorf("backup to %s: %w", path, fs.ErrExist)
	}
	tmp, err := os.CreateTemp(dir, ".backup-*.tmp")
	if err != nil {
		return 0, fmt.Errorf("backup to %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	if err := tmp.Chmod(0o600); err != nil {
		return 0, fmt.Errorf("backup to %s: %w", path, err)
	}
	var n int64
	err = guard("backup", func() error {
		return l.db.View(func(tx *bolt.Tx) error {
			var err error
			n, err = tx.WriteTo(tmp)
			return err
		})
	})
	if err == nil {
		err = tmp.Sync()
	}
	if err == nil {
		err = tmp.Close()
	}
	if err == nil {
		err = os.Link(tmp.Name(), path) // fails if path exists
	}
	if err == nil {
		err = syncDir(dir)
	}
	if err != nil {
		return 0, fmt.Errorf("backup to %s: %w", path, err)
	}
	return n, nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// restoreChunk is how many records Restore writes per transaction.
const restoreChunk = 4096

// RestoreResult says how Restore wrote the records.
type RestoreResult struct {
	// Renumbered maps the old sequence number of every record whose number
	// changed to its new one (records after a gap move down).
	Renumbered map[uint64]uint64
	// KeysDropped counts records appended without their idempotency key
	// because an earlier, non-adjacent append already holds it.
	KeysDropped int
}

// Restore writes recs, in order, as a new log at path, which must not exist
// (the recovery of a damaged log: Salvage, then Restore, then swap the
// files). Sequence numbers run from 1 without gaps in every log, so a
// record keeps its number only if none before it is missing; the rest are
// renumbered, and RestoreResult says how. Adjacent records of one stream
// with the same idempotency key are appended together, as they were
// written, so the key covers them again; the stream index and the
// idempotency index are rebuilt from the records. Records are written in
// large transactions, durably, with no projectors: open the result with
// Options.Rebuild (or a projector that is behind) to build the views.
func Restore(path string, recs []Record) (*RestoreResult, error) {
	if _, err := os.Lstat(path); err == nil {
		return nil, fmt.Errorf("restore to %s: %w", path, fs.ErrExist)
	}
	l, err := Open(path, Options{})
	if err != nil {
		return nil, err
	}
	res := &RestoreResult{Renumbered: map[uint64]uint64{}}
	var last uint64
	for len(recs) > 0 {
		n := min(len(recs), restoreChunk)
		// Do not split an append across transactions.
		for n < len(recs) && sameAppend(recs[n-1], recs[n]) {
			n++
		}
		chunk := recs[:n]
		recs = recs[n:]
		err := l.db.Update(func(tx *bolt.Tx) error {
			w := newWriteTx(tx)
			for i := 0; i < len(chunk); {
				j := i + 1
				for j < len(chunk) && sameAppend(chunk[j-1], chunk[j]) {
					j++
				}
				group := chunk[i:j]
				r := &request{app: Append{Stream: group[0].Stream, Key: group[0].Key}}
				for _, rec := range group {
					r.app.Entries = append(r.app.Entries, Entry{Kind: rec.Kind, Time: rec.Time, Payload: rec.Payload})
				}
				if err := validate(r.app); err != nil {
					return fmt.Errorf("record %d: %w", group[0].Seq, err)
				}
				written, err := w.apply(r, last)
				if err != nil {
					return err
				}
				if len(written) == 0 { // the key is taken: keep the records, drop the key
					r.app.Key = ""
					res.KeysDropped += len(group)
					if written, err = w.apply(r, last); err != nil {
						return err
					}
				}
				for k, rec := range group {
					if written[k].Seq != rec.Seq {
						res.Renumbered[rec.Seq] = written[k].Seq
					}
				}
				last = written[len(written)-1].Seq
				i = j
			}
			return nil
		})
		if err != nil {
			l.Close()
			return nil, fmt.Errorf("restore to %s: %w", path, err)
		}
	}
	l.last.Store(last)
	if err := l.Close(); err != nil {
		return nil, err
	}
	return res, nil
}

func sameAppend(a, b Record) bool {
	return a.Key != "" && a.Key == b.Key && a.Stream == b.Stream && b.Seq == a.Seq+1
}
