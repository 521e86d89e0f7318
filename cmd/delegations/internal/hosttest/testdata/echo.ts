// A plugin with no imports at all: its tool's args are plain JSON Schema
// objects, which OpenCode 1.18.33 accepts in place of zod schemas. The tool
// answers with JSON: the text and what the tool's context carried.
export const EchoPlugin = async (input) => {
  return {
    tool: {
      echo: {
        description: "Echo the text back.",
        args: {
          text: { type: "string", description: "The text to echo." },
        },
        async execute(args, ctx) {
          const context = {};
          for (const [k, v] of Object.entries(ctx ?? {})) {
            context[k] = v === null || ["string", "number", "boolean"].includes(typeof v) ? v : `<${v?.constructor?.name ?? typeof v}>`;
          }
          return JSON.stringify({
            echo: args.text,
            context,
            plugin: Object.keys(input ?? {}).sort(),
          });
        },
      },
    },
  };
};
