package replay

import (
	"context"

	"github.com/delegations/delegations/eventlog"
)

// SetRoundEntries makes the view comparison's rounds n entries long, so
// that a small store spans many rounds; the returned func restores it.
func SetRoundEntries(n int) (restore func()) {
	old := roundEntries
	roundEntries = n
	return func() { roundEntries = old }
}

// Kept replays the log as Run does and returns how many delegations the
// fold keeps at the end, and how many it saw.
func Kept(ctx context.Context, log *eventlog.Log, dir string) (kept, seen int, err error) {
	_, sc, err := run(ctx, log, dir, Options{}, ModeReplay, false)
	if err != nil {
		return 0, 0, err
	}
	return len(sc.st.ds), sc.st.delegations, nil
}

// SetListLimit makes reports list n findings of each code; the returned
// func restores the limit.
func SetListLimit(n int) (restore func()) {
	old := listLimit
	listLimit = n
	return func() { listLimit = old }
}
