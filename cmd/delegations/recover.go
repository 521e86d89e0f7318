package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/delegations/delegations/eventlog"
	"github.com/delegations/delegations/projection"
	"github.com/delegations/delegations/replay"
)

var recoverVerb = verb{
	name:     "recover",
	synopsis: "",
	summary:  "copy every intact record of a damaged log into a new one, keep the damaged file beside it, rebuild views and artifacts (daemon stopped)",
	example:  "delegations recover",
	run:      runRecover,
}

// recoverReport is what recover did, for people and (--json) machines.
type recoverReport struct {
	Log     string `json:"log"`
	Damaged string `json:"damaged"` // where the old file is now
	// Empty: the log was zero bytes; Artifacts counts the artifact files
	// beside it, which `import` adopts.
	Empty      bool                  `json:"empty,omitempty"`
	Artifacts  int                   `json:"artifacts,omitempty"`
	Damage     []string              `json:"damage"`
	Salvaged   int                   `json:"salvaged"`
	Reachable  int                   `json:"reachable"`       // found through the tree; the rest by scanning leaf pages
	LastSeq    uint64                `json:"lastSeq"`         // the highest old sequence number salvaged
	Lost       []uint64              `json:"lost"`            // old sequence numbers not salvaged, below LastSeq
	Conflicts  []uint64              `json:"conflicts"`       // two intact versions found; the first kept
	StaleOf    []uint64              `json:"staleChunksOf"`   // records whose chunk keys also held another payload's chunks, passed over
	Stale      int                   `json:"staleChunks"`     // how many such chunks
	Moved      int                   `json:"renumbered"`      // records whose sequence number changed
	FirstMove  uint64                `json:"firstRenumbered"` // the lowest old number that changed
	KeysLost   int                   `json:"idempotencyKeysDropped"`
	Rebuild    *replay.RebuildResult `json:"rebuild,omitempty"`
	RebuildErr string                `json:"rebuildError,omitempty"`
}

func runRecover(ctx context.Context, e *env, args []string) error {
	if _, err := parse(e, newFlags(e), args, 0); err != nil {
		return err
	}
	dir, err := stoppedDataDir(ctx, e, "recover replaces the log")
	if err != nil {
		return err
	}
	path := filepath.Join(dir, projection.LogFile)
	rep, err := recoverLog(path)
	if err != nil {
		return err
	}
	if !rep.Empty {
		res, err := replay.Rebuild(ctx, dir, projection.Options{LockTimeout: 2 * time.Second, Logger: e.logger()}, replay.Options{Progress: e.progress()})
		rep.Rebuild = res
		if err != nil {
			rep.RebuildErr = err.Error()
		}
	}
	if e.json {
		if err := writeJSON(e.stdout, rep); err != nil {
			return err
		}
	} else if _, err := fmt.Fprint(e.stdout, rep.text(dir)); err != nil {
		return err
	}
	if len(rep.Lost) > 0 || rep.Salvaged == 0 || rep.RebuildErr != "" || rep.Empty {
		return errFindings
	}
	return nil
}

// recoverLog salvages the log at path into a new file, then swaps them,
// keeping the old one as <path>.damaged-<UTC time>. It holds the log's lock
// throughout, so no other command opens either file meanwhile.
func recoverLog(path string) (*recoverReport, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("no log at %s: nothing to recover (check --data)", path)
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		return nil, fmt.Errorf("recover %s: %w", path, eventlog.ErrLocked)
	}
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	rep := &recoverReport{Log: path, Damaged: path + ".damaged-" + time.Now().UTC().Format("20060102T150405Z"), Damage: []string{}, Lost: []uint64{}, Conflicts: []uint64{}, StaleOf: []uint64{}}
	dir := filepath.Dir(path)
	if fi.Size() == 0 {
		rep.Empty = true
		rep.Artifacts = projection.CountArtifacts(dir, 1<<30)
		if err := os.Rename(path, rep.Damaged); err != nil {
			return nil, err
		}
		return rep, syncDir(dir)
	}
	s, err := eventlog.Salvage(path)
	if err != nil {
		return nil, err
	}
	for _, d := range s.Damage {
		rep.Damage = append(rep.Damage, d.Error())
	}
	rep.Salvaged, rep.Reachable, rep.Conflicts = len(s.Records), s.Reachable, append(rep.Conflicts, s.Conflicts...)
	rep.StaleOf, rep.Stale = append(rep.StaleOf, s.ChunkConflicts...), s.StaleChunks
	rep.Lost = append(rep.Lost, s.Lost()...)
	if n := len(s.Records); n > 0 {
		rep.LastSeq = s.Records[n-1].Seq
	}
	tmp := path + ".recovering"
	if err := os.Remove(tmp); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	res, err := eventlog.Restore(tmp, s.Records)
	if err != nil {
		os.Remove(tmp)
		return nil, err
	}
	rep.Moved, rep.KeysLost = len(res.Renumbered), res.KeysDropped
	for old := range res.Renumbered {
		if rep.FirstMove == 0 || old < rep.FirstMove {
			rep.FirstMove = old
		}
	}
	// Link first, then rename over: at every moment path holds a log (the
	// damaged one, then the recovered one), so a crash meanwhile never
	// leaves the next command to start an empty store.
	if err := os.Link(path, rep.Damaged); err != nil {
		os.Remove(tmp)
		return nil, err
	}
	if err := os.Rename(tmp, path); err != nil {
		return nil, fmt.Errorf("%w (the damaged log is also at %s, the recovered one at %s: rename it to %s)", err, rep.Damaged, tmp, path)
	}
	return rep, syncDir(dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

func (r *recoverReport) text(dir string) string {
	var b strings.Builder
	if r.Empty {
		fmt.Fprintf(&b, "The log %s was empty (0 bytes): every record it held is lost. It is kept as %s.\n", r.Log, r.Damaged)
		if r.Artifacts > 0 {
			fmt.Fprintf(&b, "%d artifact file(s) remain in %s: adopt them (as terminal, persisted, already notified delegations) with\n  delegations import %s\n", r.Artifacts, dir, dir)
		}
		b.WriteString("The next command starts a new, empty log.\n")
		return b.String()
	}
	fmt.Fprintf(&b, "Recovered %s: %d intact record(s) copied into a new log (%d through the tree, %d by scanning leaf pages).\n",
		r.Log, r.Salvaged, r.Reachable, r.Salvaged-r.Reachable)
	fmt.Fprintf(&b, "The old file is kept as %s.\n", r.Damaged)
	if len(r.Damage) == 0 {
		b.WriteString("No damage was found in the file's structure.\n")
	} else {
		fmt.Fprintf(&b, "Damage found (%d):\n", len(r.Damage))
		for _, d := range r.Damage {
			fmt.Fprintf(&b, "  %s\n", d)
		}
	}
	switch {
	case r.Salvaged == 0:
		fmt.Fprintf(&b, "Lost: everything: no intact record was found. The artifacts remain; `delegations import %s` adopts them.\n", dir)
	case len(r.Lost) == 0:
		fmt.Fprintf(&b, "Lost: nothing up to record %d (records after the last intact one, if there were any, cannot be known).\n", r.LastSeq)
	default:
		fmt.Fprintf(&b, "Lost: %d record(s): %s (of 1..%d; records after %d, if there were any, cannot be known).\n", len(r.Lost), seqRanges(r.Lost), r.LastSeq, r.LastSeq)
		fmt.Fprintf(&b, "Renumbered: %d record(s) from old record %d on moved down to close the gaps (a log has no gaps).\n"+
			"  Sequence numbers noted before (events --from, replay --until, Last-Event-ID) now name other records;\n"+
			"  idempotency keys are kept, so a retried command still finds its first result; each delegation's\n"+
			"  events are recounted, so one that lost an event is one version shorter, in the state its surviving events give.\n",
			r.Moved, r.FirstMove)
	}
	if len(r.Conflicts) > 0 {
		fmt.Fprintf(&b, "Two different intact versions were found of record(s) %s (a commit whose outcome was unknown); the first found was kept.\n", seqRanges(r.Conflicts))
	}
	if r.Stale > 0 {
		fmt.Fprintf(&b, "%d chunk(s) of payloads from commits that never completed were found under the keys of record(s) %s and passed over; each record kept its own.\n", r.Stale, seqRanges(r.StaleOf))
	}
	if r.KeysLost > 0 {
		fmt.Fprintf(&b, "%d record(s) were appended without their idempotency key, which an earlier record holds.\n", r.KeysLost)
	}
	switch {
	case r.RebuildErr != "":
		fmt.Fprintf(&b, "Rebuilding the views and artifacts failed: %s\nThe recovered log is in place; run `delegations replay` to see what is wrong.\n", r.RebuildErr)
	case r.Rebuild != nil && r.Rebuild.After != nil:
		fmt.Fprintf(&b, "Views and artifacts rebuilt from the recovered log.\n\nAfter the recovery:\n%s", r.Rebuild.After.String())
	}
	return b.String()
}

// seqRanges prints sorted sequence numbers as ranges: "3, 7-9".
func seqRanges(seqs []uint64) string {
	var parts []string
	for i := 0; i < len(seqs); {
		j := i
		for j+1 < len(seqs) && seqs[j+1] == seqs[j]+1 {
			j++
		}
		if i == j {
			parts = append(parts, fmt.Sprint(seqs[i]))
		} else {
			parts = append(parts, fmt.Sprintf("%d-%d", seqs[i], seqs[j]))
		}
		i = j + 1
	}
	return strings.Join(parts, ", ")
}
