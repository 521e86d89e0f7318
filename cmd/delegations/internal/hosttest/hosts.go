package hosttest

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// RequireEnv is the variable that turns a missing host from a skip into a
// failure when set to "require".
const RequireEnv = "DELEGATIONS_HOST_TESTS"

// versionsFile is the one home of the pinned hosts, relative to the repository root.
const versionsFile = ".ci/hosts.versions"

// Pin is one line of .ci/hosts.versions.
type Pin struct {
	Name    string // opencode, claude-code
	Version string
	Package string // npm package
	Binary  string // relative to the install prefix
}

// Dir is the install prefix of the pinned host under root.
func (p Pin) Dir(root string) string {
	return filepath.Join(root, ".cache", "hosts", p.Name+"-"+p.Version)
}

var (
	rootOnce sync.Once
	rootDir  string
	rootErr  error
)

// RepoRoot returns the repository's root: the nearest parent of the working
// directory holding go.mod.
func RepoRoot(tb testing.TB) string {
	tb.Helper()
	rootOnce.Do(func() {
		dir, err := os.Getwd()
		if err != nil {
			rootErr = err
			return
		}
		for {
			if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
				rootDir = dir
				return
			}
			parent := filepath.Dir(dir)
			if parent == dir {
				rootErr = fmt.Errorf("no go.mod above the working directory")
				return
			}
			dir = parent
		}
	})
	if rootErr != nil {
		tb.Fatalf("hosttest: repository root: %v", rootErr)
	}
	return rootDir
}

// Pins reads .ci/hosts.versions.
func Pins(tb testing.TB) []Pin {
	tb.Helper()
	path := filepath.Join(RepoRoot(tb), versionsFile)
	f, err := os.Open(path)
	if err != nil {
		tb.Fatalf("hosttest: %v", err)
	}
	defer f.Close()
	var pins []Pin
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fields := strings.Fields(line)
		if len(fields) != 4 {
			tb.Fatalf("hosttest: %s:%d: want NAME VERSION PACKAGE BINARY, got %q", path, n, line)
		}
		pins = append(pins, Pin{fields[0], fields[1], fields[2], fields[3]})
	}
	if err := sc.Err(); err != nil {
		tb.Fatalf("hosttest: read %s: %v", path, err)
	}
	return pins
}

// PinOf returns the pin of the named host.
func PinOf(tb testing.TB, name string) Pin {
	tb.Helper()
	for _, p := range Pins(tb) {
		if p.Name == name {
			return p
		}
	}
	tb.Fatalf("hosttest: host %q is not in %s", name, versionsFile)
	return Pin{}
}

// Host returns the path of the installed binary of the named host
// ("opencode", "claude-code"). When it is missing the test skips, naming the
// command that installs it, or fails when DELEGATIONS_HOST_TESTS=require.
func Host(tb testing.TB, name string) string {
	tb.Helper()
	p := PinOf(tb, name)
	bin := filepath.Join(p.Dir(RepoRoot(tb)), p.Binary)
	if fi, err := os.Stat(bin); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
		return bin
	}
	msg := fmt.Sprintf("host %s %s is not installed (%s); install it with `bash .ci/hosts %s`", name, p.Version, bin, name)
	if os.Getenv(RequireEnv) == "require" {
		tb.Fatalf("%s (%s=require)", msg, RequireEnv)
	}
	tb.Skipf("%s, or set %s=require to fail instead of skipping", msg, RequireEnv)
	return ""
}
