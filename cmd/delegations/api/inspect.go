package api

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/delegations/delegations/eventlog"
	"github.com/delegations/delegations/fsm"
	"github.com/delegations/delegations/replay"
)

// ReplayRequest is the body of POST /v1/replay. Until is a sequence number
// or an RFC 3339 time: the state as of that point.
type ReplayRequest struct {
	Until string `json:"until,omitempty"`
}

// VerifyRequest is the body of POST /v1/verify.
type VerifyRequest struct{}

// ImportRequest is the body of POST /v1/import: the directory of the
// plugin's artifacts, absolute.
type ImportRequest struct {
	Dir string `json:"dir"`
}

// Rendered is the answer of the reporting verbs (replay, verify, timeline,
// import): the report as JSON, the same report as text for people, and
// whether it found something wrong (the CLI then exits 1).
type Rendered struct {
	JSON   json.RawMessage `json:"report"`
	Text   string          `json:"text"`
	Failed bool            `json:"failed"`
}

// Replay replays log (of data directory dir, whose daemon on a shared log
// is self) and reports findings; see replay.Run. The CLI calls it on the
// log opened alone when no daemon runs, so that it sees the data
// directory exactly as it is.
func Replay(ctx context.Context, log *eventlog.Log, dir, self string, r ReplayRequest, progress func(done, total int)) (Rendered, error) {
	var until replay.Point
	if r.Until != "" {
		var err error
		if until, err = replay.ParsePoint(r.Until); err != nil {
			return Rendered{}, fmt.Errorf("until: %w", err)
		}
	}
	rep, err := replay.Run(ctx, log, dir, replay.Options{Until: until, Progress: progress, Self: self})
	if err != nil {
		return Rendered{}, err
	}
	return render(rep, rep.String(), rep.Failed())
}

// Verify checks records, indexes, views and artifacts of data directory
// dir, whose daemon on a shared log is self; see replay.Verify.
func Verify(ctx context.Context, log *eventlog.Log, dir, self string, progress func(done, total int)) (Rendered, error) {
	rep, err := replay.Verify(ctx, log, dir, replay.Options{Progress: progress, Self: self})
	if err != nil {
		return Rendered{}, err
	}
	return render(rep, rep.String(), rep.Failed())
}

// Timeline lists every event of one delegation; see replay.ReadTimeline.
func Timeline(ctx context.Context, log *eventlog.Log, id string) (Rendered, error) {
	id = strings.TrimSpace(id)
	if err := fsm.ValidateID(id); err != nil {
		return Rendered{}, err
	}
	tl, err := replay.ReadTimeline(ctx, log, id)
	if err != nil {
		return Rendered{}, err
	}
	return render(tl, tl.String(), tl.Problem != "")
}

func render(v any, text string, failed bool) (Rendered, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return Rendered{}, err
	}
	return Rendered{JSON: b, Text: text, Failed: failed}, nil
}

// Replay replays the store's log; see the function Replay.
func (s *Service) Replay(ctx context.Context, r ReplayRequest) (Rendered, error) {
	return Replay(ctx, s.Store().Log(), s.Store().Dir(), s.Store().Self(), r, s.OnProgress)
}

// Verify verifies the store; see the function Verify.
func (s *Service) Verify(ctx context.Context, _ VerifyRequest) (Rendered, error) {
	return Verify(ctx, s.Store().Log(), s.Store().Dir(), s.Store().Self(), s.OnProgress)
}

// Timeline lists one delegation's events; see the function Timeline.
func (s *Service) Timeline(ctx context.Context, r IDRequest) (Rendered, error) {
	return Timeline(ctx, s.Store().Log(), r.ID)
}

// Import adopts the plugin's artifact files under r.Dir; see
// projection.Store.Import. It fails (exit 1) when a file was refused.
func (s *Service) Import(ctx context.Context, r ImportRequest) (Rendered, error) {
	if !filepath.IsAbs(r.Dir) {
		return Rendered{}, fmt.Errorf("%w: dir %q is not absolute: the daemon does not share the caller's working directory", fsm.ErrInvalid, r.Dir)
	}
	if fi, err := os.Stat(r.Dir); err != nil || !fi.IsDir() {
		return Rendered{}, fmt.Errorf("%w: dir %q is not a directory (%v)", fsm.ErrInvalid, r.Dir, err)
	}
	res, err := s.Store().Import(ctx, r.Dir, s.OnProgress)
	if err != nil {
		return Rendered{}, err
	}
	var b strings.Builder
	for _, f := range res.Files {
		if f.Outcome != "imported" {
			fmt.Fprintf(&b, "%-8s %s: %s\n", f.Outcome, f.Path, f.Reason)
		}
	}
	copied := ""
	if res.Copied {
		copied = " (copied into the data directory)"
	}
	fmt.Fprintf(&b, "%d imported, %d skipped, %d refused from %s%s\n", res.Imported, res.Skipped, res.Refused, res.Dir, copied)
	return render(res, b.String(), res.Refused > 0)
}
