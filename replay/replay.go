package replay

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/delegations/delegations/eventlog"
	"github.com/delegations/delegations/fsm"
	"github.com/delegations/delegations/projection"
)

// Defaults for Options.
const (
	// DefaultStale is how long a notification may wait for the bridge's
	// acknowledgement before replay calls it lost (an error, not info).
	DefaultStale = 5 * time.Minute
	// DefaultDeadlineGrace is how long past its deadline an active
	// delegation may stay before replay calls the timeout lost: the
	// daemon's sweeper runs periodically, and a blocking read waits
	// projection.ReadGrace before timing out itself.
	DefaultDeadlineGrace = time.Minute
)

// Options configure Run, Verify and Rebuild. The zero value replays the
// whole log as of now.
type Options struct {
	// Until replays the log up to a point; findings are about the state
	// then. The zero Point is the whole log.
	Until Point
	// Now is the time deadlines and ages are measured against. Zero means
	// Until's time, else the time of the last record replayed when Until
	// is a sequence number, else time.Now().
	Now time.Time
	// Stale: a notification waiting longer than this is an error. Zero
	// means DefaultStale.
	Stale time.Duration
	// DeadlineGrace: an active delegation this long past its deadline is
	// an error. Zero means DefaultDeadlineGrace.
	DeadlineGrace time.Duration
	// Progress, if set, is called now and then with the work done and the
	// work to do (records, then artifacts; total grows once, when replay
	// knows how many artifacts there are). The library never prints.
	Progress func(done, total int)
	// Self is the id of the daemon whose data directory dir is, on a log
	// shared by several daemons (projection.Store.Self); "" otherwise. An
	// artifact whose delegation another daemon owns at the end of the
	// replay (or at Until) is a file on that daemon's machine: a copy
	// here, missing or not, is no finding (a read here writes it again
	// from the record). One this daemon owns then, taken over after
	// another persisted it, is checked here.
	Self string
}

func (o *Options) defaults() {
	if o.Stale <= 0 {
		o.Stale = DefaultStale
	}
	if o.DeadlineGrace <= 0 {
		o.DeadlineGrace = DefaultDeadlineGrace
	}
}

// Modes of a report.
const (
	ModeReplay = "replay" // every check (Run)
	ModeVerify = "verify" // integrity only: records, indexes, views, artifacts (Verify)
)

// Run replays the log into fresh state and reports what it finds about the
// delegations, the views and the artifacts under the data directory dir.
// log is the store's log (projection.Store.Log), or the file opened with
// eventlog.Open(filepath.Join(dir, projection.LogFile), ...) and no
// projectors, which observes the store without the recovery
// projection.Open does. Damaged records are findings; an error means the
// replay could not be done (the log is closed, ctx ended, a read failed).
func Run(ctx context.Context, log *eventlog.Log, dir string, opts Options) (*Report, error) {
	rep, _, err := run(ctx, log, dir, opts, ModeReplay, false)
	return rep, err
}

// progressEvery is how many records pass between Progress calls and
// context checks.
const progressEvery = 1 << 14

// maxCorrupt bounds how many damaged records in a row replay steps over
// before it gives up on the rest of the log. Each costs a short read
// transaction (a gap of missing records is stepped over one by one).
const maxCorrupt = 1 << 20

func run(ctx context.Context, log *eventlog.Log, dir string, opts Options, mode string, views bool) (*Report, *scanner, error) {
	opts.defaults()
	rep := &Report{Mode: mode, DataDir: dir, Until: opts.Until, Last: log.Last(), Findings: []Finding{}}
	arts := newArtifacts(ctx, dir, opts.Self, true)
	defer arts.wait() // on an early return
	st := newState(arts)
	sc := &scanner{ctx: ctx, log: log, opts: &opts, st: st}
	st.stream, st.drop = sc.stream, true
	if views {
		rb, err := newRebuild(dir)
		if err != nil {
			return nil, nil, fmt.Errorf("replay %s: %w", dir, err)
		}
		defer rb.close()
		sc.rb = rb
	}
	stopPrefetch := log.Prefetch()
	err := sc.scan(1)
	stopPrefetch()
	if err != nil {
		return nil, nil, fmt.Errorf("replay %s: %w", dir, err)
	}

	var viewFindings []Finding
	if views {
		if err := sc.rb.waitProgress(ctx, opts.Progress, int(log.Last())); err != nil {
			return nil, nil, fmt.Errorf("replay %s: %w", dir, err)
		}
		var err error
		switch {
		case len(sc.corrupt) > 0:
			rep.ViewsNote = damagedNote
		case sc.excluded > 0:
			rep.ViewsNote = notAtEnd
		default:
			viewFindings, rep.ViewsChecked, rep.ViewsNote, err = compareViews(sc, rep)
		}
		if err != nil {
			return nil, nil, fmt.Errorf("replay %s: views: %w", dir, err)
		}
	} else {
		rep.ViewsNote = viewsInVerify
	}
	if opts.Progress != nil {
		opts.Progress(int(log.Last()), int(log.Last()))
	}
	if err := arts.wait(); err != nil {
		return nil, nil, fmt.Errorf("replay %s: %w", dir, err)
	}
	if len(sc.corrupt) > 0 {
		// The damaged delegations' artifacts are checked again.
		if err := sc.attribute(); err != nil {
			return nil, nil, fmt.Errorf("replay %s: %w", dir, err)
		}
		rep.Last = sc.last
	}
	now := opts.Now
	switch {
	case !now.IsZero():
	case !opts.Until.Time.IsZero():
		now = opts.Until.Time
	case opts.Until.Seq != 0:
		now = st.lastAt
	default:
		now = time.Now()
	}
	rep.Now = now.UTC()
	rep.Through, rep.Events = st.through, st.applied
	rep.Delegations = st.delegations
	rep.States = st.states()
	rep.Artifacts = arts.checked

	// The artifacts' findings (which name their delegation's first record
	// and state already), and the others'.
	rep.found = arts.found
	for _, fs := range [][]Finding{sc.findings(), st.bad, unknownKinds(st), viewFindings} {
		for _, f := range fs {
			if d := st.ds[f.Delegation]; d != nil && f.Delegation != "" {
				if f.group == 0 {
					f.group = d.first
				}
				if f.Status == "" && !d.damaged {
					f.Status = d.rec.State
				}
			}
			rep.found.add(f)
		}
	}
	if mode == ModeReplay {
		lifecycle(dir, st, now, &opts, rep.found.add)
	}
	rep.found.fill(rep)
	return rep, sc, nil
}

// scanner reads the log record by record, stepping over damaged ones.
type scanner struct {
	ctx      context.Context
	log      *eventlog.Log
	rb       *rebuild // the views rebuilt from the records read; nil for Run
	opts     *Options
	st       *state
	excluded int          // records left out by a time Until
	corrupt  []corruptRun // damaged records, in runs of consecutive ones
	gaveUp   bool
	read     uint64       // the last sequence number read
	tx       *eventlog.Tx // the read transaction records are fed in, if any
	last     uint64       // the log's last record when the damage was attributed
}

// corruptRun is a run of consecutive damaged records.
type corruptRun struct {
	first, last uint64
	reason      string // the first one's
	owner       string // the delegation whose stream holds the first one, when known
	known       string // what the records view, built while it was intact, says of owner
}

// scan reads the log from sequence number from, in short read
// transactions, up to its last record or Until, in three stages that
// overlap on the cores: the reading, which takes each record the log has
// checked (eventlog.Log.Scan) and copies its payload out of the log's
// pages into its batch, the pages being lent only inside the read
// transaction; the decoding of the payloads, a batch at a time in
// scanDecoders goroutines; and the fold, which takes the batches in the
// log's order. The reading and the fold cannot be split, so they do the
// least; the views' rebuild, when there is one, gets its own copy of each
// record.
func (sc *scanner) scan(from uint64) error {
	total := int(sc.log.Last())
	decode := make(chan *batch, scanBatches)
	fold := make(chan *batch, scanBatches)
	free := make(chan *batch, scanBatches)
	for range scanBatches {
		free <- &batch{ready: make(chan struct{}, 1)}
	}
	var decoders sync.WaitGroup
	for range scanDecoders {
		decoders.Go(func() {
			for b := range decode {
				b.decode()
				b.ready <- struct{}{}
			}
		})
	}
	var read uint64 // the last seq read (the reader's)
	var err error
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer close(fold)
		defer close(decode)
		b := <-free
		b.own = sc.rb != nil
		send := func() {
			b.seal()
			decode <- b
			fold <- b
			b = <-free
			b.own = sc.rb != nil
		}
		err = sc.records(from, func(r *eventlog.Record) bool {
			read = r.Seq
			if sc.opts.Until.includes(r.Seq, r.Time) {
				b.add(r)
			} else {
				sc.excluded++
			}
			return !b.full() && (r.Seq%progressEvery != 0 || sc.opts.Progress == nil)
		}, func() { // outside the read transaction
			if read%progressEvery == 0 && sc.opts.Progress != nil {
				done := read
				if sc.rb != nil { // the rebuild of the views is behind the reading
					done = sc.rb.projected.Load()
				}
				sc.opts.Progress(min(int(done), total), total)
			}
			if b.full() {
				send()
			}
		}, true)
		if len(b.recs) > 0 {
			send()
		}
	}()
	for b := range fold {
		<-b.ready
		for i := range b.recs {
			sc.feed(&b.recs[i])
		}
		b.reset()
		free <- b
	}
	<-done
	decoders.Wait()
	sc.read = max(sc.read, read)
	return err
}

// scanBatch is how many records the reading hands on at once (fewer when
// their payloads reach scanBatchBytes), scanBatches how many batches there
// are (being filled, decoded, folded, or queued between), and
// scanDecoders how many goroutines decode them: two keep up with the
// reading, which cannot be split (decoding costs about as much per
// event).
const (
	scanBatch      = 256
	scanBatchBytes = 1 << 20
	scanBatches    = 8
	scanDecoders   = 2
)

// batch is records on their way from the reading to the fold.
type batch struct {
	recs  []decoded
	buf   []byte        // the payloads, one after the other (unless own)
	own   bool          // each record has a payload of its own (the views are rebuilt from them)
	ready chan struct{} // a value once decoded
}

// decoded is a record and its event (see decode). Its payload, unless
// the batch's are its own, is buf[start:end] from seal to the decoding.
type decoded struct {
	r          eventlog.Record
	e          fsm.Event
	err        error
	start, end int
}

// add appends lent record r.
func (b *batch) add(r *eventlog.Record) {
	if b.recs == nil {
		b.recs = make([]decoded, 0, scanBatch)
	}
	b.recs = b.recs[:len(b.recs)+1] // cleared by reset: only the record is set here (full keeps it in cap)
	d := &b.recs[len(b.recs)-1]
	d.r = *r
	if b.own {
		d.r.Payload = bytes.Clone(r.Payload)
		return
	}
	d.r.Payload = nil
	d.start = len(b.buf)
	b.buf = append(b.buf, r.Payload...)
	d.end = len(b.buf)
}

func (b *batch) full() bool {
	return len(b.recs) == scanBatch || len(b.buf) >= scanBatchBytes
}

// seal points the records at their payloads, which stay put from now on.
func (b *batch) seal() {
	if b.own {
		return
	}
	for i := range b.recs {
		d := &b.recs[i]
		d.r.Payload = b.buf[d.start:d.end:d.end]
	}
}

func (b *batch) decode() {
	for i := range b.recs {
		d := &b.recs[i]
		d.err = decodeTo(&d.e, &d.r)
		if !b.own {
			d.r.Payload = nil // buf is reused
		}
	}
}

// reset empties b for the reading to fill again; a buffer a large payload
// grew is let go.
func (b *batch) reset() {
	clear(b.recs) // the events' texts
	b.recs = b.recs[:0]
	b.buf = b.buf[:0]
	if cap(b.buf) > 2*scanBatchBytes {
		b.buf = nil
	}
}

// records calls visit with every intact record from sequence number from,
// up to the log's last record or Until, stepping over damaged ones (noted
// when note is set). The record is lent (eventlog.Log.Scan): visit runs
// inside a short read transaction and must not wait for a commit. When
// visit returns false, records ends that transaction, calls between, and
// reads on with the next record.
func (sc *scanner) records(from uint64, visit func(*eventlog.Record) bool, between func(), note bool) error {
	ctx := sc.ctx
	until := sc.opts.Until
	for {
		paused := false
		err := sc.log.Scan(from, func(r *eventlog.Record) bool {
			if until.Seq != 0 && r.Seq > until.Seq || r.Seq%progressEvery == 0 && ctx.Err() != nil {
				return false
			}
			from = r.Seq + 1
			paused = !visit(r)
			return !paused
		})
		if paused {
			between()
		}
		var ce *eventlog.CorruptError
		switch {
		case err == nil && !paused:
			return ctx.Err()
		case err == nil:
		case !errors.As(err, &ce):
			return err
		case until.Seq != 0 && ce.Seq > until.Seq:
			return ctx.Err()
		default:
			if note {
				sc.addCorrupt(ce)
			}
			if ce.Seq == 0 || sc.gaveUp {
				return ctx.Err()
			}
			from = ce.Seq + 1
		}
		if from > sc.log.Last() {
			return ctx.Err()
		}
	}
}

// feed applies one record to the fold and the rebuilt views.
func (sc *scanner) feed(d *decoded) {
	sc.read = d.r.Seq
	sc.st.apply(&d.r, &d.e, d.err)
	if sc.rb != nil {
		sc.rb.add(&d.r)
	}
}

// stream returns the records of stream id before sequence number before
// that the replay applied, read in the transaction records are fed in or
// a short one: the events of a delegation the fold dropped.
func (sc *scanner) stream(id string, before uint64) ([]eventlog.Record, error) {
	var recs []eventlog.Record
	var first error
	read := func(tx *eventlog.Tx) error {
		recs, first = recs[:0], nil
		for r, err := range tx.StreamRecords(id) {
			switch {
			case err != nil: // stepped over, as the scan steps over it
				if first == nil {
					first = err
				}
			case r.Seq < before && sc.opts.Until.includes(r.Seq, r.Time):
				recs = append(recs, r)
			}
		}
		return nil
	}
	var err error
	if sc.tx != nil {
		err = read(sc.tx)
	} else {
		err = sc.log.View(read)
	}
	if err != nil {
		return recs, err
	}
	return recs, first
}

func (sc *scanner) addCorrupt(ce *eventlog.CorruptError) {
	if n := len(sc.corrupt); n > 0 && ce.Seq != 0 && sc.corrupt[n-1].last+1 == ce.Seq {
		r := &sc.corrupt[n-1]
		r.last = ce.Seq
		if r.last-r.first+1 >= maxCorrupt {
			sc.gaveUp = true
		}
		return
	}
	sc.corrupt = append(sc.corrupt, corruptRun{first: ce.Seq, last: ce.Seq, reason: ce.Reason})
}

// attribute names the delegation a damaged record belonged to, where the
// stream index still knows: a delegation that replayed fewer events than
// its stream holds lost one, and reading its stream names the record.
// Such a delegation is damaged: it is kept, and its artifact checked
// again. The delegations the fold dropped are found by reading the log
// again for their registrations (a dropped delegation was registered or
// imported), each checked in a short read transaction of its own.
func (sc *scanner) attribute() error {
	st := sc.st
	owners := map[uint64]string{}
	check := func(tx *eventlog.Tx, id string, d *delegation) {
		if tx.StreamVersion(id) <= d.rec.Version {
			return
		}
		d.damaged = true
		if d.persisted != 0 {
			st.arts.recheck(d)
		}
		_, err := tx.Stream(id)
		var ce *eventlog.CorruptError
		if errors.As(err, &ce) {
			owners[ce.Seq] = id
		}
	}
	err := sc.log.View(func(tx *eventlog.Tx) error {
		for _, id := range st.kept() {
			check(tx, id, st.ds[id])
		}
		return nil
	})
	if err != nil {
		return err
	}
	var failed error
	var pending string // a registration the fold dropped, checked outside the scan's transaction
	err = sc.records(1, func(r *eventlog.Record) bool {
		kind := fsm.Kind(r.Kind)
		if r.Seq > sc.read || kind != fsm.KindRegistered && kind != fsm.KindImported || st.ds[r.Stream] != nil || failed != nil {
			return true
		}
		pending = r.Stream // not lent: a string of its own
		return false
	}, func() {
		failed = sc.log.View(func(tx *eventlog.Tx) error {
			d := st.lookup(tx, pending, sc.read)
			if d == nil {
				return nil
			}
			if check(tx, pending, d); d.damaged {
				st.ds[pending] = d
				st.dropped[d.rec.State]--
			}
			return nil
		})
	}, false)
	if err = cmp.Or(err, failed); err != nil {
		return err
	}
	return sc.log.View(func(tx *eventlog.Tx) error {
		sc.last = tx.Last()
		for i := range sc.corrupt {
			r := &sc.corrupt[i]
			r.owner = owners[r.first]
			if r.owner == "" {
				continue
			}
			stored, err := projection.InspectRecord(tx, r.owner)
			if err != nil || stored == nil {
				continue // the view is no help either; the finding says what is known
			}
			r.known = knownSteps(stored)
		}
		return nil
	})
}

// knownSteps describes a record's status and the steps it went through.
func knownSteps(d *fsm.Delegation) string {
	s := string(d.State)
	var steps []string
	for _, st := range []struct {
		name string
		at   time.Time
	}{{"persisted", d.PersistedAt}, {"notified", d.NotifiedAt}, {"read", d.ReadAt}} {
		if !st.at.IsZero() {
			steps = append(steps, st.name)
		}
	}
	if len(steps) > 0 {
		s += " (" + strings.Join(steps, ", ") + ")"
	} else if d.State.Terminal() {
		s += " (not persisted)"
	}
	return s
}

func (sc *scanner) findings() []Finding {
	var out []Finding
	for _, r := range sc.corrupt {
		f := Finding{Code: CodeCorruptRecord, Severity: SeverityError, Delegation: r.owner}
		if r.first == 0 {
			f.Seqs = []uint64{}
			f.Diagnosis = "the log holds a malformed key (" + r.reason + "); replay cannot read past it, so every later record is missing from this report."
			f.Next = "delegations verify; restore the log file from a backup"
			out = append(out, f)
			continue
		}
		var seqs []uint64
		for s := r.first; s <= r.last && len(seqs) < maxSeqs; s++ {
			seqs = append(seqs, s)
		}
		f.Seqs = seqs
		what := "record " + itoa(r.first) + " fails its checks"
		if r.last > r.first {
			what = "records " + itoa(r.first) + " to " + itoa(r.last) + " (" + itoa(r.last-r.first+1) + ") fail their checks"
		}
		f.Diagnosis = what + " (" + r.reason + "). "
		if r.owner != "" {
			f.Diagnosis += "It belongs to " + r.owner + ", which replays without it, so replay does not diagnose its steps"
			if r.known != "" {
				f.Diagnosis += "; the views, built while the record was intact, say it is " + r.known
			}
			f.Diagnosis += ". "
		} else {
			f.Diagnosis += "Which delegation it belonged to cannot be read. "
		}
		f.Diagnosis += "Replay went on with the next record."
		if r.last-r.first+1 >= maxCorrupt {
			f.Diagnosis = what + " (" + r.reason + "); replay gave up on the rest of the log."
		}
		f.Missing = "an intact record"
		f.Next = "delegations verify lists every damaged record; restore the log file from a backup (the store cannot rebuild past a damaged record)"
		out = append(out, f)
	}
	return out
}

// unknownKinds reports event kinds this build does not know, once.
func unknownKinds(st *state) []Finding {
	if len(st.unknown) == 0 {
		return nil
	}
	kinds := make([]fsm.Kind, 0, len(st.unknown))
	for k := range st.unknown {
		kinds = append(kinds, k)
	}
	slices.Sort(kinds)
	var seqs []uint64
	names := ""
	for i, k := range kinds {
		if i > 0 {
			names += ", "
		}
		names += fmt.Sprintf("%s (%d)", k, st.unknown[k].n)
		seqs = append(seqs, st.unknown[k].seqs...)
	}
	slices.Sort(seqs)
	return []Finding{{
		Code: CodeUnknownKinds, Severity: SeverityInfo, Seqs: seqList(seqs),
		Diagnosis: "the log holds event kinds this build does not know: " + names +
			". A newer build wrote them; replay counts them and applies nothing from them, so its findings may be incomplete.",
		Next: "run replay with the build that wrote the log",
	}}
}
