package hosttest

import (
	"os"
	"path/filepath"
	"testing"
)

// Env is a scratch home for a host: HOME, every XDG directory and TMPDIR,
// all under the test's temporary directory.
type Env struct {
	Home, ConfigHome, DataHome, CacheHome, StateHome, RuntimeDir, TmpDir string
}

// Scratch makes a fresh Env under tb.TempDir().
func Scratch(tb testing.TB) *Env {
	tb.Helper()
	base := tb.TempDir()
	e := &Env{
		Home:       filepath.Join(base, "home"),
		ConfigHome: filepath.Join(base, "xdg", "config"),
		DataHome:   filepath.Join(base, "xdg", "data"),
		CacheHome:  filepath.Join(base, "xdg", "cache"),
		StateHome:  filepath.Join(base, "xdg", "state"),
		RuntimeDir: filepath.Join(base, "xdg", "runtime"),
		TmpDir:     filepath.Join(base, "tmp"),
	}
	for _, d := range []string{e.Home, e.ConfigHome, e.DataHome, e.CacheHome, e.StateHome, e.TmpDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			tb.Fatalf("hosttest: %v", err)
		}
	}
	// XDG_RUNTIME_DIR must be owned by the user and 0700.
	if err := os.MkdirAll(e.RuntimeDir, 0o700); err != nil {
		tb.Fatalf("hosttest: %v", err)
	}
	return e
}

// Environ is a minimal environment for a host process: PATH from ours, the
// scratch directories, GORACE without the exit sleep, then extra
// ("KEY=value"; later entries win). Nothing else of ours leaks in, no
// DELEGATIONS_* variable in particular.
func (e *Env) Environ(extra ...string) []string {
	env := []string{
		"PATH=" + os.Getenv("PATH"),
		"HOME=" + e.Home,
		"XDG_CONFIG_HOME=" + e.ConfigHome,
		"XDG_DATA_HOME=" + e.DataHome,
		"XDG_CACHE_HOME=" + e.CacheHome,
		"XDG_STATE_HOME=" + e.StateHome,
		"XDG_RUNTIME_DIR=" + e.RuntimeDir,
		"TMPDIR=" + e.TmpDir,
		"GORACE=atexit_sleep_ms=0",
	}
	return append(env, extra...)
}
