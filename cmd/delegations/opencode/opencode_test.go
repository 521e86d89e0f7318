package opencode

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/delegations/delegations/fsm"
	"github.com/delegations/delegations/projection"
)

func target(t *testing.T) Target {
	t.Helper()
	root := t.TempDir()
	project := filepath.Join(root, "project")
	if err := os.MkdirAll(project, 0o755); err != nil {
		t.Fatal(err)
	}
	return Target{Project: project, Config: filepath.Join(root, "config", "opencode")}
}

// installedBin returns the binary path recorded in a rendered plugin.
func installedBin(t *testing.T, src []byte) string {
	t.Helper()
	const prefix = "const INSTALLED_BIN: string = "
	for _, line := range strings.Split(string(src), "\n") {
		if rest, ok := strings.CutPrefix(line, prefix); ok {
			var s string
			if err := json.Unmarshal([]byte(rest), &s); err != nil {
				t.Fatalf("the recorded binary %s is not a string literal: %v", rest, err)
			}
			return s
		}
	}
	t.Fatalf("no %q line in the plugin", prefix)
	return ""
}

func TestRenderRecordsTheBinary(t *testing.T) {
	for _, bin := range []string{"/usr/local/bin/delegations", `/opt/we"ird\path/dé légations`, "/tmp/a\u2028b"} {
		src := Render(bin, nil)
		if got := installedBin(t, src); got != bin {
			t.Errorf("Render(%q) records %q", bin, got)
		}
		if strings.Count(string(src), "INSTALLED_BIN") != strings.Count(pluginSource, "INSTALLED_BIN") {
			t.Errorf("Render(%q) changed more than the recorded path", bin)
		}
	}
	for _, line := range []string{binLine, envLine} {
		if !strings.Contains(pluginSource, line) {
			t.Fatalf("plugin.ts lacks the line %q that Render fills in", line)
		}
	}
	src := string(Render("/b", map[string]string{"DELEGATIONS_DATA": `/data/"x"`}))
	if !strings.Contains(src, `const INSTALLED_ENV: Record<string, string> = {"DELEGATIONS_DATA":"/data/\"x\""}`) {
		t.Errorf("Render did not record the environment:\n%s", src)
	}
	if first, _, _ := strings.Cut(pluginSource, "\n"); !strings.Contains(first, Marker) {
		t.Fatalf("plugin.ts's first line %q lacks the marker %q", first, Marker)
	}
}

func TestInstallIdempotentAndUpdates(t *testing.T) {
	tg := target(t)
	r, err := Install(tg, "/usr/bin/delegations", nil)
	if err != nil || r.Outcome != Installed {
		t.Fatalf("first install: %+v, %v", r, err)
	}
	want := filepath.Join(tg.Project, ".opencode", "plugins", PluginFile)
	if r.Path != want {
		t.Fatalf("installed at %s, want %s", r.Path, want)
	}
	b, err := os.ReadFile(want)
	if err != nil || installedBin(t, b) != "/usr/bin/delegations" {
		t.Fatalf("installed file: %v", err)
	}
	if r, err := Install(tg, "/usr/bin/delegations", nil); err != nil || r.Outcome != Unchanged {
		t.Fatalf("second install: %+v, %v", r, err)
	}
	if r, err := Install(tg, "/opt/delegations", nil); err != nil || r.Outcome != Updated {
		t.Fatalf("install with another binary: %+v, %v", r, err)
	}
	if b, _ := os.ReadFile(want); installedBin(t, b) != "/opt/delegations" {
		t.Fatal("the update did not record the new binary")
	}
	entries, _ := os.ReadDir(filepath.Dir(want))
	if len(entries) != 1 {
		t.Fatalf("the plugins directory holds %d entries, want only the plugin (no temp files)", len(entries))
	}
	if _, err := Install(tg, "relative/delegations", nil); err == nil {
		t.Fatal("a relative binary path was accepted")
	}
}

func TestGlobalTarget(t *testing.T) {
	tg := target(t)
	tg.Project = ""
	r, err := Install(tg, "/usr/bin/delegations", nil)
	if err != nil || r.Path != filepath.Join(tg.Config, "plugins", PluginFile) {
		t.Fatalf("global install: %+v, %v", r, err)
	}
}

func TestNeverTouchesForeignFiles(t *testing.T) {
	tg := target(t)
	path := filepath.Join(tg.PluginsDir(), PluginFile)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	const mine = "// someone's own plugin\nexport const X = async () => ({})\n"
	if err := os.WriteFile(path, []byte(mine), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Install(tg, "/usr/bin/delegations", nil); !errors.Is(err, ErrNotOurs) {
		t.Fatalf("install over a foreign file: %v, want ErrNotOurs", err)
	}
	if _, err := Uninstall(tg); !errors.Is(err, ErrNotOurs) {
		t.Fatalf("uninstall of a foreign file: %v, want ErrNotOurs", err)
	}
	if b, _ := os.ReadFile(path); string(b) != mine {
		t.Fatalf("the foreign file changed:\n%s", b)
	}
}

func TestUninstall(t *testing.T) {
	tg := target(t)
	if r, err := Uninstall(tg); err != nil || r.Outcome != Absent {
		t.Fatalf("uninstall of nothing: %+v, %v", r, err)
	}
	if _, err := Install(tg, "/usr/bin/delegations", nil); err != nil {
		t.Fatal(err)
	}
	r, err := Uninstall(tg)
	if err != nil || r.Outcome != Removed {
		t.Fatalf("uninstall: %+v, %v", r, err)
	}
	if _, err := os.Stat(r.Path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the plugin is still there: %v", err)
	}
}

func TestConflictsWithTheOldPlugin(t *testing.T) {
	tg := target(t)
	old := filepath.Join(tg.Project, ".opencode", "plugin", "background-agents.ts")
	if err := os.MkdirAll(filepath.Dir(old), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(old, []byte(`export const P = async () => ({ tool: { delegation_read: {} } })`), 0o644); err != nil {
		t.Fatal(err)
	}
	unrelated := filepath.Join(tg.Project, ".opencode", "plugin", "other.ts")
	if err := os.WriteFile(unrelated, []byte(`export const Q = async () => ({})`), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(tg.Config, 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(tg.Config, "opencode.json")
	if err := os.WriteFile(cfg, []byte("{\n  \"plugin\": [\"@chenxuan520/opencode-background-agents\"]\n}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	r, err := Install(tg, "/usr/bin/delegations", nil)
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Join(r.Conflicts, "\n")
	if len(r.Conflicts) != 2 || !strings.Contains(got, old) || !strings.Contains(got, cfg+": \"plugin\"") || strings.Contains(got, "other.ts") {
		t.Fatalf("conflicts:\n%s", got)
	}
}

// TestSeedDeps: install writes the dependency stubs OpenCode checks into
// every configuration directory without dependencies of its own, leaves
// the others alone (and says so), and uninstall removes exactly its stubs.
func TestSeedDeps(t *testing.T) {
	tg := target(t)
	// The user's configuration directory has dependencies of its own.
	if err := os.MkdirAll(filepath.Join(tg.Config, "node_modules", "left-pad"), 0o755); err != nil {
		t.Fatal(err)
	}
	own := `{"dependencies":{"left-pad":"1.3.0"}}`
	if err := os.WriteFile(filepath.Join(tg.Config, "package.json"), []byte(own), 0o644); err != nil {
		t.Fatal(err)
	}
	r, err := Install(tg, "/usr/bin/delegations", nil)
	if err != nil {
		t.Fatal(err)
	}
	dot := filepath.Join(tg.Project, ".opencode")
	if strings.Join(r.Seeded, " ") != dot || strings.Join(r.Unseeded, " ") != tg.Config {
		t.Fatalf("seeded %v, unseeded %v; want [%s] and [%s]", r.Seeded, r.Unseeded, dot, tg.Config)
	}
	if !hasPluginDep(dot) {
		t.Fatalf("%s does not pass OpenCode's check after seeding", dot)
	}
	if b, _ := os.ReadFile(filepath.Join(tg.Config, "package.json")); string(b) != own {
		t.Fatalf("the user's package.json changed: %s", b)
	}
	// A second install changes nothing.
	if r, err := Install(tg, "/usr/bin/delegations", nil); err != nil || len(r.Seeded) != 0 {
		t.Fatalf("second install: %+v, %v", r, err)
	}
	// A global install seeds the user's directory (empty here, now).
	if err := os.RemoveAll(tg.Config); err != nil {
		t.Fatal(err)
	}
	global := Target{Config: tg.Config}
	if r, err := Install(global, "/usr/bin/delegations", nil); err != nil || strings.Join(r.Seeded, " ") != tg.Config {
		t.Fatalf("global install: %+v, %v", r, err)
	}
	// Uninstalling the project leaves the user's directory seeded: the
	// global plugin still needs it.
	r, err = Uninstall(tg)
	if err != nil || strings.Join(r.Seeded, " ") != dot {
		t.Fatalf("uninstall: %+v, %v", r, err)
	}
	if !hasPluginDep(tg.Config) {
		t.Errorf("uninstalling the project unseeded the user's directory")
	}
	for _, name := range []string{"node_modules", "package.json", "package-lock.json"} {
		if _, err := os.Lstat(filepath.Join(dot, name)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s still there after uninstall: %v", name, err)
		}
	}
	if r, err := Uninstall(global); err != nil || strings.Join(r.Seeded, " ") != tg.Config || hasPluginDep(tg.Config) {
		t.Errorf("global uninstall: %+v, %v", r, err)
	}
}

// TestPluginLimits: the plugin's copies of the store's limits are the
// store's.
func TestPluginLimits(t *testing.T) {
	for name, want := range map[string]int{
		"MAX_MESSAGE": fsm.MaxMessageLen,
		"MAX_RESULT":  fsm.MaxResultLen,
		"MAX_ERROR":   fsm.MaxErrorLen,
		"MAX_KEY":     projection.MaxIdempotencyKey,
	} {
		m := regexp.MustCompile(`(?m)^const ` + name + ` = (\d+)(?: << (\d+))?(?: //.*)?$`).FindStringSubmatch(pluginSource)
		if m == nil {
			t.Errorf("plugin.ts does not declare %s as a number (n or n << k)", name)
			continue
		}
		got, _ := strconv.Atoi(m[1])
		if m[2] != "" {
			shift, _ := strconv.Atoi(m[2])
			got <<= shift
		}
		if got != want {
			t.Errorf("plugin.ts's %s is %d, the store's limit %d", name, got, want)
		}
	}
}
