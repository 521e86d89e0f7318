package main

import (
	"strings"
	"testing"
)

// TestStatusPageRefusesNetworkAddresses: serve --http and ui take
// loopback addresses only; anything else is a usage error (exit 2) that
// says why, before a daemon starts.
func TestStatusPageRefusesNetworkAddresses(t *testing.T) {
	data := t.TempDir()
	for _, args := range [][]string{
		{"serve", "--http", "0.0.0.0:7777"},
		{"serve", "--http", ":7777"},
		{"serve", "--http", "192.168.1.10:7777"},
		{"serve", "--detach", "--http", "example.com:80"},
		{"ui", "--http", "0.0.0.0:0"},
	} {
		r := cli(t, data, "", args...)
		if r.code != 2 || !strings.Contains(r.stderr, "not a loopback address") {
			t.Errorf("%v: exit %d, stderr %q; want 2 and 'not a loopback address'", args, r.code, r.stderr)
		}
	}
}
