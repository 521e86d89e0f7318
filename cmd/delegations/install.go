package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/delegations/delegations/cmd/delegations/opencode"
)

var installVerb = verb{
	name:     "install",
	synopsis: "opencode (--project DIR | --global) [--uninstall] [--bin PATH]",
	summary:  "install the bridge into a host: the OpenCode plugin",
	example:  "delegations install opencode --project .",
	run:      runInstall,
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
	}
	return usagef("unknown host %q; the hosts are: opencode", host)
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
		if *bin, err = os.Executable(); err != nil {
			return fmt.Errorf("find this binary: %w; give --bin PATH", err)
		}
		if strings.Contains(*bin, string(filepath.Separator)+"go-build") {
			return fmt.Errorf("this binary (%s) is a temporary `go run` build that will disappear; build it first (go build -o ~/.local/bin/delegations ./cmd/delegations) and run that, or give --bin PATH", *bin)
		}
	}
	if *bin, err = filepath.Abs(*bin); err != nil {
		return err
	}
	if fi, err := os.Stat(*bin); err != nil || fi.IsDir() {
		return fmt.Errorf("--bin %s is not a file", *bin)
	}
	r, err := opencode.Install(t, *bin)
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
	fmt.Fprintf(&b, "  OpenCode loads it at its next start: tools delegate, delegation_read, delegation_list, delegation_cancel\n")
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
