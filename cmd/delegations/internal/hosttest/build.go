package hosttest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strings"
	"sync"
	"testing"
)

// The delegations binary is built once per test process, on first use, into
// a directory Cleanup removes.
var (
	binOnce sync.Once
	binDir  string
	binPath string
	binErr  error
)

// Delegations returns the path of the delegations binary built from
// ./cmd/delegations, with -race when the test binary is race-built.
func Delegations(tb testing.TB) string {
	tb.Helper()
	root := RepoRoot(tb)
	binOnce.Do(func() {
		if binDir, binErr = os.MkdirTemp("", "delegations-hosttest-"); binErr != nil {
			return
		}
		out := filepath.Join(binDir, "delegations")
		// go test puts its own GOROOT/bin first in PATH.
		args := []string{"build", "-o", out}
		if RaceEnabled() {
			args = append(args, "-race")
		}
		args = append(args, "./cmd/delegations")
		cmd := exec.Command("go", args...)
		cmd.Dir = root
		if b, err := cmd.CombinedOutput(); err != nil {
			binErr = fmt.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, b)
			return
		}
		binPath = out
	})
	if binErr != nil {
		tb.Fatalf("hosttest: build delegations: %v", binErr)
	}
	return binPath
}

// Cleanup removes what the package made for the whole test process (the
// built binary). TestMain calls it after m.Run.
func Cleanup() {
	if binDir != "" {
		os.RemoveAll(binDir)
	}
}

// RaceEnabled reports whether this test binary was built with -race.
func RaceEnabled() bool {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return false
	}
	for _, s := range bi.Settings {
		if s.Key == "-race" {
			return s.Value == "true"
		}
	}
	return false
}
