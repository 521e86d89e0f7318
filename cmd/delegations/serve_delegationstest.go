//go:build delegationstest

package main

import (
	"flag"
	"time"

	"github.com/delegations/delegations/cmd/delegations/api"
	"github.com/delegations/delegations/projection/clocktest"
)

// A test build's serve has --manual-clock: the daemon's clock stands still
// until POST /v1/clock moves it.
func init() {
	serveTestFlags = func(fs *flag.FlagSet) func(*api.Config) {
		manual := fs.Bool("manual-clock", false, "for tests: the clock stands still until POST /v1/clock moves it")
		return func(cfg *api.Config) {
			if *manual {
				cfg.Clock = clocktest.New(time.Now())
			}
		}
	}
}
