// delegations-opencode-plugin: durable background agents for OpenCode.
// Written by `delegations install opencode`; reinstall rather than edit, and
// remove it with `delegations install opencode --uninstall`.
//
// A thin bridge: it forwards what happens in OpenCode to the delegations
// daemon (register, start, progress, complete, fail, read, list, cancel) and
// carries out what the daemon asks (deliver a notification, stop a child
// that timed out). Every rule and every byte of state lives in the daemon's
// log; what this file keeps in memory (which sessions are children, their
// roots, throttled progress) is a cache it rebuilds after a restart.
//
// It imports nothing: OpenCode installs `@opencode-ai/plugin` into config
// directories from the network, which an offline machine cannot do, so
// tool arguments are plain JSON Schema and the types below are our own.

/** The path of the delegations binary, recorded by `delegations install`. */
const INSTALLED_BIN: string = ""
/** The data directory and socket given to `delegations install`, if any. */
const INSTALLED_ENV: Record<string, string> = {}

const SERVICE = "delegations"
const TOOL_OFF = { task: false, delegate: false, todowrite: false, plan_save: false }
const PROGRESS_EVERY_MS = 1000
const TITLE_TIMEOUT_MS = 30_000
const RETRY_FIRST_MS = 500
const RETRY_MAX_MS = 30_000
const MAX_DELIVERY_FAILURES = 10 // then the notification waits for the next start
const CALL_TIMEOUT_MS = 10_000 // a daemon call that may not wait (read may)
const CONTEXT_TIMEOUT_MS = 2_000 // the per-request context: a model request must not wait on us
const START_AGAIN_MS = 5_000 // after a failed start, calls fail at once for this long

const RULES = `<delegation-rules>
Background delegations: \`delegate(prompt, agent)\` starts a read-only sub-agent in the background and returns its id at once; keep working meanwhile. You WILL be notified with a <task-notification> when each one ends, and once more when all have: do not poll \`delegation_list\` and do not wait idle. \`delegation_read(id)\` returns a result (it waits for a running one); \`delegation_cancel(id)\` stops one. Agents that can edit, write or run commands go through the native \`task\` tool instead.
</delegation-rules>`

const TITLE_PROMPT = `Give a title and a description for this research result.
Title: 2 to 5 words, at most 30 characters. Description: one or two sentences, at most 150 characters.
Answer with only JSON: {"title": "...", "description": "..."}

RESULT:
`

// ---------- the parts of OpenCode's API this plugin uses ----------

type Result<T> = { data?: T; error?: unknown }
type SessionInfo = { id: string; parentID?: string; title?: string; projectID?: string; directory?: string }
type TextPart = { type: string; text?: string; sessionID?: string; messageID?: string; synthetic?: boolean }
type MessageInfo = {
  id: string
  role: string
  sessionID: string
  time?: { created?: number; completed?: number }
  finish?: string
  error?: { name?: string; data?: { message?: string } }
}
type Message = { info: MessageInfo; parts: TextPart[] }
type Permission = string | Record<string, string> | Array<{ permission?: string; pattern?: string; action?: string }>
type AgentInfo = { name: string; description?: string; mode?: string; permission?: unknown }
type Config = { small_model?: string; agent?: Record<string, { permission?: Record<string, Permission> }> }
type Client = {
  session: {
    get(o: { path: { id: string } }): Promise<Result<SessionInfo>>
    create(o: { body: { title: string; parentID?: string } }): Promise<Result<SessionInfo>>
    promptAsync(o: { path: { id: string }; body: Record<string, unknown> }): Promise<Result<unknown>>
    prompt(o: { path: { id: string }; body: Record<string, unknown> }): Promise<Result<{ info: MessageInfo; parts: TextPart[] }>>
    messages(o: { path: { id: string } }): Promise<Result<Message[]>>
    status(o?: unknown): Promise<Result<Record<string, { type: string }>>>
    abort(o: { path: { id: string } }): Promise<Result<unknown>>
    delete(o: { path: { id: string } }): Promise<Result<unknown>>
  }
  app: {
    agents(o?: unknown): Promise<Result<AgentInfo[]>>
    log(o: { body: { service: string; level: string; message: string } }): Promise<unknown>
  }
  config: { get(o?: unknown): Promise<Result<Config>> }
  tool: { ids(o?: unknown): Promise<Result<string[]>> }
}
type PluginInput = { client: Client; project: { id: string }; directory: string; worktree?: string }
type ToolContext = { sessionID: string; messageID: string; agent: string; callID?: string; abort?: AbortSignal }
type BusEvent = { type: string; properties: Record<string, any> }

declare const Bun: {
  spawn(cmd: string[], o: { stdout: "pipe"; stderr: "pipe"; stdin: "ignore"; env?: Record<string, string | undefined> }): {
    exited: Promise<number>
    stdout: ReadableStream<Uint8Array>
    stderr: ReadableStream<Uint8Array>
  }
  which(name: string): string | null
  file(path: string): { exists(): Promise<boolean> }
}
declare const process: { env: Record<string, string | undefined> }

// ---------- the store: the daemon on its unix socket ----------

type Delegation = {
  id: string
  status: string
  agent: string
  prompt?: string
  sessionID?: string
  rootSessionID: string
  parentSessionID: string
  lastMessage?: string
}
type Notification = { id: string; kind: string; parentSessionID: string; delegationId?: string; text: string; dueAt: string }
type StoreEvent = { seq: number; kind: string; id: string; sessionID?: string }

/** StoreError is an error the daemon answered, with its stable code. */
class StoreError extends Error {
  constructor(readonly code: string, message: string) {
    super(message)
  }
}

/**
 * Store calls the daemon, starting it (`delegations serve --detach`) when
 * nothing answers: one daemon serves every OpenCode process on the data
 * directory, and it outlives them.
 */
class Store {
  private socket?: Promise<string>
  private failed?: { at: number; err: unknown }

  /** The daemon's socket, starting the daemon if needed. */
  connect(): Promise<string> {
    if (this.failed && Date.now() - this.failed.at < START_AGAIN_MS) return Promise.reject(this.failed.err)
    this.socket ??= this.start().catch((e) => {
      this.socket = undefined
      this.failed = { at: Date.now(), err: e }
      throw e
    })
    return this.socket
  }

  /** Forget the socket: the next call asks for (or starts) a daemon again. */
  forget() {
    this.socket = undefined
  }

  private async start(): Promise<string> {
    const bin = await binary()
    const child = Bun.spawn([bin, "--json", "serve", "--detach"], {
      stdout: "pipe",
      stderr: "pipe",
      stdin: "ignore",
      env: { ...INSTALLED_ENV, ...process.env },
    })
    const [code, out, err] = await Promise.all([child.exited, new Response(child.stdout).text(), new Response(child.stderr).text()])
    if (code !== 0) throw new Error(`could not start the delegations daemon (${bin} serve --detach, exit ${code}): ${err.trim()}`)
    const st = JSON.parse(out) as { socket?: string }
    if (!st.socket) throw new Error(`${bin} serve --detach printed no socket: ${out}`)
    this.failed = undefined
    return st.socket
  }

  /**
   * call runs one verb, bounded by timeoutMs (0: only by signal). A daemon
   * that is gone (killed, restarted) is started again and the call
   * repeated once: every verb the plugin uses is safe to repeat (register
   * has an idempotency key, a repeated terminal command or ack changes
   * nothing, progress and read are idempotent in effect).
   */
  async call<T>(verb: string, body: object, o: { signal?: AbortSignal; timeoutMs?: number } = {}): Promise<T> {
    const timeoutMs = o.timeoutMs ?? CALL_TIMEOUT_MS
    const signals = [o.signal, timeoutMs > 0 ? AbortSignal.timeout(timeoutMs) : undefined].filter((x): x is AbortSignal => !!x)
    const signal = signals.length ? AbortSignal.any(signals) : undefined
    for (let attempt = 0; ; attempt++) {
      const socket = await this.connect()
      let res: Response
      try {
        res = await fetch(`http://delegations/v1/${verb}`, {
          method: "POST",
          headers: { "Content-Type": "application/json" },
          body: JSON.stringify(body),
          unix: socket,
          signal,
        } as RequestInit)
      } catch (e) {
        if (signal?.aborted || attempt > 0) throw e
        this.forget()
        continue
      }
      const json = (await res.json()) as any
      if (res.ok) return json as T
      throw new StoreError(json?.error?.code ?? "internal", json?.error?.message ?? `HTTP ${res.status}`)
    }
  }

  /** stream opens the daemon's server-sent events, resuming after seq. */
  async stream(after: number, signal: AbortSignal): Promise<Response> {
    const socket = await this.connect()
    const headers: Record<string, string> = {}
    if (after > 0) headers["Last-Event-ID"] = String(after)
    let res: Response
    try {
      res = await fetch("http://delegations/v1/stream", { headers, unix: socket, signal } as RequestInit)
    } catch (e) {
      this.forget() // no daemon there: the next attempt starts one
      throw e
    }
    if (!res.ok || !res.body) throw new Error(`stream: HTTP ${res.status}`)
    return res
  }
}

/** binary finds the delegations binary: $DELEGATIONS_BIN, the installed path, PATH. */
async function binary(): Promise<string> {
  const env = process.env.DELEGATIONS_BIN
  if (env) {
    if (await Bun.file(env).exists()) return env
    throw new Error(`DELEGATIONS_BIN is ${env}, which does not exist. Point it at the delegations binary, or unset it.`)
  }
  if (INSTALLED_BIN && (await Bun.file(INSTALLED_BIN).exists())) return INSTALLED_BIN
  const found = Bun.which("delegations")
  if (found) return found
  const recorded = INSTALLED_BIN ? ` (the installed path ${INSTALLED_BIN} no longer exists)` : ""
  throw new Error(
    `the delegations binary was not found${recorded}. Put it on PATH, set DELEGATIONS_BIN to its path, ` +
      "or run `delegations install opencode` again with the binary you want the plugin to use.",
  )
}

/** sse yields the messages of a server-sent-events body. */
async function* sse(body: ReadableStream<Uint8Array>): AsyncGenerator<{ id?: string; event: string; data: string }> {
  const decoder = new TextDecoder()
  let buf = ""
  for await (const chunk of body as any as AsyncIterable<Uint8Array>) {
    buf += decoder.decode(chunk, { stream: true })
    let end: number
    while ((end = buf.indexOf("\n\n")) >= 0) {
      const block = buf.slice(0, end)
      buf = buf.slice(end + 2)
      const msg = { event: "message", data: "" } as { id?: string; event: string; data: string }
      for (const line of block.split("\n")) {
        const i = line.indexOf(":")
        const field = i < 0 ? line : line.slice(0, i)
        const value = i < 0 ? "" : line.slice(i + 1).replace(/^ /, "")
        if (field === "id") msg.id = value
        else if (field === "event") msg.event = value
        else if (field === "data") msg.data += (msg.data ? "\n" : "") + value
      }
      yield msg
    }
  }
}

function messageOf(e: unknown): string {
  return e instanceof Error ? e.message : String(e)
}

function unwrap<T>(r: Result<T>, what: string): T {
  if (r.error !== undefined || r.data === undefined) {
    const err = r.error as any
    throw new Error(`${what}: ${err?.data?.message ?? err?.message ?? JSON.stringify(err ?? "no answer")}`)
  }
  return r.data
}

const delay = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

// The store's limits on the texts the plugin forwards (bytes of UTF-8).
const MAX_MESSAGE = 1 << 20
const MAX_RESULT = 4 << 20
const MAX_ERROR = 64 << 10
const MAX_KEY = 246 // a register's idempotency key

/** cut keeps at most max bytes of s's UTF-8, on a character boundary,
 * saying so at the end when it cut. */
function cut(s: string, max: number): string {
  const b = new TextEncoder().encode(s)
  if (b.length <= max) return s
  const note = "\n\n[cut: the text was longer than the store keeps]"
  let n = max - note.length
  while (n > 0 && (b[n] & 0xc0) === 0x80) n-- // not inside a character
  return new TextDecoder().decode(b.subarray(0, n)) + note
}

/**
 * idempotencyKey is delegate's key: its tool call, under the message that
 * made it. OpenCode's message ids ascend with time (their 48-bit clock
 * wraps every 795 days), so the keys reach the store's index in order, on
 * its last pages; the model's call id alone is random and lands anywhere
 * in it (see projection.MaxIdempotencyKey). A call id too long to fit
 * beside its message is the key alone.
 */
function idempotencyKey(ctx: ToolContext): string | undefined {
  if (!ctx.callID) return undefined
  const key = `opencode:${ctx.messageID}:${ctx.callID}`
  return ctx.messageID && new TextEncoder().encode(key).length <= MAX_KEY ? key : `opencode:${ctx.callID}`
}

/** wildcard reports whether name matches a permission pattern ("*" any run). */
function wildcard(pattern: string, name: string): boolean {
  const re = pattern.replace(/[.+?^${}()|[\]\\]/g, "\\$&").replace(/\*/g, ".*")
  return new RegExp(`^${re}$`).test(name)
}

/**
 * denied reports whether a permission denies a tool on every pattern: an
 * agent's resolved ruleset (app.agents: rules in order, the last match
 * wins, permission names may be wildcards), or a configured entry ("deny",
 * or {"*": "deny", ...}).
 */
function denied(p: Permission | undefined, tool: string): boolean {
  if (p === undefined) return false
  if (typeof p === "string") return p === "deny"
  if (Array.isArray(p)) {
    let state: string | undefined
    for (const r of p) {
      if (!wildcard(r.permission ?? "", tool)) continue
      if ((r.pattern ?? "*") === "*") state = r.action
      else if (r.action !== "deny" && state === "deny") state = "partly"
    }
    return state === "deny"
  }
  return p["*"] === "deny" && Object.values(p).every((a) => a === "deny")
}

// ---------- the plugin ----------

export const DelegationsPlugin = async ({ client, project, directory }: PluginInput) => {
  const store = new Store()
  const log = (level: string, message: string) => {
    client.app.log({ body: { service: SERVICE, level, message } }).catch(() => {})
  }

  // Caches, rebuilt from the store and the host after a restart.
  const children = new Map<string, string>() // child session → delegation id
  const childOf = new Map<string, string>() // delegation id → child session
  const roots = new Map<string, string>() // session → its root session
  const owned = new Map<string, boolean>() // session → belongs to this OpenCode project
  const finishing = new Set<string>() // delegation ids being completed
  const progress = new Map<string, { text?: string; timer?: ReturnType<typeof setTimeout>; sending?: Promise<void> }>()
  const streamed = new Map<string, { part?: string; text: string }>() // delegation id → its latest text part
  const answers = new Map<string, string>() // a child's assistant message → its delegation: its text is progress
  const delivering = new Set<string>() // notification ids being delivered
  const redo = new Map<string, Notification>() // asked for again while being delivered
  const delivered = new Set<string>() // notification ids delivered here, not yet acknowledged
  const acked = new Set<string>() // notification ids acknowledged here: never delivered again
  const startedAt = Date.now()
  const deferred = new Map<string, Map<string, Notification>>() // busy parent → its notifications
  const failures = new Map<string, number>() // notification id → consecutive failed deliveries here

  const track = (child: string, id: string) => {
    children.set(child, id)
    childOf.set(id, child)
  }

  /** session returns a session, undefined when OpenCode has none by that
   * id; other failures throw. */
  const session = async (id: string): Promise<SessionInfo | undefined> => {
    const r = await client.session.get({ path: { id } })
    if (r.error === undefined) return r.data
    const status = (r as { response?: { status?: number } }).response?.status
    if (status === 404 || (r.error as any)?.name === "NotFoundError") return undefined
    throw new Error(`look up session ${id}: ${JSON.stringify(r.error)}`)
  }

  /** rootOf walks up the parents of a session. */
  const rootOf = async (id: string): Promise<string> => {
    const known = roots.get(id)
    if (known) return known
    let cur = id
    for (let depth = 0; depth < 64; depth++) {
      const s = await session(cur)
      if (!s?.parentID) break
      cur = s.parentID
    }
    roots.set(id, cur)
    return cur
  }

  /** owns reports whether a session is this OpenCode project's (another
   * OpenCode process on the same data directory delivers its own). */
  const owns = async (id: string): Promise<boolean> => {
    const known = owned.get(id)
    if (known !== undefined) return known
    const s = await session(id)
    const mine = s !== undefined && (s.projectID === undefined || s.projectID === project.id)
    owned.set(id, mine)
    return mine
  }

  const busy = async (id: string): Promise<boolean> => {
    const r = await client.session.status()
    const st = r.data?.[id]?.type
    return st !== undefined && st !== "idle"
  }

  const promptChild = async (child: string, agent: string, text: string) => {
    unwrap(
      await client.session.promptAsync({
        path: { id: child },
        body: { agent, parts: [{ type: "text", text }], tools: TOOL_OFF },
      }),
      "prompt the child session",
    )
  }

  /** startChild creates and prompts the child session of a registered delegation. */
  const startChild = async (d: Delegation, parent: string) => {
    const s = unwrap(await client.session.create({ body: { title: `Delegation: ${d.id}`, parentID: parent } }), "create the child session")
    track(s.id, d.id)
    await store.call("start", { id: d.id, sessionID: s.id })
    await promptChild(s.id, d.agent, d.prompt ?? "")
  }

  // ----- agents -----

  const agentsInfo = async () => {
    const [agents, config] = await Promise.all([client.app.agents(), client.config.get()])
    return { agents: unwrap(agents, "list the agents"), config: config.data ?? {} }
  }

  /**
   * readOnly: edit, write and bash all denied, as the agent resolves (its
   * ruleset includes OpenCode's defaults), else as configured. In OpenCode
   * 1.18 a denied edit also removes the write tool, and a "write" rule alone
   * changes nothing, so edit and bash decide.
   */
  const readOnly = (name: string, info: Awaited<ReturnType<typeof agentsInfo>>): boolean => {
    const resolved = info.agents.find((a) => a.name === name)?.permission
    const p = (Array.isArray(resolved) ? resolved : info.config.agent?.[name]?.permission) as
      | Permission
      | Record<string, Permission>
      | undefined
    if (!p) return false
    const get = (tool: string): Permission | undefined => (Array.isArray(p) ? (p as Permission) : (p as Record<string, Permission>)[tool])
    return denied(get("edit"), "edit") && denied(get("bash"), "bash") // write follows edit
  }

  // ----- the child's lifecycle -----

  const sendProgress = (id: string) => {
    const p = progress.get(id)
    if (!p) return
    const text = p.text
    p.text = undefined
    if (text === undefined) {
      progress.delete(id)
      return
    }
    // The next text waits for this call and a second: calls never pile up
    // on a slow daemon.
    p.sending = store
      .call("progress", { id, message: cut(text, MAX_MESSAGE) })
      .then(() => {})
      .catch((e) => {
        if (!(e instanceof StoreError && e.code === "terminal")) log("warn", `progress ${id}: ${messageOf(e)}`)
      })
      .finally(() => {
        if (progress.get(id) === p) p.timer = setTimeout(() => sendProgress(id), PROGRESS_EVERY_MS)
      })
  }

  /** onText records a child's latest text, at most once a second per delegation. */
  const onText = (id: string, text: string) => {
    const p = progress.get(id)
    if (p) {
      p.text = text
      return
    }
    progress.set(id, { text })
    sendProgress(id)
  }

  /** stopProgress stops a delegation's progress and waits for the call in
   * flight, so that no progress arrives after the end (it would be refused). */
  const stopProgress = async (id: string) => {
    const p = progress.get(id)
    progress.delete(id)
    if (p?.timer) clearTimeout(p.timer)
    await p?.sending
  }

  /** untrack forgets a child whose delegation ended: later events of its
   * session change nothing. */
  const untrack = (id: string) => {
    const child = childOf.get(id)
    if (child) children.delete(child)
    childOf.delete(id)
    streamed.delete(id)
    for (const [m, d] of answers) if (d === id) answers.delete(m)
  }

  /** describe asks OpenCode's small model for a title and a description
   * of a result; {} (the store's fallback) when it gives none. */
  const describe = async (id: string, child: string, text: string): Promise<{ title?: string; description?: string }> => {
    let title: SessionInfo | undefined
    let timer: ReturnType<typeof setTimeout> | undefined
    try {
      const small = (await client.config.get()).data?.small_model
      const slash = small?.indexOf("/") ?? -1
      if (!small || slash < 0 || !text.trim()) return {}
      // The result is untrusted text (it may quote web pages): the model
      // that titles it gets no tool at all.
      const ids = unwrap(await client.tool.ids(), "list the tools")
      const tools = Object.fromEntries(ids.map((t) => [t, false]))
      title = unwrap(await client.session.create({ body: { title: `Delegation title: ${id}`, parentID: child } }), "create a title session")
      const answer = await Promise.race([
        client.session.prompt({
          path: { id: title.id },
          body: {
            model: { providerID: small.slice(0, slash), modelID: small.slice(slash + 1) },
            parts: [{ type: "text", text: TITLE_PROMPT + text.slice(0, 2000) }],
            tools,
          },
        }),
        new Promise<undefined>((resolve) => (timer = setTimeout(() => resolve(undefined), TITLE_TIMEOUT_MS))),
      ])
      const reply = (answer?.data?.parts ?? []).filter((p) => p.type === "text").map((p) => p.text ?? "").join("\n")
      const json = reply.match(/\{[\s\S]*\}/)
      if (!json) return {}
      const m = JSON.parse(json[0]) as { title?: unknown; description?: unknown }
      if (typeof m.title !== "string" || typeof m.description !== "string") return {}
      return { title: m.title.trim().slice(0, 30), description: m.description.trim().slice(0, 150) }
    } catch (e) {
      log("info", `title for ${id}: ${messageOf(e)}; the store's fallback applies`)
      return {}
    } finally {
      clearTimeout(timer)
      if (title) client.session.delete({ path: { id: title.id } }).catch(() => {})
    }
  }

  /** lastAnswer is a child's last message if it is an assistant's. */
  const lastAnswer = (msgs: Message[]): Message | undefined => {
    const last = msgs[msgs.length - 1]
    return last?.info.role === "assistant" ? last : undefined
  }

  /** done reports whether a child's turn ended with a final answer (or an
   * error): not cut off mid-step, not stopped after a tool call. */
  const done = (m: Message | undefined): m is Message =>
    !!m && !!m.info.time?.completed && (!!m.info.error || (m.info.finish !== undefined && m.info.finish !== "tool-calls"))

  const textOf = (m: Message) =>
    m.parts
      .filter((p) => p.type === "text" && !p.synthetic)
      .map((p) => p.text ?? "")
      .join("\n")

  const errorOf = (m: Message) => m.info.error?.data?.message ?? m.info.error?.name ?? "the agent failed"

  /** finish ends a delegation whose child went idle, with its last answer.
   * A failure to record it is tried again (the result must not be lost to
   * a daemon restart); attempt counts the tries. */
  const finish = async (child: string, id: string, attempt = 0) => {
    if (finishing.has(id)) return
    finishing.add(id)
    try {
      const msgs = unwrap(await client.session.messages({ path: { id: child } }), "read the child session")
      const answer = lastAnswer(msgs)
      if (!done(answer)) return // not done yet: a later idle finishes it
      await stopProgress(id)
      if (answer.info.error) {
        await store.call("fail", { id, error: cut(errorOf(answer), MAX_ERROR) })
      } else {
        const text = textOf(answer)
        const meta = await describe(id, child, text)
        await store.call("complete", { id, result: text.trim() ? cut(text, MAX_RESULT) : "(the agent finished without a text answer)", ...meta })
      }
      untrack(id)
    } catch (e) {
      if (e instanceof StoreError && e.code === "terminal") untrack(id)
      else if (attempt < MAX_DELIVERY_FAILURES) {
        log("warn", `complete ${id}: ${messageOf(e)}; trying again`)
        setTimeout(() => void finish(child, id, attempt + 1), Math.min(RETRY_FIRST_MS * 2 ** (attempt + 1), RETRY_MAX_MS))
      } else log("error", `complete ${id}: ${messageOf(e)}; it ends at its deadline`)
    } finally {
      finishing.delete(id)
    }
  }

  /** fail ends a delegation whose child failed. */
  const failChild = async (id: string, error: string) => {
    await stopProgress(id)
    try {
      await store.call("fail", { id, error: cut(error, MAX_ERROR) })
      untrack(id)
    } catch (e) {
      if (e instanceof StoreError && e.code === "terminal") untrack(id)
      else log("error", `fail ${id}: ${messageOf(e)}`)
    }
  }

  /** stopChild stops the child of a delegation that ended in the store. */
  const stopChild = async (id: string, remove: boolean) => {
    await stopProgress(id)
    untrack(id)
    let child = childOf.get(id)
    if (!child) {
      const d = await store.call<Delegation>("show", { id }).catch(() => undefined)
      child = d?.sessionID
    }
    if (!child || !(await owns(child))) return
    await client.session.abort({ path: { id: child } }).catch(() => {})
    if (remove) await client.session.delete({ path: { id: child } }).catch(() => {})
  }

  // ----- notifications -----

  /** inSession reports whether a parent already holds a notification's
   * text: delivered by an OpenCode that stopped before acknowledging it. */
  const inSession = async (parent: string, text: string): Promise<boolean> => {
    const msgs = unwrap(await client.session.messages({ path: { id: parent } }), "read the parent session")
    return msgs.some((m) => m.info.role === "user" && m.parts.some((p) => p.type === "text" && p.text === text))
  }

  const deliver = async (n: Notification): Promise<void> => {
    let recheck: string | undefined
    if (acked.has(n.id) || (failures.get(n.id) ?? 0) >= MAX_DELIVERY_FAILURES) return
    if (delivering.has(n.id)) {
      redo.set(n.id, n) // once the delivery in flight ends, look again
      return
    }
    delivering.add(n.id)
    try {
      const parent = n.parentSessionID
      if (!(await owns(parent))) return
      const carried = Date.parse(n.dueAt) < startedAt // due before this OpenCode started
      if (!delivered.has(n.id) && !(carried && (await inSession(parent, n.text)))) {
        if (await busy(parent)) {
          // A message sent into a running turn makes OpenCode ask the model
          // again when the turn ends, noReply or not: a terminal
          // notification would wake the parent. Deliver when it is idle.
          const q = deferred.get(parent) ?? new Map<string, Notification>()
          q.set(n.id, n)
          deferred.set(parent, q)
          recheck = parent // it may have gone idle meanwhile: look again below
          return
        }
        try {
          const r = await client.session.promptAsync({
            path: { id: parent },
            body: { noReply: n.kind !== "all-complete", parts: [{ type: "text", text: n.text, synthetic: true }] },
          })
          unwrap({ data: true, error: r.error }, `deliver ${n.id}`)
        } catch (e) {
          const k = (failures.get(n.id) ?? 0) + 1
          failures.set(n.id, k)
          log(k >= MAX_DELIVERY_FAILURES ? "error" : "warn", `delivery of ${n.id} failed (${k} times): ${messageOf(e)}`)
          // The failed ack makes the stream send it again: wait before.
          await delay(Math.min(RETRY_FIRST_MS * 2 ** k, RETRY_MAX_MS))
          await store.call("ack", { id: n.id, failed: messageOf(e).slice(0, 1000) }).catch(() => {})
          return
        }
        failures.delete(n.id)
        delivered.add(n.id)
      }
      // Delivered (now, or before): acknowledge. If that fails the stream
      // sends it again, and it is acknowledged then, not delivered twice.
      await store.call("ack", { id: n.id })
      delivered.delete(n.id)
      failures.delete(n.id)
      acked.add(n.id)
    } catch (e) {
      // OpenCode or the daemon failed to answer: try again in a while (the
      // stream would not send it again by itself).
      log("warn", `notification ${n.id}: ${messageOf(e)}; trying again`)
      setTimeout(() => void deliver(n), RETRY_MAX_MS / 6)
    } finally {
      delivering.delete(n.id)
      const again = redo.get(n.id)
      redo.delete(n.id)
      if (again) void deliver(again)
      else if (recheck && !(await busy(recheck).catch(() => true))) flush(recheck)
    }
  }

  const flush = (parent: string) => {
    const q = deferred.get(parent)
    if (!q) return
    deferred.delete(parent)
    for (const n of q.values()) void deliver(n)
  }

  const onStoreEvent = (ev: StoreEvent) => {
    const stop = (remove: boolean) => stopChild(ev.id, remove).catch((e) => log("warn", `stop the child of ${ev.id}: ${messageOf(e)}`))
    if (ev.kind === "timed_out") void stop(true)
    else if (ev.kind === "cancelled") void stop(false)
  }

  /** follow reads the daemon's stream for the plugin's lifetime, starting
   * the daemon again when it goes away. After each connection it
   * reconciles the active delegations with OpenCode: after a start, and
   * after a daemon that was gone (whatever could not be recorded meanwhile
   * is recorded then). The stream is open first, so that nothing that
   * happens during the reconciliation is missed. */
  const follow = async () => {
    let last = 0
    let wait = RETRY_FIRST_MS
    for (;;) {
      const abort = new AbortController()
      try {
        const res = await store.stream(last, abort.signal)
        wait = RETRY_FIRST_MS
        reconcile().catch((e) => log("error", `reconcile: ${messageOf(e)}`))
        for await (const m of sse(res.body!)) {
          if (m.id) last = Number(m.id)
          if (m.event === "notification") void deliver(JSON.parse(m.data) as Notification)
          else if (m.event === "event") onStoreEvent(JSON.parse(m.data) as StoreEvent)
          else if (m.event === "error") log("error", `stream: ${m.data}`)
        }
        log("warn", "the daemon's stream ended; reconnecting")
      } catch (e) {
        log("warn", `the daemon's stream failed: ${messageOf(e)}; reconnecting in ${wait} ms`)
      }
      abort.abort()
      await delay(wait)
      wait = Math.min(2 * wait, RETRY_MAX_MS)
    }
  }

  // ----- restart: reconcile what the store says is active -----

  const RESUME = `OpenCode stopped while you were working on this task. Continue from where you left off and finish with your final answer.`

  const reconcile = async () => {
    const { delegations } = await store.call<{ delegations: Delegation[] }>("active", { projectDir: directory })
    for (const d of delegations) {
      try {
        if (!d.sessionID) {
          if (await owns(d.parentSessionID)) await startChild(d, d.parentSessionID)
          continue
        }
        const s = await session(d.sessionID)
        if (!s) {
          if (await owns(d.parentSessionID)) await failChild(d.id, "the child session is gone (deleted while OpenCode was not running)")
          continue
        }
        if (!(await owns(d.sessionID))) continue
        track(d.sessionID, d.id)
        if (await busy(d.sessionID)) continue // running here already
        const msgs = unwrap(await client.session.messages({ path: { id: d.sessionID } }), "read the child session")
        const answer = lastAnswer(msgs)
        if (done(answer)) {
          await finish(d.sessionID, d.id) // it finished while OpenCode was down
        } else {
          // Stopped mid-turn (or before its first answer): resume it. If
          // that fails, end it with its partial output.
          try {
            await promptChild(d.sessionID, d.agent, RESUME)
            log("info", `resumed ${d.id} in ${d.sessionID}`)
          } catch (e) {
            const partial = (answer && textOf(answer)) || d.lastMessage || ""
            await failChild(d.id, `OpenCode stopped mid-turn and the child could not be resumed (${messageOf(e)}). Partial output:\n${partial}`)
          }
        }
      } catch (e) {
        log("error", `reconcile ${d.id}: ${messageOf(e)}`)
      }
    }
  }

  void follow()

  // ----- tools and hooks -----

  const failed = (reason: string) => `❌ Delegation failed:\n\n${reason}`

  return {
    tool: {
      delegate: {
        description:
          "Delegate a task to a read-only sub-agent that runs in the background. Returns at once with an id; " +
          "a <task-notification> arrives when it ends. The result is kept durably: read it with delegation_read(id), " +
          "even after a restart or a compaction.",
        args: {
          prompt: { type: "string", description: "The full detailed prompt for the agent" },
          agent: { type: "string", description: "Agent to delegate to. Must be a read-only sub-agent (edit/write/bash denied)" },
        },
        async execute(args: { prompt?: unknown; agent?: unknown }, ctx: ToolContext): Promise<string> {
          try {
            const prompt = typeof args.prompt === "string" ? args.prompt : ""
            const agent = typeof args.agent === "string" ? args.agent.trim() : ""
            if (!prompt.trim()) return failed("The prompt is empty: give the agent a full, detailed prompt.")
            const me = await session(ctx.sessionID)
            if (children.has(ctx.sessionID) || me?.title?.startsWith("Delegation: ")) {
              return failed("A delegation cannot delegate: do the work yourself and answer.")
            }
            const info = await agentsInfo()
            if (!info.agents.some((a) => a.name === agent)) {
              const available = info.agents
                .filter((a) => a.mode !== "primary" && readOnly(a.name, info))
                .map((a) => `• ${a.name}${a.description ? ` - ${a.description}` : ""}`)
                .join("\n")
              return failed(`Agent "${agent}" not found.\n\nAvailable agents:\n${available || "(none)"}`)
            }
            if (!readOnly(agent, info)) {
              return failed(
                `Agent "${agent}" is write-capable and requires the native \`task\` tool.\n\n` +
                  "Use `task` instead of `delegate` for agents that can edit, write or run commands; " +
                  "`delegate` is for read-only agents (edit, write and bash denied).",
              )
            }
            const root = await rootOf(ctx.sessionID)
            const d = await store.call<Delegation>("register", {
              rootSessionID: root,
              parentSessionID: ctx.sessionID,
              parentMessageID: ctx.messageID || undefined,
              parentAgent: ctx.agent || undefined,
              agent,
              prompt,
              projectDir: directory,
              idempotencyKey: idempotencyKey(ctx),
            })
            if (d.sessionID) track(d.sessionID, d.id)
            else {
              try {
                await startChild(d, ctx.sessionID)
              } catch (e) {
                await failChild(d.id, `the child session could not start: ${messageOf(e)}`)
                throw e
              }
            }
            const n = await store
              .call<{ delegations: Delegation[] }>("active", { parentSessionID: ctx.sessionID })
              .then((r) => r.delegations.length)
              .catch(() => 1)
            let text = `Delegation started: ${d.id}\nAgent: ${agent}`
            if (n > 1) text += `\n\n${n} delegations now active.`
            return text + `\nYou WILL be notified when ${n > 1 ? "ALL complete" : "complete"}. Do NOT poll.`
          } catch (e) {
            return failed(messageOf(e))
          }
        },
      },
      delegation_read: {
        description:
          "Read the full output of a delegation by its id. Waits for one that is still running. " +
          "Use it for results whose notification was lost, e.g. in a compaction.",
        args: { id: { type: "string", description: "The delegation ID (e.g., 'elegant-blue-tiger')" } },
        async execute(args: { id?: unknown }, ctx: ToolContext): Promise<string> {
          const id = typeof args.id === "string" ? args.id.trim() : ""
          if (!id) throw new Error("Delegation ID is required")
          const root = await rootOf(ctx.sessionID)
          const r = await store.call<{ text: string }>("read", { rootSessionID: root, id, waitMs: 86_400_000 }, { signal: ctx.abort, timeoutMs: 0 })
          return r.text
        },
      },
      delegation_list: {
        description: "List the delegations of this session, running and finished. Do not poll it: notifications arrive by themselves.",
        args: {},
        async execute(_args: unknown, ctx: ToolContext): Promise<string> {
          const root = await rootOf(ctx.sessionID)
          return (await store.call<{ text: string }>("list", { rootSessionID: root, textOnly: true })).text
        },
      },
      delegation_cancel: {
        description: "Cancel a running delegation by its id; its child session is stopped.",
        args: { id: { type: "string", description: "The delegation ID (e.g., 'elegant-blue-tiger')" } },
        async execute(args: { id?: unknown }, ctx: ToolContext): Promise<string> {
          const id = typeof args.id === "string" ? args.id.trim() : ""
          if (!id) throw new Error("Delegation ID is required")
          const root = await rootOf(ctx.sessionID)
          const d = await store.call<Delegation>("show", { id }).catch(() => undefined)
          if (!d || d.rootSessionID !== root) {
            throw new Error(`Delegation "${id}" not found.\n\nUse delegation_list() to see available delegations.`)
          }
          try {
            await store.call("cancel", { id, reason: `cancelled from session ${ctx.sessionID}` })
          } catch (e) {
            if (e instanceof StoreError && e.code === "terminal") return `Delegation ${id} had already ended (${d.status}); nothing to cancel.`
            throw e
          }
          await stopChild(id, false)
          return `Delegation cancelled: ${id}`
        },
      },
    },

    // Read-only sub-agents belong to delegate, not to the native task tool.
    "tool.execute.before": async (input: { tool: string }, output: { args?: { subagent_type?: string } }) => {
      if (input.tool !== "task") return
      const name = output.args?.subagent_type
      if (!name) return
      const info = await agentsInfo().catch(() => undefined)
      const agent = info?.agents.find((a) => a.name === name)
      if (!info || agent?.mode !== "subagent" || !readOnly(name, info)) return
      throw new Error(
        `Agent '${name}' is read-only: use the delegate tool, which runs it in the background and keeps its result.`,
      )
    },

    // Every model request carries the rules and what is running or unread,
    // so none of it depends on a summary copying it.
    "experimental.chat.system.transform": async (input: { sessionID?: string }, output: { system: string[] }) => {
      const id = input.sessionID
      if (id && children.has(id)) return
      if (id) {
        const s = await session(id).catch(() => undefined)
        if (s?.title?.startsWith("Delegation")) return
      }
      output.system.push(RULES)
      if (!id) return
      try {
        const r = await store.call<{ block: string }>("compact", { rootSessionID: await rootOf(id), brief: true }, { timeoutMs: CONTEXT_TIMEOUT_MS })
        if (r.block) output.system.push(r.block)
      } catch (e) {
        log("warn", `brief context: ${messageOf(e)}`)
      }
    },

    "experimental.session.compacting": async (input: { sessionID: string }, output: { context: string[] }) => {
      try {
        const r = await store.call<{ block: string }>("compact", { rootSessionID: await rootOf(input.sessionID) })
        if (r.block) output.context.push(r.block)
      } catch (e) {
        log("error", `compaction context: ${messageOf(e)}`)
      }
    },

    event: async ({ event }: { event: BusEvent }) => {
      const p = event.properties ?? {}
      switch (event.type) {
        // Streamed text arrives as deltas; an update carries a part's whole
        // text (empty when it starts). Progress is the latest text part of
        // the child's answers (not of its prompt).
        case "message.updated": {
          const info = p.info as MessageInfo | undefined
          const id = info && children.get(info.sessionID)
          if (id && info.role === "assistant") answers.set(info.id, id)
          return
        }
        case "message.part.delta": {
          const sid = p.sessionID as string | undefined
          const id = sid && children.get(sid)
          if (!id || answers.get(p.messageID) !== id || p.field !== "text" || typeof p.delta !== "string") return
          const cur = streamed.get(id)
          const text = cur && cur.part === p.partID ? cur.text + p.delta : p.delta
          streamed.set(id, { part: p.partID, text })
          onText(id, text)
          return
        }
        case "message.part.updated": {
          const part = p.part as (TextPart & { id?: string }) | undefined
          const id = part?.sessionID && children.get(part.sessionID)
          if (!id || answers.get(part.messageID ?? "") !== id || part?.type !== "text" || part.synthetic || !part.text) return
          streamed.set(id, { part: part.id, text: part.text })
          onText(id, part.text)
          return
        }
        case "session.idle":
        case "session.status": {
          const sid = p.sessionID as string | undefined
          if (!sid || (event.type === "session.status" && p.status?.type !== "idle")) return
          const id = children.get(sid)
          if (id) void finish(sid, id)
          flush(sid)
          return
        }
        case "session.error": {
          const sid = p.sessionID as string | undefined
          const id = sid && children.get(sid)
          if (!id) return
          const err = p.error as { name?: string; data?: { message?: string } } | undefined
          void failChild(id, err?.data?.message ?? err?.name ?? "the child session failed")
          return
        }
        case "session.deleted": {
          const sid = (p.info as SessionInfo | undefined)?.id
          if (sid) deferred.delete(sid)
          const id = sid && children.get(sid)
          if (!id) return
          store.call("cancel", { id, reason: "the child session was deleted" }).catch(() => {})
          return
        }
      }
    },
  }
}
