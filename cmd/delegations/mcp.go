package main

import (
	"context"
	"os"
	"runtime/debug"

	"github.com/delegations/delegations/cmd/delegations/api"
	"github.com/delegations/delegations/cmd/delegations/mcpserver"
)

var mcpVerb = verb{
	name:     "mcp",
	synopsis: "[--session ID]",
	summary:  "serve delegation_list, delegation_read, delegation_status and delegation_cancel to an MCP host over stdio",
	example:  "claude mcp add delegations -- delegations mcp",
	run:      runMCP,
}

func runMCP(ctx context.Context, e *env, args []string) error {
	fs := newFlags(e)
	session := fs.String("session", "", "the default root session, for hosts that do not set $CLAUDE_CODE_SESSION_ID (default: $DELEGATIONS_SESSION); a tool's session argument overrides it. Under Claude Code the session is $CLAUDE_CODE_SESSION_ID and no argument can change it")
	if _, err := parse(e, fs, args, 0); err != nil {
		return err
	}
	claude := os.Getenv("CLAUDE_CODE_SESSION_ID")
	if claude != "" {
		*session = claude
	}
	if *session == "" {
		*session = os.Getenv("DELEGATIONS_SESSION")
	}
	dir, err := dataDir(e.data)
	if err != nil {
		return err
	}
	version := "devel"
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		version = bi.Main.Version
	}
	return mcpserver.Run(ctx, mcpserver.Options{
		Session:      *session,
		FixedSession: claude != "",
		ClaudeCode:   claude != "",
		DataDir:      dir,
		Version:      version,
		Connect: func(ctx context.Context, readOnly bool) (mcpserver.Backend, bool, error) {
			b, err := e.openMode(ctx, readOnly)
			if err != nil {
				return nil, false, err
			}
			_, daemon := b.(*api.Client)
			return b, daemon, nil
		},
	})
}
