// A probe plugin with no imports: it serves a small control API on
// 127.0.0.1 (its URL written to <project>/.probe-url) so a test can make the
// plugin's own SDK client call OpenCode from background code, outside any
// tool call, and time the calls.
//
//   POST /call {"method": "session.promptAsync", "args": {...}}
//     -> {"ms": 12, "data": ..., "error": ..., "status": 204}
//   GET /events -> the events the plugin's event hook saw
export const ProbePlugin = async ({ client, directory }) => {
  const seen = [];
  const server = Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    async fetch(req) {
      const url = new URL(req.url);
      if (req.method === "GET" && url.pathname === "/events") {
        return Response.json(seen);
      }
      if (req.method !== "POST" || url.pathname !== "/call") {
        return new Response("not found", { status: 404 });
      }
      const { method, args } = await req.json();
      let target = client;
      const path = method.split(".");
      const name = path.pop();
      for (const p of path) target = target?.[p];
      if (typeof target?.[name] !== "function") {
        return Response.json({ error: `no method ${method}` }, { status: 400 });
      }
      const start = performance.now();
      try {
        const res = await target[name](args);
        return Response.json({
          ms: Math.round(performance.now() - start),
          data: res?.data ?? null,
          error: res?.error ?? null,
          status: res?.response?.status ?? 0,
        });
      } catch (e) {
        return Response.json({ ms: Math.round(performance.now() - start), thrown: String(e) });
      }
    },
  });
  await Bun.write(`${directory}/.probe-url`, server.url.href);
  return {
    event: async ({ event }) => {
      seen.push({ type: event.type, sessionID: event.properties?.sessionID ?? event.properties?.info?.sessionID ?? event.properties?.part?.sessionID ?? null });
    },
  };
};
