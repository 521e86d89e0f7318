package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/delegations/delegations/cmd/delegations/claudecode"
)

var installVerb = verb{
	name:     "install",
	synopsis: "claude-code [--project DIR | --user] [--uninstall] [--mcp]",
	summary:  "write the hooks (and with --mcp the MCP server) into Claude Code's settings; --uninstall removes them",
	example:  "delegations install claude-code --project . --mcp",
	run:      runInstall,
}

func runInstall(ctx context.Context, e *env, args []string) error {
	fs := newFlags(e)
	project := fs.String("project", "", "install for the project in DIR: DIR/.claude/settings.json (and DIR/.mcp.json)")
	user := fs.Bool("user", false, "install for the user: $CLAUDE_CONFIG_DIR/settings.json, else ~/.claude/settings.json (the default)")
	uninstall := fs.Bool("uninstall", false, "remove what install added")
	mcp := fs.Bool("mcp", false, "also add the delegations MCP server and its allow rule ("+claudecode.AllowRule+")")
	host, err := parseHost(e, fs, args)
	if err != nil {
		return err
	}
	if host != "claude-code" {
		return usagef("unknown host %q; the hosts are: claude-code", host)
	}
	if *project != "" && *user {
		return usagef("give --project DIR or --user, not both")
	}
	bin, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find this binary's path: %w", err)
	}
	if resolved, err := filepath.EvalSymlinks(bin); err == nil {
		bin = resolved
	}
	if strings.Contains(bin, string(filepath.Separator)+"go-build") && !*uninstall {
		return fmt.Errorf("%s is a temporary build of `go run`, gone once it exits; install the binary first (go install ./cmd/delegations) and run its install", bin)
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
		o.Settings = filepath.Join(dir, ".claude", "settings.json")
		o.Permissions = filepath.Join(dir, ".claude", "settings.local.json")
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

// parseHost parses a verb whose argument is a host name, which may come
// before its flags (install claude-code --project .) or after them.
func parseHost(e *env, fs *flag.FlagSet, args []string) (string, error) {
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		_, err := parse(e, fs, args[1:], 0)
		return args[0], err
	}
	rest, err := parse(e, fs, args, 1)
	if err != nil {
		return "", err
	}
	return rest[0], nil
}
