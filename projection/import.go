package projection

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/cespare/xxhash/v2"

	"github.com/delegations/delegations/eventlog"
	"github.com/delegations/delegations/fsm"
	"github.com/delegations/delegations/projection/artifact"
)

// Import adopts the plugin's artifact files: the store takes them over as
// terminal delegations, one imported event each, so that list, read and
// replay know them.
//
// How an imported delegation relates to the views: it is terminal and
// persisted from the start, its artifact being the legacy file exactly as
// it is (the event records the file's size and xxhash; a legacy file is
// not necessarily what artifact.Render writes, and nothing rewrites it). It
// is indexed under its root session, so list shows it and read returns the
// file verbatim (and records the read). It produces no notification, joins
// no cycle and is not unread: the plugin delivered it long ago, and a
// compacted context should not suddenly carry old results.

// ImportOutcome says what Import did with one directory entry.
type ImportOutcome string

// Import outcomes.
const (
	// ImportImported: an imported event was appended for the file.
	ImportImported ImportOutcome = "imported"
	// ImportSkipped: the store already knows the delegation (imported
	// before, or a delegation of its own with that id).
	ImportSkipped ImportOutcome = "skipped"
	// ImportRefused: the entry is not an artifact Import can adopt; Reason
	// says why.
	ImportRefused ImportOutcome = "refused"
)

// ImportFile is Import's account of one entry of the imported directory.
type ImportFile struct {
	Path    string        `json:"path"` // relative to the imported directory, slash-separated
	ID      string        `json:"id,omitempty"`
	Outcome ImportOutcome `json:"outcome"`
	Reason  string        `json:"reason,omitempty"` // why it was skipped or refused
	Seq     uint64        `json:"seq,omitempty"`    // the imported event, or the first event of the known delegation
}

// ImportResult is what Import did: counts, and one entry per file looked at.
type ImportResult struct {
	Dir      string       `json:"dir"`    // the imported directory, absolute
	Copied   bool         `json:"copied"` // files were copied into the data directory (Dir is elsewhere)
	Imported int          `json:"imported"`
	Skipped  int          `json:"skipped"`
	Refused  int          `json:"refused"`
	Files    []ImportFile `json:"files"`
}

func (r *ImportResult) add(f ImportFile) {
	switch f.Outcome {
	case ImportImported:
		r.Imported++
	case ImportSkipped:
		r.Skipped++
	default:
		r.Refused++
	}
	r.Files = append(r.Files, f)
}

// Import adopts the artifact files under dir, laid out as the plugin writes
// them: <dir>/<project id>/<root session id>/<id>.md. Each file is read
// with artifact.Parse (the plugin's parse-back rules; legacy files without
// **Session:** included) and becomes one imported event (fsm.KindImported)
// whose time is the file's **Completed:** time (else **Started:**, else its
// modification time). When dir is not the data directory, the file is first
// copied to the same relative path inside it.
//
// Import is idempotent: the event carries an idempotency key derived from
// the id and the xxhash of the content, and a delegation id the store
// already knows is skipped, so importing a directory twice imports once.
//
// It refuses, with a reason per entry and without stopping: symbolic links
// (never followed, at any level; dir itself is opened as named), names that
// break the id or session id grammar (fsm.ValidateID,
// fsm.ValidateSessionID), anything but regular files named <id>.md at the
// third level, files over artifact.MaxSize, files artifact.Parse refuses,
// fields over the store's bounds, and a file whose copy would replace a
// different file in the data directory. Entries whose names start with "."
// (the store's own log and temporary files) and sockets at the top level
// (a daemon's) are ignored. Every access goes through os.Root on dir, so
// nothing outside it is read.
//
// Imported delegations are terminal and persisted with the file as it is,
// indexed under their root session, never notified and not unread (see
// the comment at the top of this file).
//
// progress, when not nil, is called with the number of candidate files
// done (0 first) and their total, after each one; the library never prints.
// An error is returned only when the store cannot go on (the directory
// cannot be read, the log fails, ctx ends); the result then holds what was
// done so far.
func (s *Store) Import(ctx context.Context, dir string, progress func(done, total int)) (ImportResult, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return ImportResult{}, fmt.Errorf("import %s: %w", dir, err)
	}
	res := ImportResult{Dir: abs, Files: []ImportFile{}}
	root, err := os.OpenRoot(abs)
	if err != nil {
		return res, fmt.Errorf("import %s: %w", abs, err)
	}
	defer root.Close()
	res.Copied = !importSameDir(abs, s.dir)

	candidates, err := importScan(root, &res)
	if err != nil {
		return res, fmt.Errorf("import %s: %w", abs, err)
	}
	if progress != nil {
		progress(0, len(candidates))
	}
	for i, c := range candidates {
		if err := ctx.Err(); err != nil {
			return res, fmt.Errorf("import %s: %w", abs, err)
		}
		f, err := s.importFile(ctx, root, c, res.Copied)
		if err != nil {
			return res, fmt.Errorf("import %s: %s: %w", abs, c.rel, err)
		}
		res.add(f)
		if progress != nil {
			progress(i+1, len(candidates))
		}
	}
	return res, nil
}

// importCandidate is a file that looks like an artifact by its place and name.
type importCandidate struct {
	rel             string // <project>/<root>/<id>.md, slash-separated
	project, rootID string
}

// importScan walks the three levels of dir and returns the candidate files
// in name order, recording every refused entry in res. Symbolic links are
// refused, never followed (WalkDir takes entry types from the directory).
func importScan(root *os.Root, res *ImportResult) ([]importCandidate, error) {
	const layout = "want <project id>/<root session id>/<id>.md"
	var out []importCandidate
	refuse := func(rel, reason string) {
		res.add(ImportFile{Path: rel, Outcome: ImportRefused, Reason: reason})
	}
	err := fs.WalkDir(root.FS(), ".", func(rel string, d fs.DirEntry, err error) error {
		if rel == "." {
			return err // the directory itself cannot be listed: nothing to import
		}
		if err != nil {
			refuse(rel, fmt.Sprintf("cannot list: %v", err))
			return nil
		}
		name, level := d.Name(), strings.Count(rel, "/")+1
		switch {
		case strings.HasPrefix(name, "."): // the store's own files and temporary files among them
			if d.IsDir() {
				return fs.SkipDir
			}
			return nil
		case level == 1 && d.Type()&(fs.ModeSocket|fs.ModeNamedPipe) != 0:
			return nil // a daemon's socket in the data directory
		case d.Type()&fs.ModeSymlink != 0:
			refuse(rel, "symbolic link; not followed")
			return nil
		}
		if level < 3 {
			field := fsm.FieldProjectID
			if level == 2 {
				field = fsm.FieldRootSessionID
			}
			if !d.IsDir() {
				refuse(rel, "not a directory; "+layout)
			} else if err := fsm.ValidateSessionID(field, name); err != nil {
				refuse(rel, err.Error())
				return fs.SkipDir
			}
			return nil
		}
		switch {
		case d.IsDir():
			refuse(rel, "a directory where artifact files belong; "+layout)
			return fs.SkipDir
		case !d.Type().IsRegular():
			refuse(rel, fmt.Sprintf("not a regular file (%s)", d.Type()))
		case !strings.HasSuffix(name, ".md"):
			refuse(rel, "not an artifact file; want <id>.md")
		default:
			if err := fsm.ValidateID(strings.TrimSuffix(name, ".md")); err != nil {
				refuse(rel, err.Error())
				return nil
			}
			parts := strings.Split(rel, "/")
			out = append(out, importCandidate{rel: rel, project: parts[0], rootID: parts[1]})
		}
		return nil
	})
	return out, err
}

// importFile adopts one candidate. Problems with the file are a refusal in
// the returned ImportFile; an error means the store cannot go on.
func (s *Store) importFile(ctx context.Context, root *os.Root, c importCandidate, copyIn bool) (ImportFile, error) {
	id := strings.TrimSuffix(path.Base(c.rel), ".md")
	f := ImportFile{Path: c.rel, ID: id, Outcome: ImportRefused}
	content, mtime, reason := importRead(root, c.rel)
	if reason != "" {
		f.Reason = reason
		return f, nil
	}
	p, err := artifact.Parse(c.rel, content)
	if err != nil {
		f.Reason = err.Error()
		return f, nil
	}
	if err := importValidate(&p); err != nil {
		f.Reason = err.Error()
		return f, nil
	}
	rel, err := artifact.RelPath(c.project, c.rootID, id)
	if err != nil {
		f.Reason = err.Error()
		return f, nil
	}
	sum := xxhash.Sum64(content)

	if known, err := s.Get(id); err == nil {
		f.Outcome = ImportSkipped
		switch same := known.ArtifactPath == rel && known.ArtifactHash == sum && known.ArtifactSize == int64(len(content)); {
		case !known.TimeoutAt.IsZero():
			// Only a registration sets a deadline.
			f.Reason = "already known: the store's own delegation with this id"
		case same:
			f.Reason = "already imported"
		default:
			f.Reason = "already imported from " + known.ArtifactPath + " with other content (a file with the same id, or this file changed since)"
		}
		return f, nil
	} else if !errors.Is(err, fsm.ErrNotFound) {
		return f, err
	}

	if copyIn {
		switch have, err := artifact.Read(s.dir, rel); {
		case err == nil && !bytes.Equal(have, content):
			f.Reason = fmt.Sprintf("the data directory already holds a different %s; import the data directory first, or move that file aside", rel)
			return f, nil
		case err == nil:
			// The same bytes are there already (an earlier, interrupted import).
		case errors.Is(err, fs.ErrNotExist):
			if _, _, err := artifact.Write(s.dir, rel, content); err != nil {
				return f, fmt.Errorf("copy into the data directory: %w", err)
			}
		default:
			f.Reason = fmt.Sprintf("cannot check %s in the data directory: %v", rel, err)
			return f, nil
		}
	}

	ev := fsm.Event{
		Kind: fsm.KindImported,
		ID:   id,
		At:   importTime(&p, mtime),
		Registration: fsm.Registration{
			ProjectID: c.project, RootSessionID: c.rootID, SessionID: p.Session, Agent: p.Agent,
		},
		Status:       p.Status,
		Title:        p.Title,
		Description:  p.Description,
		Result:       p.Result,
		ArtifactPath: rel,
		ArtifactSize: int64(len(content)),
		ArtifactHash: sum,
	}
	if p.Status == fsm.Error {
		// Keep the error where the record has it: the result text is
		// "Error: <error>" (the plugin's result text by terminal status).
		ev.Error = strings.TrimPrefix(p.Result, "Error: ")
	}
	res, err := s.record(ctx, id, importKey(id, sum), 0, []fsm.Event{ev})
	switch {
	case errors.Is(err, eventlog.ErrConflict):
		// Registered or imported between the check and the append.
		f.Outcome, f.Reason = ImportSkipped, "already known: the store has a delegation with this id"
		return f, nil
	case errors.Is(err, eventlog.ErrInvalid):
		f.Reason = err.Error()
		return f, nil
	case err != nil:
		return f, err
	case res.Duplicate:
		f.Outcome, f.Reason, f.Seq = ImportSkipped, "already imported", res.First
		return f, nil
	}
	f.Outcome, f.Seq = ImportImported, res.First
	return f, nil
}

// importKey is the idempotency key of the imported event for the file of
// delegation id whose content has xxhash sum.
func importKey(id string, sum uint64) string {
	return fmt.Sprintf("import:%s:%016x", id, sum)
}

// importRead reads a candidate without following a symlink: the entry must
// be a regular file no larger than artifact.MaxSize before and after it is
// opened. A non-empty reason means it is refused.
func importRead(root *os.Root, rel string) (content []byte, mtime time.Time, reason string) {
	before, err := root.Lstat(rel)
	switch {
	case err != nil:
		return nil, mtime, fmt.Sprintf("cannot read: %v", err)
	case before.Mode()&fs.ModeSymlink != 0:
		return nil, mtime, "symbolic link; not followed"
	case !before.Mode().IsRegular():
		return nil, mtime, fmt.Sprintf("not a regular file (%s)", before.Mode().Type())
	case before.Size() > artifact.MaxSize:
		return nil, mtime, fmt.Sprintf("%d bytes, over the artifact limit of %d", before.Size(), artifact.MaxSize)
	}
	fh, err := root.Open(rel)
	if err != nil {
		return nil, mtime, fmt.Sprintf("cannot read: %v", err)
	}
	defer fh.Close()
	after, err := fh.Stat()
	if err != nil {
		return nil, mtime, fmt.Sprintf("cannot read: %v", err)
	}
	if !os.SameFile(before, after) {
		return nil, mtime, "replaced while being imported; run the import again"
	}
	content, err = io.ReadAll(io.LimitReader(fh, artifact.MaxSize+1))
	if err != nil {
		return nil, mtime, fmt.Sprintf("cannot read: %v", err)
	}
	if len(content) > artifact.MaxSize {
		return nil, mtime, fmt.Sprintf("over the artifact limit of %d bytes", artifact.MaxSize)
	}
	return content, after.ModTime(), ""
}

// importValidate checks the parsed fields against the bounds the store
// applies to its own commands.
func importValidate(p *artifact.Parsed) error {
	if p.Session != "" {
		if err := fsm.ValidateSessionID(fsm.FieldSessionID, p.Session); err != nil {
			return err
		}
	}
	if p.Agent != "" {
		if err := fsm.ValidateName(fsm.FieldAgent, p.Agent); err != nil {
			return err
		}
	}
	for _, t := range []struct {
		field, value string
		max          int
	}{
		{fsm.FieldTitle, p.Title, fsm.MaxTitleLen},
		{fsm.FieldDescription, p.Description, fsm.MaxDescriptionLen},
		{fsm.FieldResult, p.Result, fsm.MaxResultLen},
	} {
		if err := fsm.ValidateText(t.field, t.value, t.max); err != nil {
			return err
		}
	}
	return nil
}

// importTime is when the legacy delegation ended: its **Completed:** time,
// else its **Started:** time, else the file's modification time, in
// milliseconds as the store keeps times. Times the log cannot hold (Unix
// nanoseconds) fall back the same way.
func importTime(p *artifact.Parsed, mtime time.Time) time.Time {
	for _, t := range []time.Time{p.Completed, p.Started, mtime} {
		if t.Year() >= 1971 && t.Year() < 2260 {
			return t.UTC().Truncate(time.Millisecond)
		}
	}
	return time.Unix(0, 0).UTC().Add(time.Millisecond) // a file dated outside 1971-2259: keep it importable
}

// importSameDir reports whether a and b name the same directory.
func importSameDir(a, b string) bool {
	ai, err := os.Stat(a)
	if err != nil {
		return false
	}
	bi, err := os.Stat(b)
	return err == nil && os.SameFile(ai, bi)
}

// persistedContent reports whether b is the artifact d's persisted event
// recorded: the same size and xxhash.
func persistedContent(d *fsm.Delegation, b []byte) bool {
	return !d.PersistedAt.IsZero() && int64(len(b)) == d.ArtifactSize && xxhash.Sum64(b) == d.ArtifactHash
}
