package replay

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"sync"

	"github.com/cespare/xxhash/v2"

	"github.com/delegations/delegations/fsm"
	"github.com/delegations/delegations/projection/artifact"
)

// artifacts checks each persisted artifact when the replay applies its
// persisted event: its file against the size and hash the event recorded,
// and the record's rendering against them. The checks run in workers
// beside the fold; a check holds the record (texts and all) only until
// it is done, so nothing of a delegation stays for its artifact.
type artifacts struct {
	ctx  context.Context
	dir  string
	self string           // Options.Self
	jobs chan artifactJob // nil: checked inline (Diagnose)
	wg   sync.WaitGroup

	mu         sync.Mutex
	found      findingSet
	checked    int
	latest     map[string]uint64 // a delegation persisted again: the seq of its last check
	superseded int               // checks made again
}

// artifactJob is one persisted artifact to check.
type artifactJob struct {
	rec       fsm.Delegation // as persisted, texts included (to render it)
	first     uint64         // the delegation's first seq (the findings' group)
	persisted uint64         // the seq of its (first) persisted event
	seq       uint64         // the persisted event the check is of
	imported  bool
	damaged   bool // the delegation lost records: its rendering says nothing

	rendered   bool // renderSize and renderHash are given
	renderSize int64
	renderHash uint64
}

// artifactWorkers is how many artifacts are checked at once, and
// artifactQueue how many wait: a waiting check holds its record's texts.
const (
	artifactWorkers = 2
	artifactQueue   = 256
)

// newArtifacts starts checking artifacts under dir, of daemon self
// (Options.Self): in workers when concurrent, else inline.
func newArtifacts(ctx context.Context, dir, self string, concurrent bool) *artifacts {
	a := &artifacts{ctx: ctx, dir: dir, self: self}
	if !concurrent {
		return a
	}
	a.jobs = make(chan artifactJob, artifactQueue)
	for range artifactWorkers {
		a.wg.Go(func() {
			fr := &fileReader{dir: dir}
			defer fr.close()
			for j := range a.jobs {
				if ctx.Err() == nil {
					a.run(fr, &j)
				}
			}
		})
	}
	return a
}

// check queues the check of d's artifact, persisted as rec.
func (a *artifacts) check(d *delegation, rec *fsm.Delegation) {
	a.queue(artifactJob{rec: *rec, first: d.first, persisted: d.persisted, seq: d.persisted, imported: d.imported, damaged: d.damaged})
}

// again checks d's artifact again at seq, as rec (its texts dropped):
// persisted a second time, or owned by another daemon; size and hash are
// those of the record's rendering when first persisted. The earlier
// checks' findings are dropped.
func (a *artifacts) again(d *delegation, rec *fsm.Delegation, seq uint64, size int64, hash uint64) {
	a.mu.Lock()
	if a.latest == nil {
		a.latest = map[string]uint64{}
	}
	a.latest[rec.ID] = seq
	a.superseded++
	// The earlier checks' listed findings make room now, for the findings
	// that would otherwise be unlisted behind them; their unlisted ones
	// are dropped by wait, in one pass.
	a.found.removeListed(func(id string, s uint64) bool { return id == rec.ID && s < seq })
	a.mu.Unlock()
	a.queue(artifactJob{rec: *rec, first: d.first, persisted: d.persisted, seq: seq, imported: d.imported, damaged: d.damaged,
		rendered: true, renderSize: size, renderHash: hash})
}

func (a *artifacts) queue(j artifactJob) {
	if a.jobs == nil {
		fr := &fileReader{dir: a.dir}
		defer fr.close()
		a.run(fr, &j)
		return
	}
	a.jobs <- j
}

func (a *artifacts) run(fr *fileReader, j *artifactJob) {
	got := fr.read(&j.rec)
	if !j.rendered && !j.imported && !j.damaged {
		r := &j.rec
		if got.err == nil && got.size == r.ArtifactSize && got.hash == r.ArtifactHash && artifact.RenderIs(r, got.data) {
			// The file is as persisted and is the record's rendering: the
			// rendering's sum is the file's, not computed again.
			j.renderSize, j.renderHash = got.size, got.hash
		} else {
			j.renderSize, j.renderHash = artifact.RenderSum(r)
		}
	}
	f, bad := checkArtifact(a.dir, j, got)
	if bad && a.elsewhere(j.rec.Owner) {
		bad = false
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.checked++
	if bad && j.seq < a.latest[j.rec.ID] {
		bad = false // checked again meanwhile (again): that check's finding counts
	}
	if bad {
		f.Delegation, f.group, f.seq = j.rec.ID, j.first, j.seq
		if !j.damaged {
			f.Status = j.rec.State
		}
		a.found.add(f)
	}
}

// elsewhere reports whether the artifact of a delegation owned by owner
// is a file on another daemon's machine: on a log shared by several
// daemons, the owner keeps it in its own data directory (the daemon that
// persisted it wrote it there; one that takes the delegation over copies
// it into its own first). A file here is a copy, which a read here checks
// against the record and writes again from it when it differs: one a read
// wrote, or one left by a terminal command that lost the race to another
// daemon's (it writes the file while its append waits, and the append met
// a newer version). Neither its absence nor its bytes are a finding.
//
// What counts is the owner at the end of the replay: a check is made with
// the owner of the event it is of, and made again when an owned event
// moves the artifact into or out of this daemon's care (state.step).
func (a *artifacts) elsewhere(owner string) bool {
	return a.self != "" && owner != "" && owner != a.self
}

// wait returns once every queued check is done (the findings are in
// found, and checked counts them). Later checks run inline.
func (a *artifacts) wait() error {
	if a.jobs != nil {
		close(a.jobs)
		a.wg.Wait()
		a.jobs = nil
	}
	if err := a.ctx.Err(); err != nil {
		return err
	}
	if a.superseded > 0 {
		a.found.remove(func(id string, seq uint64) bool { return seq < a.latest[id] })
		a.checked -= a.superseded
		a.superseded, a.latest = 0, nil
	}
	return nil
}

// recheck checks d's artifact again, now known to be damaged, replacing
// its earlier findings. Only after wait.
func (a *artifacts) recheck(d *delegation) {
	a.found.remove(func(id string, _ uint64) bool { return id == d.rec.ID })
	a.checked--
	fr := &fileReader{dir: a.dir}
	defer fr.close()
	a.run(fr, &artifactJob{rec: d.rec, first: d.first, persisted: d.persisted, seq: d.last, imported: d.imported, damaged: true})
}

// fileRead is what an artifact file holds: its size, hash and bytes
// (valid until the fileReader's next read), or why it cannot be read.
type fileRead struct {
	size int64
	hash uint64
	data []byte
	err  error
}

// fileReader reads artifact files: the store's own files, at the path it
// renders for the record, through a cheaper path where the system has one
// (fast, read_linux.go: three system calls per file, a large part of the
// cost of a replay); anything else (an imported file, a link, a missing
// file, an error) with artifact.Read, whose rules and words the findings
// keep.
type fileReader struct {
	dir string
	buf []byte
	sys // what fast keeps open from one file to the next
}

func (fr *fileReader) read(r *fsm.Delegation) fileRead {
	if artifact.IsRelPath(r.ArtifactPath, r.ProjectID, r.RootSessionID, r.ID) {
		if b, ok := fr.fast(r.ProjectID, r.RootSessionID, r.ID+".md", r.ArtifactSize); ok {
			return fileRead{size: int64(len(b)), hash: xxhash.Sum64(b), data: b}
		}
	}
	b, err := artifact.Read(fr.dir, r.ArtifactPath)
	return fileRead{size: int64(len(b)), hash: xxhash.Sum64(b), data: b, err: err}
}

func checkArtifact(dir string, j *artifactJob, got fileRead) (Finding, bool) {
	r := &j.rec
	reproducible := !j.imported && !j.damaged && j.renderSize == r.ArtifactSize && j.renderHash == r.ArtifactHash
	err := got.err
	var code string
	switch {
	case errors.Is(err, fs.ErrNotExist):
		code = CodeArtifactMissing
	case err != nil:
		code = CodeArtifactUnreadable
	case got.size != r.ArtifactSize || got.hash != r.ArtifactHash:
		code = CodeArtifactChanged
	case !j.imported && !j.damaged && !reproducible:
		code = CodeArtifactNotReproduced
	default:
		return Finding{}, false // the words below are made only for a finding
	}
	path := filepath.Join(dir, r.ArtifactPath)
	f := Finding{Code: code, Path: path, Seqs: []uint64{j.persisted}, Severity: SeverityError, Missing: "an intact artifact"}
	written := fmt.Sprintf("%s was persisted at %s (record %d) as %s, %d bytes, xxhash %016x", r.ID, fmtT(r.PersistedAt), j.persisted, path, r.ArtifactSize, r.ArtifactHash)
	if j.imported {
		written = fmt.Sprintf("%s was imported at record %d from the plugin's file %s, %d bytes, xxhash %016x", r.ID, j.persisted, path, r.ArtifactSize, r.ArtifactHash)
	}
	fix := "delegations replay --rebuild writes it again from the log, byte for byte"
	if !reproducible {
		fix = "restore " + path + " from a backup: the log cannot regenerate this file byte for byte (delegations show " + r.ID + " prints what the log kept)"
		if j.imported {
			fix = "restore the plugin's file " + path + " from a backup: the store never rewrites an imported file (delegations show " + r.ID + " prints what the log kept)"
		}
	}
	switch code {
	case CodeArtifactMissing:
		f.Diagnosis = written + ", but the file is gone: delegation_read of it has nothing to return until it is restored."
		f.Next = fix
	case CodeArtifactUnreadable:
		f.Diagnosis = written + ", but the file cannot be read: " + err.Error() + "."
		f.Next = "fix the file's type or permissions; then " + fix
	case CodeArtifactChanged:
		f.Diagnosis = fmt.Sprintf("%s, but the file on disk is %d bytes, xxhash %016x: it was changed after it was written, and readers get the changed file.", written, got.size, got.hash)
		f.Next = fix
		if reproducible {
			f.Next += " (copy the changed file aside first if the change matters)"
		}
	default:
		f.Severity, f.Missing = SeverityInfo, ""
		f.Diagnosis = written + "; the file is intact, but the record now renders to other bytes (a build with another rendering wrote it): if the file were lost, a rebuild could not restore it byte for byte."
		f.Next = "keep a backup of " + path
	}
	return f, true
}
