package replay

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/delegations/delegations/eventlog"
	"github.com/delegations/delegations/fsm"
	"github.com/delegations/delegations/projection"
)

// RebuildResult is what Rebuild did: the report before, the report after,
// the findings Before listed that After no longer has (Fixed), and how
// many more were fixed that Before did not list (FixedUnlisted).
type RebuildResult struct {
	Before        *Report   `json:"before"`
	After         *Report   `json:"after"`
	Fixed         []Finding `json:"fixed"`
	FixedUnlisted int       `json:"fixedUnlisted"`
}

// Rebuild regenerates every view and artifact of the data directory dir
// from its log, and replays before and after to show what it fixed and
// what is left.
//
// It first opens the log alone (no projection, no recovery) to replay it as
// it is; then it opens the store with store.Rebuild set, which drops every
// view and projects the whole log again, sweeps temporary files, writes
// again every artifact that is missing or differs from its persisted size
// and hash, leaving the right ones untouched, and persists terminal
// delegations that never were; then it replays again. An artifact the
// record no longer renders to byte for byte (an imported legacy file) is
// left alone and stays a finding. The caller must not hold the store open:
// Rebuild needs the file lock (store.LockTimeout bounds the wait). A log
// with damaged records cannot be rebuilt; the error says so and Before
// names them. opts.Progress sees both replays, one after the other.
func Rebuild(ctx context.Context, dir string, store projection.Options, opts Options) (*RebuildResult, error) {
	if !opts.Until.IsZero() {
		return nil, fmt.Errorf("rebuild %s: %w: a rebuild is of the whole log; drop --until", dir, fsm.ErrInvalid)
	}
	path := filepath.Join(dir, projection.LogFile)
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("rebuild %s: no log at %s (check --data)", dir, path)
	} else if err != nil {
		return nil, fmt.Errorf("rebuild %s: %w", dir, err)
	}
	res := &RebuildResult{Fixed: []Finding{}}

	l, err := eventlog.Open(path, eventlog.Options{LockTimeout: store.LockTimeout, Logger: store.Logger, ReadOnly: true})
	if err != nil {
		return nil, fmt.Errorf("rebuild %s: %w", dir, err)
	}
	res.Before, _, err = run(ctx, l, dir, opts, ModeReplay, true)
	if cerr := l.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("rebuild %s: %w", dir, cerr)
	}
	if err != nil {
		return nil, err // Run's errors name the directory
	}

	store.Rebuild = true
	s, err := projection.Open(dir, store)
	if err != nil {
		return res, fmt.Errorf("rebuild %s: %w", dir, err)
	}
	res.After, _, err = run(ctx, s.Log(), dir, opts, ModeReplay, true)
	if cerr := s.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("rebuild %s: %w", dir, cerr)
	}
	if err != nil {
		return res, err
	}
	left := map[string]bool{}
	for i := range res.After.Findings {
		left[res.After.Findings[i].key()] = true
	}
	// The last finding After lists of each code it does not list whole: a
	// finding Before listed that sorts after it may be among After's
	// unlisted ones, not fixed.
	lastListed := map[string]*Finding{}
	for i := range res.After.Findings {
		if f := &res.After.Findings[i]; res.After.Unlisted[f.Code] > 0 {
			if last := lastListed[f.Code]; last == nil || compareFindings(f, last) > 0 {
				lastListed[f.Code] = f
			}
		}
	}
	fixed := map[string]int{}
	for _, f := range res.Before.Findings {
		if last := lastListed[f.Code]; left[f.key()] || last != nil && compareFindings(&f, last) > 0 {
			continue
		}
		res.Fixed = append(res.Fixed, f)
		fixed[f.Code]++
	}
	// A code's findings the lists do not explain: as many fewer as there
	// are, less those the listed ones account for.
	total := func(r *Report, code string) int {
		n := r.Unlisted[code]
		for i := range r.Findings {
			if r.Findings[i].Code == code {
				n++
			}
		}
		return n
	}
	for code := range res.Before.Unlisted {
		res.FixedUnlisted += max(0, total(res.Before, code)-total(res.After, code)-fixed[code])
	}
	return res, nil
}
