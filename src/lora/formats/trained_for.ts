// A LoRA that does not fit the model it is applied to: one error naming the first key
// that does not fit and, from the file's kohya metadata, the base model it was trained
// for (ss_base_model_version, ss_sd_model_name, ss_v2), so the user knows what to load.
import { inspectSafetensors } from "../../io/safetensors.js";
import { locateLoraFile } from "./load.js";
import { toKohyaName } from "./names.js";
import { diffusersKeys } from "./save.js";
import { LoraFormatError } from "./types.js";

/** "sd_v1 (ss_base_model_version), ..." from kohya metadata; undefined when the file says nothing. */
export function trainedFor(metadata: Record<string, string>): string | undefined {
  const parts: string[] = [];
  const version = metadata.ss_base_model_version;
  if (version) parts.push(`base model version "${version}" (ss_base_model_version)`);
  else if (metadata.ss_v2 !== undefined) {
    parts.push(metadata.ss_v2 === "True" ? "Stable Diffusion 2.x (ss_v2 True)" : "Stable Diffusion 1.x (ss_v2 False)");
  }
  if (metadata.ss_sd_model_name) parts.push(`model "${metadata.ss_sd_model_name}" (ss_sd_model_name)`);
  return parts.length ? parts.join(", ") : undefined;
}

/** A LoRA whose keys or shapes do not fit the base model's layers. */
export class IncompatibleLoraError extends LoraFormatError {
  override name = "IncompatibleLoraError";
  constructor(
    file: string,
    problems: string[],
    /** The first problem: it names the first key that does not fit. */
    readonly firstMisfit: string,
    /** What the file's metadata says about its base, if anything. */
    readonly trainedFor: string | undefined,
  ) {
    super(
      file,
      problems,
      `this LoRA does not fit the base model (first key that does not fit: ${firstMisfit}); ` +
        (trainedFor
          ? `it was trained for ${trainedFor}`
          : "the file does not say which base it was trained for (no ss_base_model_version / ss_sd_model_name)"),
    );
  }
}

/** Problem lines of a native "does not fit this model (N problems):\n  line\n  line" error. */
export function misfitLines(message: string): string[] | undefined {
  if (!/does not fit this model/.test(message)) return undefined;
  return message
    .split("\n")
    .slice(1)
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith("... and"));
}

/**
 * `error` as an IncompatibleLoraError when it says the LoRA at `path` does not fit the model
 * (base-model name checks of loadLoraFile, shape or name misfits of attaching); else unchanged.
 */
export async function explainMisfit(path: string, error: unknown): Promise<unknown> {
  let problems: string[] | undefined;
  if (error instanceof IncompatibleLoraError) return error;
  if (error instanceof LoraFormatError) {
    const first = error.problems.findIndex((p) => /the base model('s)? /.test(p));
    if (first >= 0) problems = [...error.problems.slice(first), ...error.problems.slice(0, first)];
  } else if (error instanceof Error) {
    problems = misfitLines(error.message);
  }
  if (!problems?.length) return error;
  let metadata: Record<string, string> = {};
  let file = path;
  let first = problems[0]!;
  try {
    file = locateLoraFile(path).file;
    const header = await inspectSafetensors(file);
    metadata = header.metadata;
    first = withFileKey(first, new Set(header.tensors.map((t) => t.name)));
  } catch {
    // The error being explained is the one to report; a header that cannot be read adds nothing.
  }
  return new IncompatibleLoraError(file, problems, first, trainedFor(metadata));
}

/** A module key ("unet.<path>") in `line`, followed by the file's own key for it when the file has one. */
function withFileKey(line: string, fileKeys: Set<string>): string {
  const m = /\b((?:unet|text_encoder(?:_2)?)\.[\w.]+?)(?=:|\s|$)/.exec(line);
  if (!m) return line;
  const key = m[1]!;
  const candidates = [
    `${toKohyaName(key)}.lora_down.weight`,
    ...diffusersKeys(key, true),
    ...diffusersKeys(key, false),
  ];
  const found = candidates.find((c) => fileKeys.has(c));
  return found ? `${line} (file key "${found}")` : line;
}
