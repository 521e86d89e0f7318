package eventlog

import (
	"fmt"
	"os"
	"slices"

	bolt "go.etcd.io/bbolt"
)

// Scratch is a throwaway file that projectors build views into from
// records read elsewhere: a tool that checks a log's views rebuilds them
// with the real projectors, away from the live file, and compares the two
// (replay). It holds no records: Tx.Last is 0 and Tx.Record fails in it.
// It is written without fsync, in transactions as large as the caller's
// batches; Close removes it.
type Scratch struct {
	db   *bolt.DB
	path string
	last uint64
}

// wideMmap is the initial mapping of a file that grows under a writer, the
// scratch file's and a log writer's: 16 GiB of address space on 64-bit
// platforms, 1 GiB on 32-bit ones.
const wideMmap = 1 << (30 + 4*(^uint(0)>>63))

// OpenScratch creates a scratch file in dir (os.TempDir() when empty).
func OpenScratch(dir string) (*Scratch, error) {
	if dir == "" {
		dir = os.TempDir()
	}
	f, err := os.CreateTemp(dir, ".scratch-views-*")
	if err != nil {
		return nil, fmt.Errorf("scratch file: %w", err)
	}
	path := f.Name()
	f.Close()
	opts := &bolt.Options{
		NoSync: true, NoGrowSync: true, NoFreelistSync: true, FreelistType: bolt.FreelistMapType,
		// Address space, not memory: growing the file then never remaps
		// it, and a remap in a write transaction copies every key and
		// value the transaction touched to the heap.
		InitialMmapSize: wideMmap,
	}
	db, err := bolt.Open(path, 0o600, opts)
	if err != nil {
		// A limit on address space (ulimit -v): map as the file grows.
		opts.InitialMmapSize = 0
		db, err = bolt.Open(path, 0o600, opts)
	}
	if err != nil {
		os.Remove(path)
		return nil, fmt.Errorf("scratch file %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, name := range [][]byte{bucketEvents, bucketViews, bucketCheckpoints} {
			if _, err := tx.CreateBucket(name); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		os.Remove(path)
		return nil, fmt.Errorf("scratch file %s: %w", path, err)
	}
	// Unlinked at once where the system allows it (the open file lives
	// on): a process killed meanwhile leaves nothing behind.
	if os.Remove(path) == nil {
		path = ""
	}
	return &Scratch{db: db, path: path}, nil
}

// Project runs p over recs in one write transaction. recs must come after
// the records projected before (a gap is a record the caller skipped).
func (s *Scratch) Project(p Projector, recs []Record) error {
	if len(recs) == 0 {
		return nil
	}
	if recs[0].Seq <= s.last {
		return fmt.Errorf("scratch: records from %d after %d", recs[0].Seq, s.last)
	}
	err := guard("scratch", func() error {
		return s.db.Update(func(tx *bolt.Tx) error {
			if err := p.Project(&Tx{tx: tx}, recs); err != nil {
				return fmt.Errorf("projection %s: %w", p.Name(), err)
			}
			release(tx)
			return tx.Bucket(bucketCheckpoints).Put([]byte(p.Name()), u64(recs[len(recs)-1].Seq))
		})
	})
	if err != nil {
		return err
	}
	s.last = recs[len(recs)-1].Seq
	return nil
}

// Last returns the sequence number of the last record projected.
func (s *Scratch) Last() uint64 { return s.last }

// View runs fn in a read transaction of the scratch file.
func (s *Scratch) View(fn func(*Tx) error) error {
	return guard("scratch", func() error {
		return s.db.View(func(tx *bolt.Tx) error {
			defer release(tx)
			return fn(&Tx{tx: tx})
		})
	})
}

// Close closes and removes the scratch file.
func (s *Scratch) Close() error {
	err := s.db.Close()
	if s.path != "" {
		if rerr := os.Remove(s.path); err == nil {
			err = rerr
		}
	}
	return err
}

// ViewNames returns the names of the view buckets in the transaction, in
// byte order.
func (t *Tx) ViewNames() []string {
	views := t.tx.Bucket(bucketViews)
	if views == nil {
		return nil
	}
	var out []string
	_ = views.ForEach(func(k, v []byte) error {
		if v == nil {
			out = append(out, string(k))
		}
		return nil
	})
	slices.Sort(out)
	return out
}

// Pages returns the bytes of the file its pages span as of this
// transaction (bbolt's high-water mark, which a free page below it does
// not move): what a benchmark watches to tell whether a long reader kept
// a writer from reusing freed pages, where the file's size grows in
// steps.
func (t *Tx) Pages() int64 { return t.tx.Size() }
