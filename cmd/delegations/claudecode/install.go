package claudecode

import (
	"bytes"
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

// HookTimeout is the timeout, in seconds, written with each hook: Claude
// Code waits at most this long (the hook itself gives up sooner).
const HookTimeout = 10

// ServerName is the MCP server's name in Claude Code's configuration; its
// tools are mcp__delegations__<tool>, allowed by the rule AllowRule.
const (
	ServerName = "delegations"
	AllowRule  = "mcp__" + ServerName
)

// hookEvents are the hooks Install writes, with their matchers.
var hookEvents = []struct{ event, matcher string }{
	{"PostToolUse", "Agent|Task"},
	{"SubagentStart", ""},
	{"SubagentStop", ""},
	{"Stop", ""},
	{"UserPromptSubmit", ""},
	{"SessionStart", "startup|resume|compact"},
	{"SessionEnd", ""},
}

// InstallOptions says what to install where.
type InstallOptions struct {
	Settings string // the settings file that gets the hooks
	// OldSettings, if set, is a settings file where an earlier version
	// put the hooks: ours are removed from it (a project's
	// .claude/settings.json, now .claude/settings.local.json).
	OldSettings string
	// Permissions is the settings file that gets the allow rule (and the
	// approval) with MCP: Claude Code ignores a project's
	// .claude/settings.json permissions in -p mode but honours its
	// .claude/settings.local.json. Empty means Settings.
	Permissions string
	MCPFile     string   // the file whose mcpServers gets the server (with MCP)
	Binary      string   // absolute path of the delegations binary
	Global      []string // global flags for the binary (e.g. --data DIR), before the verb
	MCP         bool     // also the MCP server and its allow rule
	// EnableProjectServer also lists the server in the settings'
	// enabledMcpjsonServers: a project's .mcp.json servers run only once
	// approved.
	EnableProjectServer bool
	Uninstall           bool
}

// ErrNotJSON means a file to edit is not what Claude Code reads (not a
// JSON object, or a key of the wrong type); nothing was written.
var ErrNotJSON = errors.New("not valid settings JSON")

// HookCommand is the command line the hooks run.
func (o InstallOptions) HookCommand() string {
	words := append([]string{o.Binary}, o.Global...)
	words = append(words, "hook", "claude-code")
	return shellJoin(words)
}

// Install merges the hooks (and with MCP the server and its allow rule)
// into the files, or with Uninstall removes them. It never clobbers other
// settings, changes nothing when everything is already as asked, writes
// atomically, and refuses files that are not valid JSON without touching
// them. It returns one line per change (or per thing already in place).
func Install(o InstallOptions) ([]string, error) {
	if !filepath.IsAbs(o.Binary) {
		return nil, fmt.Errorf("binary path %q is not absolute", o.Binary)
	}
	if o.Permissions == "" {
		o.Permissions = o.Settings
	}
	var report []string
	// Read and edit every file in memory first: a refusal leaves them all
	// untouched.
	files := map[string]*file{}
	open := func(path string) (*file, error) {
		if f, ok := files[path]; ok {
			return f, nil
		}
		f, err := readObject(path)
		if err != nil {
			return nil, err
		}
		files[path] = f
		return f, nil
	}
	settings, err := open(o.Settings)
	if err != nil {
		return nil, err
	}
	lines, err := o.editHooks(settings.obj)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", o.Settings, err)
	}
	report = append(report, lines...)
	order := []*file{settings}
	if o.OldSettings != "" && o.OldSettings != o.Settings {
		old, err := open(o.OldSettings)
		if err != nil {
			return nil, err
		}
		lines, err := o.removeHooks(old.obj, o.OldSettings)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", o.OldSettings, err)
		}
		if removed := !strings.HasPrefix(lines[0], "no "); removed || o.Uninstall {
			report = append(report, lines...)
		}
		order = append(order, old)
	}
	if o.MCP {
		perms, err := open(o.Permissions)
		if err != nil {
			return nil, err
		}
		mcp, err := open(o.MCPFile)
		if err != nil {
			return nil, err
		}
		lines, err := o.editPermissions(perms.obj)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", o.Permissions, err)
		}
		report = append(report, lines...)
		lines, err = o.editServer(mcp.obj)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", o.MCPFile, err)
		}
		report = append(report, lines...)
		order = append(order, perms, mcp)
	}
	for _, f := range order {
		if err := f.write(); err != nil {
			return nil, err
		}
	}
	return report, nil
}

// file is a JSON file being edited.
type file struct {
	path    string
	obj     *object
	orig    []byte
	existed bool
}

func readObject(path string) (*file, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return &file{path: path, obj: newObject()}, nil
	}
	if err != nil {
		return nil, err
	}
	if len(bytes.TrimSpace(b)) == 0 {
		return &file{path: path, obj: newObject(), orig: b, existed: true}, nil
	}
	o, err := parseObject(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w: %v; fix or move it, then run this again (nothing was changed)", path, ErrNotJSON, err)
	}
	return &file{path: path, obj: o, orig: b, existed: true}, nil
}

// write writes the file atomically when its content changed. An empty
// object replaces a file that did not exist only if something was added.
// A symlink stays one: the file it leads to is written.
func (f *file) write() error {
	if !f.existed && f.obj.len() == 0 {
		return nil
	}
	b, err := indent(f.obj)
	if err != nil {
		return err
	}
	if f.existed && (bytes.Equal(b, f.orig) || sameJSON(b, f.orig)) {
		return nil
	}
	return hostfile.Write(f.path, b, 0o600)
}

// sameJSON reports whether a and b hold the same JSON (ignoring layout).
func sameJSON(a, b []byte) bool {
	var x, y bytes.Buffer
	return json.Compact(&x, a) == nil && json.Compact(&y, b) == nil && bytes.Equal(x.Bytes(), y.Bytes())
}

// editHooks adds (or removes) the hook entries in settings["hooks"].
func (o InstallOptions) editHooks(settings *object) ([]string, error) {
	if o.Uninstall {
		return o.removeHooks(settings, o.Settings)
	}
	hooks, err := settings.child("hooks")
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNotJSON, err)
	}
	cmd := o.HookCommand()
	var report []string
	for _, h := range hookEvents {
		groups, err := rawArray(hooks.vals[h.event])
		if err != nil {
			return nil, fmt.Errorf("%w: hooks.%s: %v", ErrNotJSON, h.event, err)
		}
		// Ours are the hooks of any delegations binary (another path,
		// other flags, an older version): exactly this one in place is
		// kept, anything else of ours is replaced, so that an event is
		// never recorded twice.
		var mine []string
		for _, g := range groups {
			cmds, err := groupCommands(g)
			if err != nil {
				return nil, fmt.Errorf("%w: hooks.%s: %v", ErrNotJSON, h.event, err)
			}
			for _, c := range cmds {
				if o.ours(c) {
					mine = append(mine, c)
				}
			}
		}
		if len(mine) == 1 && mine[0] == cmd {
			report = append(report, fmt.Sprintf("the %s hook is already in %s", h.event, o.Settings))
			continue
		}
		verb := "added"
		if len(mine) > 0 {
			if groups, _, err = o.withoutOurs(hooks.vals[h.event]); err != nil {
				return nil, fmt.Errorf("%w: hooks.%s: %v", ErrNotJSON, h.event, err)
			}
			verb = fmt.Sprintf("replaced %s with", strings.Join(mine, ", "))
		}
		group := newObject()
		if h.matcher != "" {
			group.set("matcher", h.matcher)
		}
		group.set("hooks", []map[string]any{{"type": "command", "command": cmd, "timeout": HookTimeout}})
		b, err := marshal(group)
		if err != nil {
			return nil, err
		}
		groups = append(groups, b)
		if err := hooks.set(h.event, groups); err != nil {
			return nil, err
		}
		report = append(report, fmt.Sprintf("%s the %s hook in %s", verb, h.event, o.Settings))
	}
	return report, settings.set("hooks", hooks)
}

// removeHooks removes our hook entries (of any delegations binary) from
// settings["hooks"]; where names the file in the report.
func (o InstallOptions) removeHooks(settings *object, where string) ([]string, error) {
	hooks, err := settings.child("hooks")
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNotJSON, err)
	}
	var report []string
	for _, event := range slices.Clone(hooks.keys) {
		groups, removed, err := o.withoutOurs(hooks.vals[event])
		if err != nil {
			return nil, fmt.Errorf("%w: hooks.%s: %v", ErrNotJSON, event, err)
		}
		if removed == 0 {
			continue
		}
		if len(groups) == 0 {
			hooks.del(event)
		} else if err := hooks.set(event, groups); err != nil {
			return nil, err
		}
		report = append(report, fmt.Sprintf("removed the %s hook from %s", event, where))
	}
	if hooks.len() == 0 {
		settings.del("hooks")
	} else if err := settings.set("hooks", hooks); err != nil {
		return nil, err
	}
	if len(report) == 0 {
		report = append(report, "no delegations hooks in "+where)
	}
	return report, nil
}

// withoutOurs returns an event's groups without this binary's hook
// entries, dropping groups left empty, and how many entries it removed.
func (o InstallOptions) withoutOurs(raw json.RawMessage) ([]json.RawMessage, int, error) {
	groups, err := rawArray(raw)
	if err != nil {
		return nil, 0, err
	}
	var out []json.RawMessage
	removed := 0
	for _, g := range groups {
		gobj, err := parseObject(g)
		if err != nil {
			return nil, 0, err
		}
		entries, err := rawArray(gobj.vals["hooks"])
		if err != nil {
			return nil, 0, err
		}
		kept := entries[:0:0]
		for _, e := range entries {
			var h struct {
				Command string `json:"command"`
			}
			if json.Unmarshal(e, &h) == nil && o.ours(h.Command) {
				removed++
				continue
			}
			kept = append(kept, e)
		}
		if len(kept) == len(entries) {
			out = append(out, g)
			continue
		}
		if len(kept) == 0 {
			continue
		}
		if err := gobj.set("hooks", kept); err != nil {
			return nil, 0, err
		}
		b, err := marshal(gobj)
		if err != nil {
			return nil, 0, err
		}
		out = append(out, b)
	}
	return out, removed, nil
}

// ours recognises a hook command of ours: "hook claude-code" last,
// whatever global flags lie between, run by this binary or by any program
// named delegations (another path, an older version).
func (o InstallOptions) ours(command string) bool {
	w := shellSplit(command)
	return len(w) >= 3 && o.ourBinary(w[0]) && w[len(w)-2] == "hook" && w[len(w)-1] == "claude-code"
}

// ourBinary recognises this binary, or any program named delegations.
func (o InstallOptions) ourBinary(path string) bool {
	return path == o.Binary || filepath.Base(path) == "delegations"
}

func rawArray(raw json.RawMessage) ([]json.RawMessage, error) {
	if len(bytes.TrimSpace(raw)) == 0 || string(bytes.TrimSpace(raw)) == "null" {
		return nil, nil
	}
	var a []json.RawMessage
	if err := json.Unmarshal(raw, &a); err != nil {
		return nil, errors.New("want an array")
	}
	return a, nil
}

func groupCommands(g json.RawMessage) ([]string, error) {
	var group struct {
		Hooks []struct {
			Command string `json:"command"`
		} `json:"hooks"`
	}
	if err := json.Unmarshal(g, &group); err != nil {
		return nil, errors.New("want objects with a hooks array")
	}
	var cmds []string
	for _, h := range group.Hooks {
		cmds = append(cmds, h.Command)
	}
	return cmds, nil
}

// editPermissions adds (or removes) the MCP server's allow rule, and for a
// project its approval.
func (o InstallOptions) editPermissions(settings *object) ([]string, error) {
	var report []string
	perms, err := settings.child("permissions")
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNotJSON, err)
	}
	changed, err := editList(perms, "allow", AllowRule, o.Uninstall)
	if err != nil {
		return nil, fmt.Errorf("%w: permissions: %v", ErrNotJSON, err)
	}
	report = append(report, listReport(changed, o.Uninstall, "the allow rule "+AllowRule, o.Permissions))
	if perms.len() == 0 {
		settings.del("permissions")
	} else if err := settings.set("permissions", perms); err != nil {
		return nil, err
	}
	if o.EnableProjectServer {
		changed, err := editList(settings, "enabledMcpjsonServers", ServerName, o.Uninstall)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrNotJSON, err)
		}
		report = append(report, listReport(changed, o.Uninstall, "the approval of the "+ServerName+" MCP server", o.Permissions))
	}
	return report, nil
}

func listReport(changed, uninstall bool, what, where string) string {
	switch {
	case changed && uninstall:
		return "removed " + what + " from " + where
	case changed:
		return "added " + what + " to " + where
	case uninstall:
		return "no " + what + " in " + where
	}
	return what + " is already in " + where
}

// editList adds value to (or removes it from) the string array o[key],
// deleting the key when the array ends empty after a removal.
func editList(o *object, key, value string, remove bool) (bool, error) {
	var list []any
	if raw, ok := o.get(key); ok && string(bytes.TrimSpace(raw)) != "null" {
		if err := json.Unmarshal(raw, &list); err != nil {
			return false, fmt.Errorf("%q: want an array", key)
		}
	}
	i := slices.Index(list, any(value))
	switch {
	case remove && i < 0, !remove && i >= 0:
		return false, nil
	case remove:
		list = slices.Delete(list, i, i+1)
		if len(list) == 0 {
			o.del(key)
			return true, nil
		}
	default:
		list = append(list, value)
	}
	return true, o.set(key, list)
}

// editServer adds (or removes) the MCP server in mcpServers.
func (o InstallOptions) editServer(f *object) ([]string, error) {
	servers, err := f.child("mcpServers")
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNotJSON, err)
	}
	args := append(slices.Clone(o.Global), "mcp")
	want := map[string]any{"type": "stdio", "command": o.Binary, "args": args}
	raw, exists := servers.get(ServerName)
	var have struct {
		Command string `json:"command"`
	}
	if exists {
		json.Unmarshal(raw, &have)
	}
	if o.Uninstall {
		if !exists || !o.ourBinary(have.Command) {
			return []string{fmt.Sprintf("no %s MCP server of this binary in %s", ServerName, o.MCPFile)}, nil
		}
		servers.del(ServerName)
		if servers.len() == 0 {
			f.del("mcpServers")
		} else if err := f.set("mcpServers", servers); err != nil {
			return nil, err
		}
		return []string{fmt.Sprintf("removed the %s MCP server from %s", ServerName, o.MCPFile)}, nil
	}
	wb, err := marshal(want)
	if err != nil {
		return nil, err
	}
	if exists && sameJSON(raw, wb) {
		return []string{fmt.Sprintf("the %s MCP server is already in %s", ServerName, o.MCPFile)}, nil
	}
	if exists && !o.ourBinary(have.Command) {
		return nil, fmt.Errorf("an MCP server named %q running %q is already configured; remove it first (claude mcp remove %s)", ServerName, have.Command, ServerName)
	}
	if err := servers.set(ServerName, want); err != nil {
		return nil, err
	}
	if err := f.set("mcpServers", servers); err != nil {
		return nil, err
	}
	return []string{fmt.Sprintf("added the %s MCP server to %s", ServerName, o.MCPFile)}, nil
}

// shellJoin quotes words for sh where needed.
func shellJoin(words []string) string {
	q := make([]string, len(words))
	for i, w := range words {
		q[i] = shellQuote(w)
	}
	return strings.Join(q, " ")
}

func shellQuote(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("/._-+=:,@%", r))
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// shellSplit splits a command line as sh would for plain words, single
// and double quotes and backslashes (enough to read back shellJoin and
// hand-written commands).
func shellSplit(s string) []string {
	var words []string
	var cur strings.Builder
	inWord := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n':
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		case c == '\'':
			inWord = true
			j := strings.IndexByte(s[i+1:], '\'')
			if j < 0 {
				cur.WriteString(s[i+1:])
				i = len(s)
				break
			}
			cur.WriteString(s[i+1 : i+1+j])
			i += j + 1
		case c == '"':
			inWord = true
			for i++; i < len(s) && s[i] != '"'; i++ {
				if s[i] == '\\' && i+1 < len(s) {
					i++
				}
				cur.WriteByte(s[i])
			}
		case c == '\\' && i+1 < len(s):
			inWord = true
			i++
			cur.WriteByte(s[i])
		default:
			inWord = true
			cur.WriteByte(c)
		}
	}
	if inWord {
		words = append(words, cur.String())
	}
	return words
}
