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

// The delegations binaries are built once per test process each, on first
// use, into a directory Cleanup removes.
var (
	binDir string
	builds = map[string]*binary{"": {}, TestTags: {}} // by build tags
)

type binary struct {
	once sync.Once
	path string
	err  error
}

// TestTags are the build tags of a test build: the program with its test
// hooks (serve --manual-clock and POST /v1/clock), which the shipped one
// does not contain.
const TestTags = "delegationstest"

// Delegations returns the path of the delegations binary built from
// ./cmd/delegations as it ships, with -race when the test binary is
// race-built.
func Delegations(tb testing.TB) string { return build(tb, "") }

// DelegationsTestBuild is Delegations built with TestTags.
func DelegationsTestBuild(tb testing.TB) string { return build(tb, TestTags) }

var (
	dirOnce sync.Once
	dirErr  error
)

func build(tb testing.TB, tags string) string {
	tb.Helper()
	root := RepoRoot(tb)
	b := builds[tags]
	b.once.Do(func() {
		dirOnce.Do(func() { binDir, dirErr = os.MkdirTemp("", "delegations-hosttest-") })
		if b.err = dirErr; b.err != nil {
			return
		}
		out := filepath.Join(binDir, tags, "delegations") // the program's name stays
		// go test puts its own GOROOT/bin first in PATH.
		args := []string{"build", "-o", out, "-tags", tags}
		if RaceEnabled() {
			args = append(args, "-race")
		}
		args = append(args, "./cmd/delegations")
		cmd := exec.Command("go", args...)
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			b.err = fmt.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, out)
			return
		}
		b.path = out
	})
	if b.err != nil {
		tb.Fatalf("hosttest: build delegations: %v", b.err)
	}
	return b.path
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
