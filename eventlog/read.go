package eventlog

import (
	"context"
	"encoding/binary"
	"fmt"
	"iter"

	bolt "go.etcd.io/bbolt"
)

// scanChunk and scanBytes bound what Records reads per read transaction
// (records, payload bytes; at least one record). Short transactions keep a
// long scan from holding bbolt's mmap lock, which would stall a writer that
// needs to grow the file, and the memory a chunk holds from following the
// payloads' sizes.
const (
	scanChunk = 1024
	scanBytes = 16 << 20
)

// Records yields every record with a sequence number of at least from, in
// order, up to the last record committed when each chunk is read. A record
// that fails its checks is yielded once with a *CorruptError and ends the
// sequence.
func (l *Log) Records(from uint64) iter.Seq2[Record, error] {
	return func(yield func(Record, error) bool) {
		if from == 0 {
			from = 1
		}
		buf := make([]Record, 0, scanChunk)
		for {
			buf = buf[:0]
			var bad error
			var more bool
			err := guard(fmt.Sprintf("read records from %d", from), func() error {
				return l.db.View(func(tx *bolt.Tx) error {
					buf, more, bad = readChunk(tx.Bucket(bucketEvents), from, buf)
					release(tx)
					return nil
				})
			})
			if err != nil {
				yield(Record{}, fmt.Errorf("read log %s: %w", l.path, err))
				return
			}
			for _, r := range buf {
				if !yield(r, nil) {
					return
				}
			}
			if bad != nil {
				yield(Record{}, bad)
				return
			}
			if !more {
				return
			}
			from = buf[len(buf)-1].Seq + 1
		}
	}
}

// readChunk appends records starting at from, up to cap(buf)-len(buf) of
// them and scanBytes of payload. more reports that the log holds a next one.
func readChunk(b *bolt.Bucket, from uint64, buf []Record) (_ []Record, more bool, _ error) {
	var ch chunkReader
	_, more, err := ch.read(b, from, cap(buf)-len(buf), true, func(r *Record) bool {
		buf = append(buf, *r)
		return true
	})
	return buf, more, err
}

// chunkReader reads the records of one read transaction for Records and
// Scan, and keeps what a scan reuses from one transaction to the next.
type chunkReader struct {
	rec     Record // the record lent to fn (a local would escape: one allocation per record)
	stream  string // the last record's stream id
	payload []byte // the last chunked payload lent
}

// read calls fn with each record from sequence number from, in order, up
// to limit records and scanBytes of payload, until fn returns false. With
// own the record owns its payload; otherwise it is lent (see Scan). next
// is the sequence number after the last record fn had; more reports that
// the log holds a next record and fn did not stop.
func (ch *chunkReader) read(b *bolt.Bucket, from uint64, limit int, own bool, fn func(*Record) bool) (next uint64, more bool, _ error) {
	c := b.Cursor()
	chunks := txChunks(b.Tx())
	want, size := from, 0
	k, v := c.Seek(u64(from))
	for n := 0; k != nil && n < limit && size < scanBytes; k, v = c.Next() {
		seq, err := seqKey(k)
		if err != nil {
			return want, false, err
		}
		if seq != want {
			return want, false, corrupt(want, "missing: the log jumps from %d to %d", want-1, seq)
		}
		r, chunked, err := lendHead(seq, v, ch.stream)
		switch {
		case err != nil:
			return want, false, err
		case chunked.length > 0 && own:
			r.Payload, err = chunked.assemble(seq, chunks)
		case chunked.length > 0:
			ch.payload, err = chunked.assembleTo(ch.payload, seq, chunks)
			r.Payload = ch.payload
		case own && len(r.Payload) > 0:
			r.Payload = append([]byte(nil), r.Payload...)
		}
		if err != nil {
			return want, false, err
		}
		ch.stream = r.Stream
		size += len(r.Payload)
		n++
		want++
		ch.rec = r
		if !fn(&ch.rec) {
			return want, false, nil
		}
	}
	return want, k != nil, nil
}

// Scan calls fn with every record with a sequence number of at least from,
// in order, up to the last record committed when each of its read
// transactions begins, until fn returns false. It reads and checks every
// record as Records does, in read transactions of at most scanChunk
// records and scanBytes of payload; a record that fails its checks ends
// the scan with its *CorruptError, after fn has had the records before it.
//
// Unlike Records it copies nothing: the record is lent to fn, valid only
// until fn returns. Its Payload is the log's memory map, or for a payload
// stored in chunks a buffer the scan reuses: read it, never write it, and
// copy what outlives the call. Its Stream and Key are strings of their own
// (Stream is the previous record's string when the two are equal). That
// saves a replay of the whole log an allocation and a copy of every
// payload, most of what reading it costs.
//
// fn runs inside a read transaction, so it must not wait for a commit, nor
// for anything that waits for one: another read transaction of the same
// log included, which a writer growing the file makes wait for this one to
// end. To hand records to another goroutine, copy what it needs into a
// batch, return false when the batch is full, hand it over, and scan again
// from the next sequence number.
func (l *Log) Scan(from uint64, fn func(*Record) bool) error {
	if from == 0 {
		from = 1
	}
	var ch chunkReader
	for {
		var bad error
		more := false
		err := guard(fmt.Sprintf("read records from %d", from), func() error {
			return l.db.View(func(tx *bolt.Tx) error {
				from, more, bad = ch.read(tx.Bucket(bucketEvents), from, scanChunk, false, fn)
				release(tx)
				return nil
			})
		})
		switch {
		case err != nil:
			return fmt.Errorf("read log %s: %w", l.path, err)
		case bad != nil:
			return bad
		case !more:
			return nil
		}
	}
}

func seqKey(k []byte) (uint64, error) {
	if len(k) != 8 {
		return 0, corrupt(0, "events key %x is %d bytes, want 8", clip(k), len(k))
	}
	return binary.BigEndian.Uint64(k), nil
}

// Stream returns every record of one stream, in order.
func (l *Log) Stream(stream string) ([]Record, error) {
	var out []Record
	err := l.View(func(tx *Tx) error {
		var err error
		out, err = tx.Stream(stream)
		return err
	})
	return out, err
}

// Wait blocks until the log holds a record after sequence number after, and
// returns the last sequence number then. It returns early with ctx's error,
// or ErrClosed when the log closes.
func (l *Log) Wait(ctx context.Context, after uint64) (uint64, error) {
	for {
		l.notifyMu.Lock()
		ch := l.notify
		l.notifyMu.Unlock()
		if ch == nil {
			return l.Last(), ErrClosed
		}
		if last := l.Last(); last > after {
			return last, nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return l.Last(), ctx.Err()
		}
	}
}

// View runs fn in a read-only transaction: a consistent snapshot of the
// records and every view.
func (l *Log) View(fn func(*Tx) error) error {
	if l.isClosed() {
		return ErrClosed
	}
	return guard("read", func() error {
		return l.db.View(func(tx *bolt.Tx) error {
			defer release(tx)
			return fn(&Tx{tx: tx})
		})
	})
}

// Tx is a transaction as seen by readers and projectors: records can be
// read, never written; views (buckets owned by projections) can be read,
// and written when the transaction is a projector's.
//
// Byte slices obtained from view buckets are valid only until the
// transaction ends: copy what you keep.
type Tx struct {
	tx *bolt.Tx
	// The buckets a read-only transaction has opened, kept: outside a
	// writable transaction bbolt opens a bucket anew (a lookup, and
	// allocations) on every call, and a command's read of one record and
	// its texts opens the same few several times.
	events *bolt.Bucket
	views  [8]namedBucket
	nviews int
}

type namedBucket struct {
	name string
	b    *bolt.Bucket
}

// eventsBucket returns the log's bucket of records.
func (t *Tx) eventsBucket() *bolt.Bucket {
	if t.events == nil {
		t.events = t.tx.Bucket(bucketEvents)
	}
	return t.events
}

// Writable reports whether views may be changed in this transaction.
func (t *Tx) Writable() bool { return t.tx.Writable() }

// Bucket returns the view bucket name, creating it in a writable
// transaction. In a read-only transaction it returns nil when the bucket
// does not exist yet.
func (t *Tx) Bucket(name string) (*bolt.Bucket, error) {
	if !t.tx.Writable() {
		for _, v := range t.views[:t.nviews] {
			if v.name == name {
				return v.b, nil
			}
		}
		var b *bolt.Bucket // nil before a writer created it
		if views := t.tx.Bucket(bucketViews); views != nil {
			b = views.Bucket([]byte(name))
		}
		if t.nviews < len(t.views) {
			t.views[t.nviews] = namedBucket{name, b}
			t.nviews++
		}
		return b, nil
	}
	views := t.tx.Bucket(bucketViews)
	b, err := views.CreateBucketIfNotExists([]byte(name))
	if err != nil {
		return nil, fmt.Errorf("view bucket %q: %w", name, err)
	}
	return b, nil
}

// DeleteBucket drops the view bucket name (a missing one is fine); rebuilds
// use it before replaying.
func (t *Tx) DeleteBucket(name string) error {
	views := t.tx.Bucket(bucketViews)
	if views.Bucket([]byte(name)) == nil {
		return nil
	}
	return views.DeleteBucket([]byte(name))
}

// Last returns the last sequence number visible in this transaction.
func (t *Tx) Last() uint64 {
	k, _ := t.eventsBucket().Cursor().Last()
	if len(k) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(k)
}

// Record reads one record by sequence number. The record owns its memory:
// its payload is a copy, never the file's, and outlives the transaction
// (projection keeps texts that share it). A record missing below the last
// one is damage (a CorruptError): every append, import and replica writes
// last+1, Restore renumbers past what a recovery lost, and Verify checks
// that the numbers have no gap, so only a damaged page loses one. (Damage
// that loses the last records lowers the last: a record past it reads as
// not written yet.)
func (t *Tx) Record(seq uint64) (Record, error) {
	v := t.eventsBucket().Get(u64(seq))
	if v == nil {
		last := t.Last()
		if seq >= 1 && seq < last {
			return Record{}, corrupt(seq, "missing, below the last record %d: a damaged page of the log lost it", last)
		}
		return Record{}, fmt.Errorf("record %d: not in the log (last is %d)", seq, last)
	}
	return readRecord(t.tx, seq, v)
}

// StreamVersion returns how many records stream holds.
func (t *Tx) StreamVersion(stream string) uint64 {
	_, v := indexOf(t.tx).lookup(stream)
	return v
}

// Stream returns every record of stream, in order, up to the first
// damaged one, whose error it returns.
func (t *Tx) Stream(stream string) ([]Record, error) {
	var out []Record
	for r, err := range t.StreamRecords(stream) {
		if err != nil {
			return out, err
		}
		out = append(out, r)
	}
	return out, nil
}

// StreamRecords yields every record of stream, in order; a damaged one is
// yielded as its error, and the records after it follow (as a scan of the
// whole log steps over it).
func (t *Tx) StreamRecords(stream string) iter.Seq2[Record, error] {
	return func(yield func(Record, error) bool) {
		if err := validStream(stream); err != nil {
			yield(Record{}, err)
			return
		}
		events := t.tx.Bucket(bucketEvents)
		for _, seq := range indexOf(t.tx).seqs(stream) {
			var r Record
			var err error
			if raw := events.Get(u64(seq)); raw == nil {
				err = corrupt(seq, "stream %q index points at a record that does not exist", stream)
			} else if r, err = readRecord(t.tx, seq, raw); err == nil && r.Stream != stream {
				r, err = Record{}, corrupt(seq, "stream %q index points at a record of stream %q", stream, r.Stream)
			}
			if !yield(r, err) {
				return
			}
		}
	}
}
