// Package artifact holds the texts of the background-agents plugin's format
// and the files that keep them: the markdown artifact of a finished
// delegation (Render, and Parse with the plugin's parse-back rules), the
// notifications and listings that point at it, and the atomic writer and
// reader of artifact files under a data directory (Write, Read), which no
// id, symlink or ".." can lead outside it.
package artifact

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/cespare/xxhash/v2"

	"github.com/delegations/delegations/fsm"
)

// Artifact files live at <data dir>/<project id>/<root session id>/<id>.md,
// the plugin's layout. Every operation goes through an os.Root opened on
// the data directory, so no id, symlink or ".." can reach outside it, and
// every path part is validated before anything touches the disk.

// File modes: artifacts hold results, so only the owner may read them.
const (
	artifactFileMode = 0o600
	artifactDirMode  = 0o700
)

// artifactTempInfix marks a temp file: ".<id>.md.tmp-<random hex>".
const artifactTempInfix = ".md.tmp-"

// RelPath returns <projectID>/<rootSessionID>/<id>.md, the
// artifact's path relative to the data directory. Each part is validated
// (fsm.ValidateSessionID, fsm.ValidateID) because they become path
// components; an error wraps fsm.ErrInvalid.
func RelPath(projectID, rootSessionID, id string) (string, error) {
	if err := validRel(projectID, rootSessionID, id); err != nil {
		return "", err
	}
	// What filepath.Join makes of parts with no separator, no "." and no
	// "..", which the checks above refuse.
	return projectID + sep + rootSessionID + sep + id + ".md", nil
}

const sep = string(filepath.Separator)

func validRel(projectID, rootSessionID, id string) error {
	if err := fsm.ValidateSessionID(fsm.FieldProjectID, projectID); err != nil {
		return err
	}
	if err := fsm.ValidateSessionID(fsm.FieldRootSessionID, rootSessionID); err != nil {
		return err
	}
	return fsm.ValidateID(id)
}

// IsRelPath reports whether rel is RelPath(projectID, rootSessionID, id),
// without making it: replay asks for every artifact it checks.
func IsRelPath(rel, projectID, rootSessionID, id string) bool {
	for _, part := range [...]string{projectID, sep, rootSessionID, sep, id, ".md"} {
		var ok bool
		if rel, ok = strings.CutPrefix(rel, part); !ok {
			return false
		}
	}
	return rel == "" && validRel(projectID, rootSessionID, id) == nil
}

// artifactParseRel checks that rel has exactly the shape RelPath
// returns and gives its directory (slash-separated, for os.Root) and id.
// rel is checked again here because Write and Read may be
// handed a path from elsewhere (a record, an import).
func artifactParseRel(rel string) (dir, id string, err error) {
	parts := strings.Split(filepath.ToSlash(rel), "/")
	if len(parts) != 3 {
		return "", "", fmt.Errorf("artifact path %q: %w: want <project id>/<root session id>/<id>.md", rel, fsm.ErrInvalid)
	}
	id, ok := strings.CutSuffix(parts[2], ".md")
	if !ok {
		return "", "", fmt.Errorf("artifact path %q: %w: want a file named <id>.md", rel, fsm.ErrInvalid)
	}
	if _, err := RelPath(parts[0], parts[1], id); err != nil {
		return "", "", fmt.Errorf("artifact path %q: %w", rel, err)
	}
	return parts[0] + "/" + parts[1], id, nil
}

// Write writes content to rel inside the data directory dir
// atomically: a reader sees the old file or the new one, never half of one,
// and after a crash the file is either absent, old or new. It creates the
// directories (mode 0700) as needed, writes ".<id>.md.tmp-<random>" (mode
// 0600) in the same directory, fsyncs it, renames it over the final name
// and fsyncs the directory (and its parents, the first time). All of
// it goes through os.Root on dir, so a symlink or ".." cannot lead outside
// dir. rel must have the shape RelPath returns; a bad rel or
// content over MaxSize is refused with an error wrapping
// fsm.ErrInvalid before anything touches the disk. It returns the size and
// the xxhash64 of content, which the persisted event records.
func Write(dir, rel string, content []byte) (size int64, sum uint64, err error) {
	err = write(dir, rel, int64(len(content)), func(f *os.File) error {
		_, err := f.Write(content)
		return err
	})
	if err != nil {
		return 0, 0, err
	}
	return int64(len(content)), Sum(content), nil
}

// WriteRendering is Write of r's bytes, written from its parts; their size
// and hash are r's (Len, Sum).
func WriteRendering(dir, rel string, r *Rendering) error {
	r.Sum() // checks the parts, before a byte is written
	return write(dir, rel, r.Len(), func(f *os.File) error {
		if _, err := f.Write(r.head); err != nil {
			return err
		}
		_, err := f.WriteString(r.text) // no copy: os.File writes the string's bytes
		return err
	})
}

// write is Write of size bytes, which put writes to the temp file.
func write(dir, rel string, size int64, put func(*os.File) error) (err error) {
	relDir, id, err := artifactParseRel(rel)
	if err != nil {
		return err
	}
	if size > MaxSize {
		return fmt.Errorf("write artifact %s: %w: %d bytes, over the limit of %d", rel, fsm.ErrInvalid, size, MaxSize)
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return fmt.Errorf("write artifact %s: %w", rel, err)
	}
	defer root.Close()

	if err := root.MkdirAll(relDir, artifactDirMode); err != nil {
		return fmt.Errorf("write artifact %s: %w", rel, err)
	}

	var rnd [8]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return fmt.Errorf("write artifact %s: %w", rel, err)
	}
	name := path.Join(relDir, "."+id+artifactTempInfix+hex.EncodeToString(rnd[:]))
	f, err := root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, artifactFileMode)
	if err != nil {
		return fmt.Errorf("write artifact %s: %w", rel, err)
	}
	defer func() {
		if err != nil {
			_ = root.Remove(name) // best effort: SweepTempFiles catches what is left
		}
	}()
	err = put(f)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write artifact %s: %w", rel, err)
	}
	if err = root.Rename(name, path.Join(relDir, id+".md")); err != nil {
		return fmt.Errorf("write artifact %s: %w", rel, err)
	}
	// The rename is durable once the directory is, and the directory once
	// its parents are: they are synced too until this process has seen
	// them synced (a directory another writer is creating at this moment
	// is not durable yet just because it exists).
	syncs := []string{relDir}
	dirKey := filepath.Join(dir, filepath.FromSlash(relDir))
	_, durable := durableDirs.Load(dirKey)
	if !durable {
		syncs = append(syncs, path.Dir(relDir), ".")
	}
	for _, d := range syncs {
		if serr := syncDir(root, d); serr != nil {
			// The file is in place; only its durability is in doubt.
			return fmt.Errorf("write artifact %s: sync directory %s: %w", rel, d, serr)
		}
	}
	durableDirs.Store(dirKey, struct{}{})
	return nil
}

// Sum is the hash of an artifact's content that Write returns and the
// persisted event records (xxhash64).
func Sum(content []byte) uint64 { return xxhash.Sum64(content) }

// durableDirs holds the session directories whose entries, and their
// parents', this process has synced: later writes there sync only the
// directory they rename in.
var durableDirs sync.Map

// syncDir is artifactSyncDir; tests count its calls.
var syncDir = artifactSyncDir

// artifactSyncDir fsyncs a directory inside root. Windows cannot sync a
// directory and does not need to.
func artifactSyncDir(root *os.Root, name string) error {
	if runtime.GOOS == "windows" {
		return nil
	}
	d, err := root.Open(name)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// ErrNotRegular reports something other than a regular file where an
// artifact belongs (a symlink, a FIFO, a directory). Write replaces
// it (the rename replaces a symlink itself, never its target).
var ErrNotRegular = errors.New("not a regular file")

// Read reads rel inside the data directory dir through os.Root,
// refusing anything but a regular file (a symlink is not followed: the
// error wraps ErrNotRegular) and anything over MaxSize.
// A missing file (or directory) gives an error wrapping fs.ErrNotExist; a
// bad rel gives one wrapping fsm.ErrInvalid, before anything touches the
// disk.
func Read(dir, rel string) ([]byte, error) {
	relDir, id, err := artifactParseRel(rel)
	if err != nil {
		return nil, err
	}
	name := path.Join(relDir, id+".md")
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("read artifact %s: %w", rel, err)
	}
	defer root.Close()
	// Check before opening: opening a FIFO planted there would block, and
	// a symlink is never followed (one pointing outside dir would make
	// os.Root refuse, and one inside would read another file).
	info, err := root.Lstat(name)
	if err != nil {
		return nil, fmt.Errorf("read artifact %s: %w", rel, err)
	}
	if !info.Mode().IsRegular() {
		return nil, fmt.Errorf("read artifact %s: %w: %w (%s)", rel, fsm.ErrInvalid, ErrNotRegular, info.Mode().Type())
	}
	f, err := root.Open(name)
	if err != nil {
		return nil, fmt.Errorf("read artifact %s: %w", rel, err)
	}
	defer f.Close()
	// Sized as Lstat found it, plus a byte to see the end (or a file
	// grown since): a file of megabytes is read in one piece, not through
	// io.ReadAll's doubling copies.
	b := make([]byte, 0, min(info.Size(), MaxSize)+1)
	for r := io.LimitReader(f, MaxSize+1); ; {
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
		n, err := r.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("read artifact %s: %w", rel, err)
		}
	}
	if len(b) > MaxSize {
		return nil, fmt.Errorf("read artifact %s: %w: over the limit of %d bytes", rel, fsm.ErrInvalid, MaxSize)
	}
	return b, nil
}

// SweepTempFiles removes the temp files a crash left behind: regular files
// named ".<id>.md.tmp-<suffix>" in the root-session directories two levels
// under dir (<project id>/<root session id>/). It looks only in directories
// whose names are valid ids, follows no symlink, and touches nothing else.
// It returns how many files it removed; it keeps going past a failure and
// returns every error joined. Call it at start-up, before artifacts are
// written: it cannot tell a stale temp file from one being written now.
func SweepTempFiles(dir string) (int, error) {
	return SweepTempFilesBefore(dir, time.Time{}, func() bool { return false })
}

// SweepTempFilesBefore is SweepTempFiles, for only the temp files last modified
// before a time when it is not zero, that stops early (without an error)
// once stopped reports true.
func SweepTempFilesBefore(dir string, before time.Time, stopped func() bool) (int, error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return 0, fmt.Errorf("sweep temp files in %s: %w", dir, err)
	}
	defer root.Close()
	var errs []error
	removed := 0
	err = fs.WalkDir(root.FS(), ".", func(rel string, d fs.DirEntry, err error) error {
		level := strings.Count(rel, "/") + 1
		switch {
		case rel == ".":
			return err // the data directory cannot be listed
		case err != nil:
			errs = append(errs, err)
			return nil
		case stopped():
			return fs.SkipAll
		case level < 3: // <project id>/<root session id>, nothing else
			field := fsm.FieldProjectID
			if level == 2 {
				field = fsm.FieldRootSessionID
			}
			if !d.IsDir() || fsm.ValidateSessionID(field, d.Name()) != nil {
				return skip(d)
			}
			return nil
		case !d.Type().IsRegular() || !artifactIsTemp(d.Name()):
			return skip(d)
		}
		if !before.IsZero() {
			if info, err := d.Info(); err != nil || !info.ModTime().Before(before) {
				return nil // gone, or written since
			}
		}
		if err := root.Remove(rel); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
			return nil
		}
		removed++
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("sweep temp files in %s: %w", dir, err)
	}
	if err := errors.Join(errs...); err != nil {
		return removed, fmt.Errorf("sweep temp files in %s: %w", dir, err)
	}
	return removed, nil
}

// skip passes over d in a WalkDir: its whole tree when it is a directory.
func skip(d fs.DirEntry) error {
	if d.IsDir() {
		return fs.SkipDir
	}
	return nil
}

// artifactIsTemp reports whether name is a temp file Write makes:
// ".<valid id>.md.tmp-<non-empty suffix>".
func artifactIsTemp(name string) bool {
	rest, ok := strings.CutPrefix(name, ".")
	if !ok {
		return false
	}
	id, suffix, ok := strings.Cut(rest, artifactTempInfix)
	return ok && suffix != "" && fsm.ValidateID(id) == nil
}
