package api

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/delegations/delegations/fsm"
)

// BackupRequest is the body of POST /v1/backup: where to write the copy,
// an absolute path (the daemon does not share the caller's working
// directory) that does not exist yet, in an existing directory.
type BackupRequest struct {
	Path string `json:"path"`
}

// BackupResponse is the answer of backup.
type BackupResponse struct {
	Path    string `json:"path"`
	Bytes   int64  `json:"bytes"`
	LastSeq uint64 `json:"lastSeq"` // the last record in the copy, at least
}

// Backup writes a consistent copy of the log to r.Path while the daemon
// goes on serving (one read transaction; see eventlog.Log.Backup). It
// never overwrites a file: an existing path is refused with exists.
func (s *Service) Backup(_ context.Context, r BackupRequest) (BackupResponse, error) {
	return Backup(s.Store().Log(), r)
}

// Backup writes a copy of log as Service.Backup does; the CLI calls it on
// the log opened read-only when no daemon runs.
func Backup(log interface {
	Backup(string) (int64, error)
	Last() uint64
}, r BackupRequest) (BackupResponse, error) {
	if !filepath.IsAbs(r.Path) {
		return BackupResponse{}, fmt.Errorf("%w: path %q is not absolute", fsm.ErrInvalid, r.Path)
	}
	path := filepath.Clean(r.Path)
	if fi, err := os.Stat(filepath.Dir(path)); err != nil || !fi.IsDir() {
		return BackupResponse{}, fmt.Errorf("%w: the directory of %s does not exist", fsm.ErrInvalid, path)
	}
	last := log.Last()
	n, err := log.Backup(path)
	if errors.Is(err, fs.ErrExist) {
		return BackupResponse{}, fmt.Errorf("%w: %s exists; a backup never overwrites a file", fsm.ErrExists, path)
	}
	if err != nil {
		return BackupResponse{}, err
	}
	return BackupResponse{Path: path, Bytes: n, LastSeq: last}, nil
}
