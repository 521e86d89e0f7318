package main

import (
	"context"
	"fmt"

	"github.com/delegations/delegations/cmd/delegations/api"
	"github.com/delegations/delegations/compaction"
)

var compactVerb = verb{
	name:     "compact",
	synopsis: "--root-session R [--max-unread N] [--max-bytes N] [--brief]",
	summary:  "print the <delegation-context> block a compacted context must carry (nothing when there is none)",
	example:  "delegations compact --root-session ses_root --max-bytes 8192",
	run:      runCompact,
}

func runCompact(ctx context.Context, e *env, args []string) error {
	fs := newFlags(e)
	root := fs.String("root-session", "", "the compacted session's root session")
	maxUnread := fs.Int("max-unread", compaction.DefaultMaxUnread, "at most this many unread delegations, newest first (0: 10)")
	maxBytes := fs.Int("max-bytes", 0, "size budget of the block in bytes; whole entries are left out, oldest first (0: no budget)")
	brief := fs.Bool("brief", false, "the short per-turn variant: one line per delegation")
	if _, err := parse(e, fs, args, 0); err != nil {
		return err
	}
	if *root == "" {
		return usagef("missing --root-session")
	}
	if *maxUnread < 0 {
		return usagef("--max-unread must not be negative")
	}
	if *maxBytes < 0 {
		return usagef("--max-bytes must not be negative")
	}
	var res api.CompactResponse
	if err := e.call(ctx, api.CompactRequest{RootSessionID: *root, MaxUnread: *maxUnread, MaxBytes: *maxBytes, Brief: *brief}, &res); err != nil {
		return err
	}
	if e.json {
		return writeJSON(e.stdout, res)
	}
	if res.Block == "" {
		return nil // nothing to carry: not even a newline
	}
	_, err := fmt.Fprintln(e.stdout, res.Block)
	return err
}
