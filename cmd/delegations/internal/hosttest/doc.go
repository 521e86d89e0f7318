// Package hosttest runs the real agent hosts (OpenCode, Claude Code) headless
// against a scripted fake model, offline, for end-to-end tests. Only tests
// import it.
//
// The hosts are pinned in .ci/hosts.versions and installed by
// `bash .ci/hosts NAME` into .cache/hosts/ (git-ignored). A test that needs a
// host that is not installed skips, saying which command installs it, unless
// DELEGATIONS_HOST_TESTS=require, which turns the skip into a failure (CI).
//
// A TestMain that calls [RunOffline] re-executes the test binary inside a new
// network namespace holding only loopback, when the machine allows it; then
// [Offline] reports true and nothing the hosts do can reach the network.
//
// # Caveats
//
//   - Each host process costs seconds to start (OpenCode: 2–4 s to listen) and
//     hundreds of megabytes; share one per test where you can.
//   - Readiness of a started host is polled with an overall bound: that is a
//     start-up probe, the only polling here. Everything else waits on events,
//     requests or process exits.
package hosttest
