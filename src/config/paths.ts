// Relative paths in a config file (training or evaluation) mean "next to this file", wherever sdtune is started from
// (a config object passed to the API keeps them relative to the working directory). The rule:
// - absolute paths and "~/..." are left alone;
// - keys that only ever hold a path (output_dir, cache_dir, class_data_dir, instance_images)
//   resolve against the config file's folder;
// - keys that hold a path or a Hugging Face id (model, dataset.path, clip_model, init_lora):
//   a value that is unmistakably a path ("./x", "../x", "a/b/c", a backslash) resolves against
//   the config's folder; a bare "name" or "org/name" does only when it exists there, and is
//   otherwise left as written (a hub id, as the hub resolver reads it).
import { existsSync } from "node:fs";
import { dirname, isAbsolute, resolve } from "node:path";

type Kind = "path" | "path-or-id";

const TOP: Record<string, Kind> = { model: "path-or-id", output_dir: "path", cache_dir: "path" };
/** Stage keys (at the top level as defaults, and in each of `stages`), by their path inside a stage. */
const STAGE: Record<string, Kind> = {
  "dataset.path": "path-or-id",
  "prior_preservation.class_data_dir": "path",
  "evaluate.instance_images": "path",
  "evaluate.clip_model": "path-or-id",
  init_lora: "path-or-id",
};

/** Eval config keys (src/config/eval.ts); "[]" means every item of that array. */
const EVAL: Record<string, Kind> = {
  output_dir: "path",
  clip_model: "path-or-id",
  prompts_file: "path",
  instance_images: "path",
  "runs[]": "path",
  "images[].path": "path",
  "generate.model": "path-or-id",
  "generate.variants[].loras[].path": "path",
};

/** A copy of a raw training config read from `file` with its relative paths resolved against the file's folder. */
export function resolveConfigPaths(raw: Record<string, unknown>, file: string): Record<string, unknown> {
  const base = dirname(resolve(file));
  const out = structuredClone(raw);
  rewrite(out, TOP, base);
  rewrite(out, STAGE, base);
  if (Array.isArray(out.stages)) {
    for (const stage of out.stages) if (isObject(stage)) rewrite(stage, STAGE, base);
  }
  return out;
}

/** The same for an evaluation config read from `file`. */
export function resolveEvalConfigPaths(raw: Record<string, unknown>, file: string): Record<string, unknown> {
  const out = structuredClone(raw);
  rewrite(out, EVAL, dirname(resolve(file)));
  return out;
}

/** How one value of a key of `kind` reads from a config in folder `base`. */
export function resolveConfigPath(value: string, kind: Kind, base: string): string {
  if (value === "" || isAbsolute(value) || value === "~" || value.startsWith("~/")) return value;
  const full = resolve(base, value);
  if (kind === "path") return full;
  const pathLike = /^\.{1,2}([/\\]|$)/.test(value) || value.includes("\\") || value.split("/").length > 2;
  return pathLike || existsSync(full) ? full : value;
}

function rewrite(node: Record<string, unknown>, keys: Record<string, Kind>, base: string): void {
  for (const [path, kind] of Object.entries(keys)) rewriteAt(node, path.split("."), kind, base);
}

/** `value` with the string at `parts` (a "key[]" part: each item of that array) resolved. */
function rewriteAt(value: unknown, parts: string[], kind: Kind, base: string): unknown {
  if (parts.length === 0) return typeof value === "string" ? resolveConfigPath(value, kind, base) : value;
  if (!isObject(value)) return value;
  const [head, ...rest] = parts as [string, ...string[]];
  const key = head.endsWith("[]") ? head.slice(0, -2) : head;
  const child = value[key];
  if (head.endsWith("[]")) {
    if (Array.isArray(child)) value[key] = child.map((item: unknown) => rewriteAt(item, rest, kind, base));
  } else if (child !== undefined) {
    value[key] = rewriteAt(child, rest, kind, base);
  }
  return value;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}
