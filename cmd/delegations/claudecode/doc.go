// Package claudecode brings Claude Code's background agents to the store
// through Claude Code's hooks, without a plugin API: Hook handles one hook
// event (its JSON on stdin), and Install writes the hooks (and, if asked,
// the MCP server) into Claude Code's settings.
//
// Claude Code's ids map onto the store's model as follows:
//
//   - root session and parent session: the Claude Code session_id. A
//     compaction keeps the session id; --resume and --continue keep it too;
//     --fork-session starts a new id, so a forked session does not see the
//     delegations of the session it was forked from.
//   - child session: the agent id (tool_response.agentId of the Agent tool,
//     agent_id of the Subagent hooks, <task-id> of the task notification).
//   - idempotency key: the Agent tool call's tool_use_id under the session,
//     led by the session's start, the time of the first entry of its
//     transcript that has one ("claude:<start>:<session_id>:<tool_use_id>";
//     without the start when the transcript cannot tell, the tool_use_id
//     alone when even that is too long), so a hook that runs twice
//     registers once, and the store's index of keys takes a recent
//     session's keys near its end (see registerKey).
//   - agent: subagent_type; project: the hook's cwd.
//
// An agent's lifecycle, hook by hook:
//
//   - PostToolUse on Agent (or Task) with tool_response.status
//     "async_launched": register, then start with the agent id.
//   - SubagentStart and SubagentStop: a heartbeat; SubagentStop carries the
//     agent's latest text (last_assistant_message), kept as progress.
//   - UserPromptSubmit whose prompt holds a <task-notification>: the end,
//     with its status and result. A notification counts only for the
//     record whose agent id is its <task-id> and whose Agent tool call
//     (ParentMessageID, the tool_use_id) is its <tool-use-id>: a result
//     quoting a notification cannot end another agent.
//   - Stop: an active agent of the session that background_tasks no longer
//     lists has ended; its notification is looked for in the last MiB of
//     the session's transcript (under Claude Code's projects folder), and
//     without one it completes with the last text the store has. A Stop
//     without background_tasks ends nothing.
//   - SessionStart (startup, resume, compact): the <delegation-context>
//     block of the session (at most MaxContextBytes), and the agent id of
//     each delegation it names, printed as additionalContext. On startup
//     and resume (a new process), agents the session still has running
//     are ended as failed first, with their last text: their process is
//     gone (a clean exit's SessionEnd cancels them).
//   - SessionEnd: the session's active agents are cancelled.
//
// Records get the longest timeout the store allows (fsm.MaxTimeout):
// Claude Code has no agent timeout, and the hooks end the records.
//
// # Caveats
//
//   - Agents are found by agent id among the session's active delegations
//     (the active view, not history): an agent id the store does not know,
//     like the one a compaction's own SubagentStop carries, is ignored and
//     never creates a record. SubagentStart may come before PostToolUse;
//     it is then ignored, and PostToolUse registers and starts the agent.
//   - Claude Code delivers its own task notifications, so the store's
//     notifications for the session are acknowledged by the hook as soon as
//     they are due: the delegations become unread, and a compaction carries
//     them until delegation_read reads them.
//   - An agent continued with SendMessage after it ended notifies again;
//     its record's end is final, so the new outcome is a new delegation of
//     the same agent, registered and ended at once (not tracked while it
//     runs).
//   - Stop sees only the background tasks of its own Claude Code process:
//     two processes resuming one session at once would end each other's
//     agents early (so would their SessionStart and SessionEnd hooks).
//   - A hook must never block or break the host: the caller (the
//     `hook claude-code` verb) exits 0 whatever happens and logs errors.
package claudecode
