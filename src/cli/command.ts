// What every CLI command file exports, and argument helpers they share.
import { parseArgs, type ParseArgsConfig } from "node:util";

export interface Command {
  help: string;
  /** Resolves to the process exit code. */
  run(argv: string[]): Promise<number>;
}

/** Bad command-line usage: printed with the command's help, exit code 2. */
export class UsageError extends Error {
  override name = "UsageError";
}

/** node:util parseArgs with its errors turned into UsageErrors. */
export function parseCommandArgs<T extends ParseArgsConfig["options"]>(
  argv: string[],
  options: T,
  allowPositionals = true,
): { values: Record<string, unknown>; positionals: string[] } {
  try {
    const parsed = parseArgs({ args: argv, options, allowPositionals, strict: true });
    return { values: parsed.values as Record<string, unknown>, positionals: parsed.positionals };
  } catch (error) {
    throw new UsageError(error instanceof Error ? error.message : String(error));
  }
}

/** Stops a long operation on Ctrl-C / SIGTERM by aborting the returned signal. */
export function interruptSignal(): { signal: AbortSignal; dispose(): void } {
  const controller = new AbortController();
  const onSignal = (): void => controller.abort();
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);
  return {
    signal: controller.signal,
    dispose: () => {
      process.off("SIGINT", onSignal);
      process.off("SIGTERM", onSignal);
    },
  };
}

/**
 * A LoRA argument, "FILE[:SCALE]" (as `sdtune generate`, `lora merge` and `eval` take it; "@"
 * works too): the scale is what follows the last ":" or "@" when it is a number, so Windows
 * paths ("C:\\x.safetensors") and folders with colons stay intact.
 */
export function parseLoraSpec(spec: string): { path: string; scale?: number; blockWeights?: string } {
  if (!spec) throw new UsageError("--lora expects FILE or FILE:SCALE");
  // FILE:SCALE:lbw=BLOCKS (AUTOMATIC1111's LoRA Block Weight syntax: a preset or 17 / 26 values).
  const lbw = spec.lastIndexOf(":lbw=");
  if (lbw > 0) return { ...parseLoraSpec(spec.slice(0, lbw)), blockWeights: spec.slice(lbw + 5) };
  const cut = Math.max(spec.lastIndexOf(":"), spec.lastIndexOf("@"));
  if (cut > 0) {
    const suffix = spec.slice(cut + 1);
    if (/^[-+]?(\d+\.?\d*|\.\d+)(e[-+]?\d+)?$/i.test(suffix))
      return { path: spec.slice(0, cut), scale: Number(suffix) };
  }
  return { path: spec };
}
