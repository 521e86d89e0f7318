package replay

import (
	"context"
	"errors"
	"fmt"

	"github.com/delegations/delegations/eventlog"
	"github.com/delegations/delegations/fsm"
)

// Verify checks the integrity of the store in data directory dir: every
// record's checksum, the log's own indexes (eventlog.Log.Verify), the views
// against the log, and the artifacts against their persisted events. It
// leaves out the lifecycle diagnoses (not notified, unread, overdue, late
// events), which are about what happened, not about damage. opts.Until
// must be zero: verify is about the whole file.
func Verify(ctx context.Context, log *eventlog.Log, dir string, opts Options) (*Report, error) {
	if !opts.Until.IsZero() {
		return nil, fmt.Errorf("verify %s: %w: verify checks the whole log; use replay for a point in time", dir, fsm.ErrInvalid)
	}
	var problems []error
	// Not prefetched: the log's own walk asks ahead for what it reaches
	// (eventlog's readAhead), and leaves the file cached for the scan.
	if err := log.Verify(ctx); err != nil {
		joined, ok := err.(interface{ Unwrap() []error })
		if !ok {
			return nil, err
		}
		problems = joined.Unwrap()
	}
	rep, sc, err := run(ctx, log, dir, opts, ModeVerify, true)
	if err != nil {
		return nil, err
	}
	reported := func(seq uint64) bool {
		for _, r := range sc.corrupt {
			if seq >= r.first && seq <= r.last {
				return true
			}
		}
		return false
	}
	var extra []Finding
	for _, p := range problems {
		var ce *eventlog.CorruptError
		if errors.As(p, &ce) && ce.Seq != 0 && reported(ce.Seq) {
			continue // the scan reported the record itself
		}
		f := Finding{Code: CodeIndexCorrupt, Severity: SeverityError, Seqs: []uint64{},
			Diagnosis: "the log's indexes disagree with its records: " + p.Error() + ". Stream reads (timeline, commands on that delegation) and idempotent retries may go wrong.",
			Next:      "restore the log file from a backup; the records themselves are listed by delegations replay",
		}
		if ce != nil && ce.Seq != 0 {
			f.Seqs = []uint64{ce.Seq}
		}
		extra = append(extra, f)
	}
	rep.add(extra...)
	return rep, nil
}
