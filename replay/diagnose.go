package replay

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/delegations/delegations/eventlog"
	"github.com/delegations/delegations/fsm"
)

// Diagnose replays the events of delegation id alone (its stream, as
// ReadTimeline reads it) and returns what Run finds about it as of
// opts.Now (zero: time.Now()): the step that did not happen, late events,
// its artifact's state and payloads that do not decode. It leaves out
// what needs the whole log: the comparison with the views, its parent's
// all-complete notification and damage outside its stream. Its cost is
// one stream and one artifact read, whatever the size of the log. An id
// without events has no findings.
func Diagnose(ctx context.Context, log *eventlog.Log, dir, id string, opts Options) ([]Finding, error) {
	if err := fsm.ValidateID(id); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	opts.defaults()
	now := opts.Now
	if now.IsZero() {
		now = time.Now()
	}
	recs, err := log.Stream(id)
	var ce *eventlog.CorruptError
	if err != nil && !errors.As(err, &ce) {
		return nil, fmt.Errorf("diagnose %s: %w", id, err)
	}
	arts := newArtifacts(ctx, dir, opts.Self, false)
	st := newState(arts)
	st.stream = func(_ string, before uint64) ([]eventlog.Record, error) {
		i, _ := slices.BinarySearchFunc(recs, before, func(r eventlog.Record, seq uint64) int { return cmp.Compare(r.Seq, seq) })
		return recs[:i], nil
	}
	for i := range recs {
		e, err := decode(&recs[i])
		st.apply(&recs[i], &e, err)
	}
	d := st.ds[id]
	var fs []Finding
	if ce != nil {
		if d != nil {
			d.damaged = true
			if d.persisted != 0 {
				arts.recheck(d)
			}
		}
		fs = append(fs, Finding{Code: CodeCorruptRecord, Severity: SeverityError, Delegation: id, Seqs: []uint64{ce.Seq},
			Diagnosis: fmt.Sprintf("record %d of %s fails its checks (%s); the replay of %s stops before it, so its steps are not diagnosed.", ce.Seq, id, ce.Reason, id),
			Missing:   "an intact record",
			Next:      "delegations verify lists every damaged record; restore the log file from a backup (the store cannot rebuild past a damaged record)",
		})
	}
	fs = append(fs, st.bad...)
	fs = append(fs, unknownKinds(st)...)
	if err := arts.wait(); err != nil {
		return nil, fmt.Errorf("diagnose %s: %w", id, err)
	}
	rep := Report{found: arts.found}
	add := func(f Finding) {
		if d != nil && f.Status == "" && !d.damaged {
			f.Status = d.rec.State
		}
		rep.found.add(f)
	}
	for _, f := range fs {
		add(f)
	}
	clear(st.parents) // one stream says nothing of its parent's cycle
	lifecycle(dir, st, now, &opts, add)
	rep.found.fill(&rep)
	return rep.Findings, nil
}
