// Package opencode is the OpenCode bridge: a plugin for OpenCode's v1
// plugin API (plugin.ts, embedded in the binary) and the installer that
// writes it where OpenCode loads plugins.
//
// The plugin is thin: it forwards what happens in OpenCode to the daemon
// and carries out what the daemon asks (deliver a notification, stop a
// child that timed out); it starts the daemon (`delegations serve
// --detach`) when none answers. It imports nothing, so it loads in an
// OpenCode that cannot reach the npm registry.
//
// # Caveats
//
//   - The installer records the absolute path of the binary that runs it;
//     a binary built by `go run` lives in a temporary directory, so Install
//     refuses it.
//   - A file at the plugin's path that the installer did not write (it
//     lacks Marker) is never overwritten or removed.
package opencode

import (
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/delegations/delegations/cmd/delegations/internal/hostfile"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

//go:embed plugin.ts
var pluginSource string

// Marker is on the first line of every plugin file the installer writes;
// it tells the installer the file is its own.
const Marker = "delegations-opencode-plugin"

// PluginFile is the plugin's file name in a plugins directory.
const PluginFile = "delegations.ts"

// The lines of plugin.ts that Render fills in.
const (
	binLine = `const INSTALLED_BIN: string = ""`
	envLine = `const INSTALLED_ENV: Record<string, string> = {}`
)

// Render returns the plugin's source with bin recorded as the binary to run
// when $DELEGATIONS_BIN is not set, and env (DELEGATIONS_DATA,
// DELEGATIONS_SOCKET) as the environment it runs with unless OpenCode's
// own sets them.
func Render(bin string, env map[string]string) []byte {
	// JSON is a JavaScript literal (U+2028 and U+2029 included, since
	// ES2019), and json.Marshal sorts a map's keys.
	quoted, _ := json.Marshal(bin)
	vars, _ := json.Marshal(env)
	if env == nil {
		vars = []byte("{}")
	}
	src := strings.Replace(pluginSource, binLine, `const INSTALLED_BIN: string = `+string(quoted), 1)
	return []byte(strings.Replace(src, envLine, `const INSTALLED_ENV: Record<string, string> = `+string(vars), 1))
}

// Target says where to install: a project's .opencode/plugins, or the
// user's OpenCode configuration directory.
type Target struct {
	Project string // a project directory; "" for the user's configuration
	Config  string // the user's OpenCode configuration directory (~/.config/opencode)
}

// PluginsDir is the directory OpenCode loads the target's plugins from.
func (t Target) PluginsDir() string {
	if t.Project != "" {
		return filepath.Join(t.Project, ".opencode", "plugins")
	}
	return filepath.Join(t.Config, "plugins")
}

// ConfigDir returns the user's OpenCode configuration directory:
// $XDG_CONFIG_HOME/opencode, else ~/.config/opencode.
func ConfigDir() (string, error) {
	if x := os.Getenv("XDG_CONFIG_HOME"); x != "" {
		return filepath.Join(x, "opencode"), nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("no home directory for OpenCode's configuration: %w", err)
	}
	return filepath.Join(home, ".config", "opencode"), nil
}

// Outcome is what Install or Uninstall did.
type Outcome string

const (
	Installed Outcome = "installed" // a new plugin file
	Updated   Outcome = "updated"   // our older file replaced
	Unchanged Outcome = "unchanged" // the same file was there
	Removed   Outcome = "removed"   // our file deleted
	Absent    Outcome = "absent"    // nothing of ours to remove
)

// Report is the result of Install or Uninstall.
type Report struct {
	Path    string  `json:"path"`
	Outcome Outcome `json:"outcome"`
	// Seeded are the configuration directories where Install wrote (or
	// Uninstall removed) the dependency stubs; see SeedDeps.
	Seeded []string `json:"seeded,omitempty"`
	// Unseeded are configuration directories with dependencies of their
	// own that lack @opencode-ai/plugin: OpenCode tries to install it
	// there at start-up, which needs the network.
	Unseeded []string `json:"unseeded,omitempty"`
	// Conflicts are other plugins OpenCode would load beside ours that
	// define the same tools (the background-agents plugin).
	Conflicts []string `json:"conflicts,omitempty"`
}

// ErrNotOurs means a file at the plugin's path was not written by the
// installer; it is left alone.
var ErrNotOurs = errors.New("not written by delegations")

// Install writes the plugin for bin (and env, see Render) into t's plugins
// directory, atomically, and reports other plugins that would collide with
// it. Installing the same plugin twice changes nothing.
func Install(t Target, bin string, env map[string]string) (Report, error) {
	if !filepath.IsAbs(bin) {
		return Report{}, fmt.Errorf("the binary path %q is not absolute", bin)
	}
	dir := t.PluginsDir()
	r := Report{Path: filepath.Join(dir, PluginFile)}
	want := Render(bin, env)
	old, err := os.ReadFile(r.Path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		r.Outcome = Installed
	case err != nil:
		return r, err
	case !ours(old):
		return r, fmt.Errorf("%s: %w", r.Path, ErrNotOurs)
	case string(old) == string(want):
		r.Outcome = Unchanged
	default:
		r.Outcome = Updated
	}
	if r.Outcome != Unchanged {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return r, err
		}
		if err := hostfile.Write(r.Path, want, 0o644); err != nil {
			return r, err
		}
	}
	for _, d := range t.configDirs() {
		switch seeded, err := SeedDeps(d); {
		case err != nil:
			return r, err
		case seeded:
			r.Seeded = append(r.Seeded, d)
		case !hasPluginDep(d):
			r.Unseeded = append(r.Unseeded, d)
		}
	}
	r.Conflicts = conflicts(t)
	return r, nil
}

// Uninstall removes the plugin from t's plugins directory if the installer
// wrote it.
func Uninstall(t Target) (Report, error) {
	r := Report{Path: filepath.Join(t.PluginsDir(), PluginFile)}
	old, err := os.ReadFile(r.Path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		r.Outcome = Absent
		return r, nil
	case err != nil:
		return r, err
	case !ours(old):
		return r, fmt.Errorf("%s: %w", r.Path, ErrNotOurs)
	}
	if err := os.Remove(r.Path); err != nil {
		return r, err
	}
	r.Outcome = Removed
	// The user's configuration directory is seeded for every install: it
	// is unseeded only with the last plugin of ours it serves.
	dirs := []string{t.Config}
	if t.Project != "" {
		dirs = []string{filepath.Join(t.Project, ".opencode")}
	}
	for _, d := range dirs {
		if unseedDeps(d) {
			r.Seeded = append(r.Seeded, d)
		}
	}
	return r, nil
}

// configDirs are the configuration directories OpenCode reads for t, where
// it installs its plugin package at start-up.
func (t Target) configDirs() []string {
	if t.Project != "" {
		return []string{filepath.Join(t.Project, ".opencode"), t.Config}
	}
	return []string{t.Config}
}

// OpenCode installs @opencode-ai/plugin from npm into every configuration
// directory at start-up unless the directory has a node_modules and a
// package-lock.json that lists it; while that runs it does not load
// plugins, and without a network it runs for a minute or more before it
// fails. The plugin imports nothing, so SeedDeps writes what the check
// looks for, as an install would leave it minus the package itself.
var seedFiles = map[string]string{
	"package.json":      `{"dependencies":{"@opencode-ai/plugin":"*"}}` + "\n",
	"package-lock.json": `{"name":"","lockfileVersion":3,"requires":true,"packages":{"":{"dependencies":{"@opencode-ai/plugin":"*"}}}}` + "\n",
}

// SeedDeps makes OpenCode's start-up skip its npm install in dir, a
// configuration directory, when dir has no dependencies of its own (no
// node_modules, package.json or package-lock.json). It reports whether it
// wrote anything; a directory with dependencies is left alone.
func SeedDeps(dir string) (bool, error) {
	for _, name := range []string{"node_modules", "package.json", "package-lock.json"} {
		if _, err := os.Lstat(filepath.Join(dir, name)); !errors.Is(err, fs.ErrNotExist) {
			return false, nil
		}
	}
	if err := os.MkdirAll(filepath.Join(dir, "node_modules"), 0o755); err != nil {
		return false, err
	}
	for name, text := range seedFiles {
		if err := hostfile.Write(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			return false, err
		}
	}
	return true, nil
}

// unseedDeps removes what SeedDeps wrote in dir, if it is still exactly
// that (files unchanged, node_modules empty), and reports whether it did.
func unseedDeps(dir string) bool {
	for name, text := range seedFiles {
		if b, err := os.ReadFile(filepath.Join(dir, name)); err != nil || string(b) != text {
			return false
		}
	}
	if entries, err := os.ReadDir(filepath.Join(dir, "node_modules")); err != nil || len(entries) > 0 {
		return false
	}
	for name := range seedFiles {
		os.Remove(filepath.Join(dir, name))
	}
	os.Remove(filepath.Join(dir, "node_modules"))
	return true
}

// hasPluginDep reports whether OpenCode's start-up check passes in dir.
func hasPluginDep(dir string) bool {
	if _, err := os.Stat(filepath.Join(dir, "node_modules")); err != nil {
		return false
	}
	b, err := os.ReadFile(filepath.Join(dir, "package-lock.json"))
	if err != nil {
		return false
	}
	var lock struct {
		Packages map[string]struct {
			Dependencies map[string]string `json:"dependencies"`
		} `json:"packages"`
	}
	if json.Unmarshal(b, &lock) != nil {
		return false
	}
	_, ok := lock.Packages[""].Dependencies["@opencode-ai/plugin"]
	return ok
}

func ours(b []byte) bool {
	first, _, _ := strings.Cut(string(b), "\n")
	return strings.Contains(first, Marker)
}

// conflicts lists the plugins OpenCode would load for t, besides ours, that
// define delegation tools: files in the project's and the user's plugin
// directories, and entries of the "plugin" lists in their opencode.json.
func conflicts(t Target) []string {
	var found []string
	var configs []string
	dirs := []string{filepath.Join(t.Config, "plugins"), filepath.Join(t.Config, "plugin")}
	configs = append(configs, filepath.Join(t.Config, "opencode.json"), filepath.Join(t.Config, "opencode.jsonc"))
	if t.Project != "" {
		dirs = append(dirs, filepath.Join(t.Project, ".opencode", "plugins"), filepath.Join(t.Project, ".opencode", "plugin"))
		configs = append(configs, filepath.Join(t.Project, "opencode.json"), filepath.Join(t.Project, "opencode.jsonc"),
			filepath.Join(t.Project, ".opencode", "opencode.json"), filepath.Join(t.Project, ".opencode", "opencode.jsonc"))
	}
	for _, dir := range dirs {
		entries, _ := os.ReadDir(dir)
		for _, e := range entries {
			name := e.Name()
			if e.IsDir() || !(strings.HasSuffix(name, ".ts") || strings.HasSuffix(name, ".js")) {
				continue
			}
			b, err := os.ReadFile(filepath.Join(dir, name))
			if err != nil || ours(b) {
				continue
			}
			if strings.Contains(string(b), "delegation_read") {
				found = append(found, filepath.Join(dir, name))
			}
		}
	}
	for _, c := range configs {
		b, err := os.ReadFile(c)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			if strings.Contains(line, "background-agents") {
				found = append(found, c+": "+strings.TrimSpace(line))
			}
		}
	}
	slices.Sort(found)
	return slices.Compact(found)
}
