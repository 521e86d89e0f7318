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
// [Delegations] builds the delegations binary as it ships, once per test
// process; [DelegationsTestBuild] builds it with [TestTags], which add the
// test hooks (serve --manual-clock, POST /v1/clock).
//
// [NewOpenAI] is the fake model; [StartOpenCode] runs `opencode serve` on
// 127.0.0.1 with the fake as its only provider, in a scratch home ([Scratch])
// and a project with a fixed root commit ([NewProject], [ProjectID]).
//
// # OpenCode 1.18.33, as observed (facts_test.go keeps them checked)
//
//   - At start-up OpenCode npm-installs @opencode-ai/plugin into every config
//     directory (~/.config/opencode, each .opencode/) that has no
//     node_modules/, or whose package-lock.json lacks a dependency named in
//     package.json (or the plugin package). Offline that blocks the first
//     request to the project's instance for about 70 s, then fails with a
//     logged warning and plugins load anyway. StartOpenCode prevents the
//     attempt with [SeedPluginDeps]: an empty node_modules/ and a lock file
//     naming the package. Plugins that import nothing need nothing more.
//   - A plugin tool's execute(args, ctx) gets ctx with sessionID, messageID,
//     agent, callID, directory, worktree, abort (an AbortSignal), messages,
//     extra, metadata() and ask(). The plugin function's input has client,
//     project, directory, worktree, serverUrl, experimental_workspace and $.
//   - client.session.promptAsync returns (204) at once, whether the session
//     is idle or mid-turn. To an idle session, noReply: true appends the
//     user message and starts no turn. To a busy session, with or without
//     noReply, the message is appended and, when the running turn ends, the
//     model gets one more request that holds it: noReply does not stop that.
//   - config.get returns agent.NAME.permission as written; "write" is
//     accepted but inert (the write tool is still offered and writes);
//     "edit": "deny" removes both edit and write. app.agents returns each
//     agent's permission as a ruleset [{permission, pattern, action}], the
//     agent's own rules last.
//   - A session's turn ends with session.status {type: "idle"} then
//     session.idle (child sessions too). Streamed text comes as
//     message.part.delta {partID, field: "text", delta}; message.part.updated
//     carries the whole part (text "" when it starts, the full text at the end).
//   - POST /session/:id/summarize {providerID, modelID} returns when the
//     summary is written. The model's request has the compaction agent's
//     system prompt ([ChatRequest.IsCompaction]), no tools, and the
//     conversation as one user message; afterwards it sees "What did we do
//     so far?", the summary, then the new message.
//   - A session created with a title gets no title request; an untitled one
//     gets one beside its first turn ([ChatRequest.IsTitle]).
//
// # Caveats
//
//   - Each OpenCode costs seconds (listening 1–3 s, first prompt 3–8 s on two
//     busy cores) and ~350 MB; share one per test where you can.
//   - Start-up is bounded (DefaultStartTimeout): the server's "listening"
//     line, then the first event of its event stream. That is the only wait
//     with a timer; everything else waits on events, requests or exits.
//   - The first request for the project's instance waits for its bootstrap
//     (config, plugins); GET /doc is the OpenAPI description of the API.
//     With OPENCODE_DISABLE_EMBEDDED_WEB_UI=1 (set here) unknown paths answer
//     500. /experimental/tool/ids needs no query parameters and lists more
//     than a given model is offered (websearch, apply_patch).
//   - OpenCode and plugins' Bun.serve run in the test's network namespace;
//     127.0.0.1 is all there is.
package hosttest
