// `sdtune <command>`: dispatches to one file per command. Errors print as one
// clear line (set SDTUNE_DEBUG=1 for the stack) and exit non-zero.
import { UsageError, type Command } from "./command.js";

const commands: Record<string, () => Promise<Command>> = {
  info: async () => (await import("./info.js")).command,
  inspect: async () => (await import("./inspect.js")).command,
  dataset: async () => (await import("./dataset.js")).command,
  eval: async () => (await import("./eval.js")).command,
  lora: async () => (await import("./lora.js")).command,
  cache: async () => (await import("./cache.js")).command,
  train: async () => (await import("./train.js")).command,
  generate: async () => (await import("./generate.js")).command,
  demo: async () => (await import("./demo.js")).command,
  convert: async () => (await import("./convert.js")).command,
};

/** Later commands add themselves here; kept separate so the table reads top to bottom. */
export function registerCommand(name: string, loader: () => Promise<Command>): void {
  commands[name] = loader;
}

function usage(): string {
  return [
    "usage: sdtune <command> [options]",
    "",
    "commands:",
    ...Object.keys(commands).map((name) => `  ${name}`),
    "",
    "Run `sdtune <command> --help` for a command's options.",
  ].join("\n");
}

export async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (!name || name === "--help" || name === "-h" || name === "help") {
    console.log(usage());
    return name ? 0 : 1;
  }
  if (name === "--version") {
    const { createRequire } = await import("node:module");
    console.log((createRequire(import.meta.url)("../../package.json") as { version: string }).version);
    return 0;
  }
  const loader = commands[name];
  if (!loader) {
    console.error(`sdtune: unknown command "${name}"\n\n${usage()}`);
    return 2;
  }
  const command = await loader();
  if (rest.includes("--help") || rest.includes("-h")) {
    console.log(command.help);
    return 0;
  }
  try {
    return await command.run(rest);
  } catch (error) {
    const err = error instanceof Error ? error : new Error(String(error));
    if (err instanceof UsageError) {
      console.error(`sdtune ${name}: ${err.message}\n\n${command.help}`);
      return 2;
    }
    if (err.name === "AbortError") {
      console.error(`sdtune ${name}: cancelled`);
      return 130;
    }
    console.error(`sdtune ${name}: error: ${err.message}`);
    if (process.env.SDTUNE_DEBUG) console.error(err.stack);
    return 1;
  }
}
