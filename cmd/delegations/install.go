package main

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"

	"github.com/delegations/delegations/cmd/delegations/claudecode"
	"github.com/delegations/delegations/cmd/delegations/opencode"
)

var installVerb = verb{
	name: "install",
	synopsis: "opencode (--project DIR | --global) [--uninstall] [--bin PATH]\n" +
		"         claude-code [--project DIR | --user] [--uninstall] [--mcp]",
	summary: "install a host's bridge: the OpenCode plugin, or Claude Code's hooks (and MCP server)",
	example: "delegations install opencode --project .   # or: delegations install claude-code --user --mcp",
	run:     runInstall,
}

func runInstall(ctx context.Context, e *env, args []string) error {
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help" || args[0] == "-help") {
			_, err := parse(e, newFlags(e), args, 0)
			return err
		}
		return usagef("name the host: delegations install opencode ...")
	}
	host, args := args[0], args[1:]
	switch host {
	case "opencode":
		return installOpenCode(e, args)
	case "claude-code":
		return installClaudeCode(e, args)
	}
	return usagef("unknown host %q; the hosts are: opencode, claude-code", host)
}

// thisBinary is the absolute path of the running binary as it was invoked
// (a symlink such as /usr/local/bin/delegations stays, rather than the
// versioned path it leads to, which an upgrade removes), which an
// installed bridge records. A `go run` build is refused when it would be
// recorded: it is deleted once the command exits.
func thisBinary(recorded bool) (string, error) {
	exe, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("find this binary's path: %w", err)
	}
	resolved := exe
	if r, err := filepath.EvalSymlinks(exe); err == nil {
		resolved = r
	}
	if recorded && strings.Contains(resolved, string(filepath.Separator)+"go-build") {
		return "", fmt.Errorf("%s is a temporary build of `go run`, gone once it exits; build the binary first (go build -o ~/.local/bin/delegations ./cmd/delegations) and run its install", resolved)
	}
	return invokedAs(os.Args[0], resolved), nil
}

// invokedAs returns the absolute path arg0 names (through $PATH for a bare
// name) when it leads to the running binary exe, else exe.
func invokedAs(arg0, exe string) string {
	p := arg0
	if !strings.ContainsRune(p, filepath.Separator) {
		lp, err := exec.LookPath(p)
		if err != nil {
			return exe
		}
		p = lp
	}
	abs, err := filepath.Abs(p)
	if err != nil {
		return exe
	}
	a, err1 := os.Stat(abs)
	b, err2 := os.Stat(exe)
	if err1 != nil || err2 != nil || !os.SameFile(a, b) {
		return exe
	}
	return abs
}

func installOpenCode(e *env, args []string) error {
	fs := newFlags(e)
	project := fs.String("project", "", "install into this project (DIR/.opencode/plugins)")
	global := fs.Bool("global", false, "install for every project of this user ($XDG_CONFIG_HOME/opencode/plugins, else ~/.config/opencode/plugins)")
	uninstall := fs.Bool("uninstall", false, "remove the plugin this command installed")
	bin := fs.String("bin", "", "the delegations binary the plugin runs (default: this one)")
	if _, err := parse(e, fs, args, 0); err != nil {
		return err
	}
	if (*project == "") == !*global {
		return usagef("give --project DIR or --global")
	}
	config, err := opencode.ConfigDir()
	if err != nil {
		return err
	}
	t := opencode.Target{Config: config}
	where := "--global"
	if *project != "" {
		if t.Project, err = filepath.Abs(*project); err != nil {
			return err
		}
		if fi, err := os.Stat(t.Project); err != nil || !fi.IsDir() {
			return fmt.Errorf("--project %s is not a directory", *project)
		}
		where = "--project " + t.Project
	}
	if *uninstall {
		r, err := opencode.Uninstall(t)
		if errors.Is(err, opencode.ErrNotOurs) {
			return fmt.Errorf("%w; it is left alone", err)
		}
		if err != nil {
			return err
		}
		if e.json {
			return writeJSON(e.stdout, r)
		}
		if r.Outcome == opencode.Absent {
			_, err = fmt.Fprintf(e.stdout, "no plugin of ours at %s; nothing removed\n", r.Path)
		} else {
			_, err = fmt.Fprintf(e.stdout, "removed the OpenCode plugin %s\nOpenCode stops loading it at its next start; the daemon and the data stay.\n", r.Path)
		}
		return err
	}
	if *bin == "" {
		if *bin, err = thisBinary(true); err != nil {
			return err
		}
	}
	if *bin, err = filepath.Abs(*bin); err != nil {
		return err
	}
	if fi, err := os.Stat(*bin); err != nil || fi.IsDir() {
		return fmt.Errorf("--bin %s is not a file", *bin)
	}
	// --data and --socket given to install are what the plugin runs with
	// (OpenCode's environment may still set its own).
	vars := map[string]string{}
	for name, v := range map[string]string{"DELEGATIONS_DATA": e.data, "DELEGATIONS_SOCKET": e.socket} {
		if v == "" {
			continue
		}
		if vars[name], err = filepath.Abs(v); err != nil {
			return err
		}
	}
	r, err := opencode.Install(t, *bin, vars)
	if errors.Is(err, opencode.ErrNotOurs) {
		return fmt.Errorf("%w; move it away to install the plugin there", err)
	}
	if err != nil {
		return err
	}
	if e.json {
		return writeJSON(e.stdout, struct {
			opencode.Report
			Binary string `json:"binary"`
		}{r, *bin})
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s the OpenCode plugin: %s\n", r.Outcome, r.Path)
	fmt.Fprintf(&b, "  it runs %s ($DELEGATIONS_BIN overrides it) and starts the daemon when none runs\n", *bin)
	for _, name := range slices.Sorted(maps.Keys(vars)) {
		fmt.Fprintf(&b, "  with %s=%s (unless OpenCode's environment sets it)\n", name, vars[name])
	}
	fmt.Fprintf(&b, "  OpenCode loads it at its next start: tools delegate, delegation_read, delegation_list, delegation_cancel\n")
	for _, d := range r.Seeded {
		fmt.Fprintf(&b, "  wrote empty dependencies into %s, so OpenCode does not download @opencode-ai/plugin there at start (the plugin needs nothing; offline the attempt costs a minute)\n", d)
	}
	for _, d := range r.Unseeded {
		fmt.Fprintf(&b, "  note: %s has dependencies of its own without @opencode-ai/plugin: OpenCode installs it there at start, which needs the network\n", d)
	}
	fmt.Fprintf(&b, "  undo: delegations install opencode %s --uninstall\n", where)
	if len(r.Conflicts) > 0 {
		fmt.Fprintf(&b, "\nwarning: the background-agents plugin is installed too; its tools have the same names, so remove it:\n")
		for _, c := range r.Conflicts {
			fmt.Fprintf(&b, "  %s\n", c)
		}
		data, err := dataDir(e.data)
		if err == nil {
			fmt.Fprintf(&b, "Its results stay readable: adopt them into the store with `delegations import %s`.\n", data)
		}
	}
	_, err = fmt.Fprint(e.stdout, b.String())
	return err
}

func installClaudeCode(e *env, args []string) error {
	fs := newFlags(e)
	project := fs.String("project", "", "install for the project in DIR, on this machine: DIR/.claude/settings.local.json (and DIR/.mcp.json)")
	user := fs.Bool("user", false, "install for the user: $CLAUDE_CONFIG_DIR/settings.json, else ~/.claude/settings.json (the default)")
	uninstall := fs.Bool("uninstall", false, "remove what install added")
	mcp := fs.Bool("mcp", false, "also add the delegations MCP server and its allow rule ("+claudecode.AllowRule+")")
	if _, err := parse(e, fs, args, 0); err != nil {
		return err
	}
	if *project != "" && *user {
		return usagef("give --project DIR or --user, not both")
	}
	bin, err := thisBinary(!*uninstall)
	if err != nil {
		return err
	}
	o := claudecode.InstallOptions{Binary: bin, MCP: *mcp, Uninstall: *uninstall}
	undo := []string{"delegations"}
	for _, g := range []struct{ flag, value string }{{"--data", e.data}, {"--socket", e.socket}} {
		if g.value == "" {
			continue
		}
		abs, err := filepath.Abs(g.value)
		if err != nil {
			return err
		}
		o.Global = append(o.Global, g.flag, abs)
		undo = append(undo, g.flag, abs)
	}
	undo = append(undo, "install", "claude-code")
	if *project != "" {
		dir, err := filepath.Abs(*project)
		if err != nil {
			return err
		}
		if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
			return usagef("--project %s is not a directory", *project)
		}
		// The machine's own paths stay out of settings.json, which teams
		// commit; Claude Code reads settings.local.json beside it (the
		// hooks fire from there in -p mode too). Earlier versions wrote
		// the hooks into settings.json: they are moved.
		o.Settings = filepath.Join(dir, ".claude", "settings.local.json")
		o.OldSettings = filepath.Join(dir, ".claude", "settings.json")
		o.Permissions = o.Settings
		o.MCPFile = filepath.Join(dir, ".mcp.json")
		o.EnableProjectServer = true
		undo = append(undo, "--project", dir)
	} else {
		settingsDir, mcpFile, err := claudeUserFiles()
		if err != nil {
			return err
		}
		o.Settings = filepath.Join(settingsDir, "settings.json")
		o.MCPFile = mcpFile
		undo = append(undo, "--user")
	}
	if *mcp {
		undo = append(undo, "--mcp")
	}
	if !*uninstall {
		undo = append(undo, "--uninstall")
	}
	report, err := claudecode.Install(o)
	if err != nil {
		return err
	}
	if e.json {
		out := map[string]any{"changes": report, "hookCommand": o.HookCommand()}
		if !*uninstall {
			out["undo"] = strings.Join(undo, " ")
		}
		return writeJSON(e.stdout, out)
	}
	for _, line := range report {
		fmt.Fprintln(e.stdout, line)
	}
	if !*uninstall {
		fmt.Fprintf(e.stdout, "hooks run: %s\nundo with: %s\n", o.HookCommand(), shellJoinArgs(undo))
	}
	return nil
}

// claudeUserFiles returns Claude Code's user configuration directory
// ($CLAUDE_CONFIG_DIR, else ~/.claude) and the file where `claude mcp add
// --scope user` keeps user MCP servers ($CLAUDE_CONFIG_DIR/.claude.json,
// else ~/.claude.json).
func claudeUserFiles() (string, string, error) {
	if d := os.Getenv("CLAUDE_CONFIG_DIR"); d != "" {
		return d, filepath.Join(d, ".claude.json"), nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", "", fmt.Errorf("no home directory for Claude Code's settings: set $CLAUDE_CONFIG_DIR or use --project (%v)", err)
	}
	return filepath.Join(home, ".claude"), filepath.Join(home, ".claude.json"), nil
}

func shellJoinArgs(words []string) string {
	q := make([]string, len(words))
	for i, w := range words {
		if w == "" || strings.ContainsAny(w, " \t\n'\"\\$`*?[]{}()<>|&;#~") {
			w = "'" + strings.ReplaceAll(w, "'", `'\''`) + "'"
		}
		q[i] = w
	}
	return strings.Join(q, " ")
}
