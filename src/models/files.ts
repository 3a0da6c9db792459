// Finding a component's weight files in a diffusers / transformers folder:
// safetensors only (optionally a variant such as fp16, optionally sharded), with
// a clear refusal of pickled checkpoints.
import { existsSync, readdirSync, readFileSync, realpathSync } from "node:fs";
import { basename, dirname, join, sep } from "node:path";

import { CONVERT_FILE, CONVERT_MODEL, PICKLE, pickleFiles, pickleRefusal } from "../io/pickle.js";

export interface WeightFileOptions {
  /** e.g. "fp16": prefer diffusion_pytorch_model.fp16.safetensors. */
  variant?: string;
  /** Told when the folder has no weights of `variant` and its plain weights are used instead. */
  onWarning?: (message: string) => void;
}

/** The weight file stems of diffusers (diffusion_pytorch_model) and transformers (model) folders. */
export const WEIGHT_STEMS = ["diffusion_pytorch_model", "model"] as const;

/**
 * The file names that hold `stem`'s weights for `variant`, in order of preference: the single
 * file `<stem>[.<variant>].safetensors`, then a shard index. diffusers and transformers name a
 * variant's index `<stem>.safetensors.index.<variant>.json`; older diffusers wrote
 * `<stem>.<variant>.safetensors.index.json`, which is accepted too. (src/hub/plan.ts downloads
 * by the same names.)
 */
export function weightFileNames(stem: string, variant: string | undefined): string[] {
  if (!variant) return [`${stem}.safetensors`, `${stem}.safetensors.index.json`];
  return [
    `${stem}.${variant}.safetensors`,
    `${stem}.safetensors.index.${variant}.json`,
    `${stem}.${variant}.safetensors.index.json`,
  ];
}

/** The first weights file (or shard index) present among `names`, over the usual stems. */
export function findWeightFile(names: ReadonlySet<string>, variant: string | undefined): string | undefined {
  for (const stem of WEIGHT_STEMS) {
    const found = weightFileNames(stem, variant).find((name) => names.has(name));
    if (found) return found;
  }
  return undefined;
}

/**
 * The safetensors files holding a component's weights, in load order: a single file, or
 * the shards a `.index[.<variant>].json` names. With a variant the folder lacks, its plain
 * weights are used (as diffusers' from_pretrained does per component) and `onWarning` is
 * told. Pickled checkpoints are refused. Throws an Error naming the folder otherwise.
 */
export function resolveWeightFiles(dir: string, options: WeightFileOptions = {}): string[] {
  if (!existsSync(dir)) throw new Error(`${dir}: folder not found`);
  const entries = new Set(readdirSync(dir));
  const { variant } = options;
  let found = findWeightFile(entries, variant);
  if (!found && variant) {
    found = findWeightFile(entries, undefined);
    if (found) {
      options.onWarning?.(
        `${dir}: no "${variant}" variant weights (e.g. ${weightFileNames(WEIGHT_STEMS[0], variant)[0]}); ` +
          `using ${found} instead, as diffusers does`,
      );
    }
  }
  if (found) {
    const files = found.endsWith(".json") ? shardsFromIndex(modelFile(join(dir, found))) : [join(dir, found)];
    return files.map(modelFile);
  }
  const pickles = pickleFiles(entries);
  if (pickles.length) {
    throw new Error(
      pickleRefusal(
        `${dir}: only pickled weights found (${pickles.join(", ")})`,
        `Convert once with Python: ${CONVERT_MODEL} (or ${CONVERT_FILE} for a single file).`,
      ),
    );
  }
  throw new Error(`${dir}: no weights found (expected diffusion_pytorch_model.safetensors or model.safetensors)`);
}

/**
 * `path` (a file of a model component folder), refused when it is a link whose target lies outside
 * the model: the pipeline folder (the component's parent holding model_index.json) or the
 * component folder itself, and for a Hugging Face cache snapshot its repository's cache folder
 * (snapshot files link into its blobs/). A downloaded model cannot make sdtune read other files.
 */
export function modelFile(path: string): string {
  if (!existsSync(path)) return path;
  const target = realpathSync(path);
  const component = realpathSync(dirname(path));
  const pipeline = dirname(component);
  const roots = [existsSync(join(pipeline, "model_index.json")) ? pipeline : component];
  const hub = /^(.*[\\/]models--[^\\/]+)[\\/]snapshots[\\/]/.exec(component);
  if (hub) roots.push(hub[1]!);
  if (roots.some((root) => target === root || target.startsWith(root + sep))) return path;
  throw new Error(
    `${path}: a link to ${target}, outside the model folder ${roots[0]}; links out of a model folder are not ` +
      "followed (copy the file into the folder instead)",
  );
}

function shardsFromIndex(indexPath: string): string[] {
  let index: { weight_map?: Record<string, string> };
  try {
    index = JSON.parse(readFileSync(indexPath, "utf8")) as typeof index;
  } catch (error) {
    throw new Error(`${indexPath}: not valid JSON (${(error as Error).message})`);
  }
  if (!index.weight_map || typeof index.weight_map !== "object") {
    throw new Error(`${indexPath}: missing "weight_map"`);
  }
  const dir = join(indexPath, "..");
  const shards = [...new Set(Object.values(index.weight_map))].sort();
  for (const shard of shards) {
    if (basename(shard) !== shard || PICKLE.test(shard)) {
      throw new Error(`${indexPath}: shard "${shard}" must be a safetensors file in the same folder`);
    }
    if (!existsSync(join(dir, shard))) throw new Error(`${indexPath}: shard ${shard} is missing`);
  }
  return shards.map((s) => join(dir, s));
}

/** Reads and parses a JSON file, with errors that name it. */
export function readJsonFile(path: string): unknown {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    throw new Error(code === "ENOENT" ? `${path}: file not found` : `${path}: ${(error as Error).message}`);
  }
  // Config files nest a few levels; a deeper one would overflow the stack of whatever walks it.
  if (jsonDepth(text) > MAX_JSON_DEPTH) {
    throw new Error(`${path}: nested more than ${MAX_JSON_DEPTH} levels deep; not a model or adapter config`);
  }
  try {
    return JSON.parse(text);
  } catch (error) {
    throw new Error(`${path}: not valid JSON (${(error as Error).message})`);
  }
}

const MAX_JSON_DEPTH = 64;

/** The deepest nesting of [ and { in JSON text (outside strings), in one pass. */
function jsonDepth(text: string): number {
  let depth = 0;
  let deepest = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === 0x5c)
        i++; // backslash: skip the escaped character
      else if (c === 0x22) inString = false;
    } else if (c === 0x22) inString = true;
    else if (c === 0x5b || c === 0x7b) deepest = Math.max(deepest, ++depth);
    else if (c === 0x5d || c === 0x7d) depth--;
  }
  return deepest;
}
