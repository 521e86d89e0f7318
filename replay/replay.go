package replay

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
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
	rep, _, err := run(ctx, log, dir, opts, ModeReplay)
	return rep, err
}

// progressEvery is how many records pass between Progress calls and
// context checks.
const progressEvery = 1 << 14

// maxCorrupt bounds how many damaged records in a row replay steps over
// before it gives up on the rest of the log. Each costs a short read
// transaction (a gap of missing records is stepped over one by one).
const maxCorrupt = 1 << 20

func run(ctx context.Context, log *eventlog.Log, dir string, opts Options, mode string) (*Report, *scanner, error) {
	opts.defaults()
	rep := &Report{Mode: mode, DataDir: dir, Until: opts.Until, Last: log.Last(), Findings: []Finding{}}
	st := newState()
	rb, err := newRebuild(dir)
	if err != nil {
		return nil, nil, fmt.Errorf("replay %s: %w", dir, err)
	}
	defer rb.close()
	sc := &scanner{ctx: ctx, log: log, opts: &opts, st: st, rb: rb}
	if err := sc.scan(1); err != nil {
		return nil, nil, fmt.Errorf("replay %s: %w", dir, err)
	}

	if len(sc.corrupt) > 0 {
		if err := log.View(func(tx *eventlog.Tx) error {
			rep.Last = tx.Last()
			return sc.attribute(tx)
		}); err != nil {
			return nil, nil, fmt.Errorf("replay %s: %w", dir, err)
		}
	}
	// The files are read while the views are compared (the rebuild of the
	// views is the longer of the two).
	files := readArtifacts(ctx, dir, st)
	defer files.wg.Wait()

	if err := rb.waitProgress(ctx, opts.Progress, int(log.Last())); err != nil {
		return nil, nil, fmt.Errorf("replay %s: %w", dir, err)
	}
	if opts.Progress != nil {
		opts.Progress(int(log.Last()), int(log.Last()))
	}

	var viewFindings []Finding
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
	rb.wait()
	if st.allComplete, err = rb.allComplete(); err != nil {
		return nil, nil, fmt.Errorf("replay %s: views: %w", dir, err)
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
	rep.Delegations = len(st.ds)
	rep.States = map[fsm.State]int{}
	for _, d := range st.ds {
		rep.States[d.state]++
	}

	fs := sc.findings()
	fs = append(fs, st.bad...)
	fs = append(fs, unknownKinds(st)...)
	fs = append(fs, viewFindings...)
	af, checked, err := checkArtifacts(ctx, dir, st, &opts, int(rep.Last), files)
	if err != nil {
		return nil, nil, fmt.Errorf("replay %s: %w", dir, err)
	}
	rep.Artifacts = checked
	fs = append(fs, af...)
	if mode == ModeReplay {
		fs = append(fs, lifecycle(dir, st, now, &opts)...)
	}
	for i := range fs {
		f := &fs[i]
		if d := st.ds[f.Delegation]; d != nil && f.Delegation != "" {
			if f.group == 0 {
				f.group = d.first
			}
			if f.Status == "" && !d.damaged {
				f.Status = d.state
			}
		}
	}
	rep.add(fs...)
	return rep, sc, nil
}

// scanner reads the log record by record, stepping over damaged ones.
type scanner struct {
	ctx      context.Context
	log      *eventlog.Log
	rb       *rebuild // the views rebuilt from the records read
	opts     *Options
	st       *state
	excluded int          // records left out by a time Until
	corrupt  []corruptRun // damaged records, in runs of consecutive ones
	gaveUp   bool
	read     uint64 // the last sequence number read
}

// corruptRun is a run of consecutive damaged records.
type corruptRun struct {
	first, last uint64
	reason      string // the first one's
	owner       string // the delegation whose stream holds the first one, when known
	known       string // what the records view, built while it was intact, says of owner
}

// scan reads the log from sequence number from, in short read
// transactions, up to its last record or Until.
func (sc *scanner) scan(from uint64) error {
	ctx := sc.ctx
	total := int(sc.log.Last())
	until := sc.opts.Until
	for {
		var resume uint64
		done := true
		for r, err := range sc.log.Records(from) {
			if err != nil {
				var ce *eventlog.CorruptError
				if !errors.As(err, &ce) {
					return err
				}
				if until.Seq != 0 && ce.Seq > until.Seq {
					break
				}
				sc.addCorrupt(ce)
				if ce.Seq != 0 && !sc.gaveUp {
					resume, done = ce.Seq+1, false
				}
				break
			}
			if until.Seq != 0 && r.Seq > until.Seq {
				break
			}
			if r.Seq%progressEvery == 0 {
				if err := ctx.Err(); err != nil {
					return err
				}
				if sc.opts.Progress != nil { // the rebuild of the views is behind the reading
					sc.opts.Progress(min(int(sc.rb.projected.Load()), total), total)
				}
			}
			if !until.includes(r.Seq, r.Time) {
				sc.excluded++
				sc.read = r.Seq
				continue
			}
			sc.feed(&r)
		}
		if done || resume > sc.log.Last() {
			break
		}
		from = resume
	}
	return ctx.Err()
}

// feed applies one record to the fold and the rebuilt views.
func (sc *scanner) feed(r *eventlog.Record) {
	sc.read = r.Seq
	sc.st.apply(r)
	sc.rb.add(r)
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
func (sc *scanner) attribute(tx *eventlog.Tx) error {
	if len(sc.corrupt) == 0 {
		return nil
	}
	owners := map[uint64]string{}
	for _, id := range sc.st.order {
		d := sc.st.ds[id]
		if tx.StreamVersion(id) <= d.version {
			continue
		}
		d.damaged = true
		_, err := tx.Stream(id)
		var ce *eventlog.CorruptError
		if errors.As(err, &ce) {
			owners[ce.Seq] = id
		}
	}
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
		names += fmt.Sprintf("%s (%d)", k, len(st.unknown[k]))
		seqs = append(seqs, st.unknown[k]...)
	}
	slices.Sort(seqs)
	return []Finding{{
		Code: CodeUnknownKinds, Severity: SeverityInfo, Seqs: seqList(seqs),
		Diagnosis: "the log holds event kinds this build does not know: " + names +
			". A newer build wrote them; replay counts them and applies nothing from them, so its findings may be incomplete.",
		Next: "run replay with the build that wrote the log",
	}}
}

// group returns the sort group of delegation id's findings.
func (st *state) group(id string) uint64 {
	if d := st.ds[id]; d != nil {
		return d.first
	}
	return 0
}
