// The small files of a diffusers folder that weights do not determine (configs, tokenizer and
// scheduler settings), and their standard values for a single-file checkpoint:
//  - a file sdtune writes carries the folder's own files in its metadata ("sdtune.diffusers_files"),
//    so converting back gives the same folder;
//  - `config` names a folder to take them from (like diffusers' from_single_file(config=...));
//  - otherwise they are the family's standard files, shipped in data/single_file (the CLIP BPE
//    vocabulary and merges are openai/CLIP's; the scheduler is Stable Diffusion's PNDM setup).
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

/** The metadata key holding a folder's side files (JSON: relative path -> text). */
export const SIDE_FILES_KEY = "sdtune.diffusers_files";

/** data/single_file of the package (src/models/single_file and dist/models/single_file are three levels down). */
export const DATA_DIR = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "..", "data", "single_file");

const COMPONENTS = ["unet", "vae", "text_encoder", "tokenizer", "scheduler"] as const;
const WEIGHTS = /\.(safetensors|bin|ckpt|pt|pth|msgpack|h5|onnx)$|\.index(\.[^.]+)?\.json$/;
/** Larger side files are not carried; tokenizer.json is not either (vocab.json + merges.txt say the same). */
const MAX_SIDE_FILE = 4 * 1024 * 1024;

export type SideFiles = Map<string, string>;

/**
 * model_index.json and the non-weight files of each component of `dir` ("unet/config.json", ...).
 * vocab.json and merges.txt are left out when they equal the shipped CLIP files.
 */
export function readSideFiles(dir: string): SideFiles {
  const files: SideFiles = new Map();
  const add = (rel: string): void => {
    const path = join(dir, rel);
    if (rel === "tokenizer/tokenizer.json" || !existsSync(path) || statSync(path).size > MAX_SIDE_FILE) return;
    const text = readFileSync(path, "utf8");
    if ((rel === "tokenizer/vocab.json" || rel === "tokenizer/merges.txt") && text === shipped(rel.slice(10))) return;
    files.set(rel, text);
  };
  add("model_index.json");
  for (const component of COMPONENTS) {
    const sub = join(dir, component);
    if (!existsSync(sub) || !statSync(sub).isDirectory()) continue;
    for (const entry of readdirSync(sub).sort()) {
      if (!WEIGHTS.test(entry) && statSync(join(sub, entry)).isFile()) add(`${component}/${entry}`);
    }
  }
  return files;
}

/** The side files a single file carries, or undefined. Throws naming the file when they are not valid. */
export function sideFilesFromMetadata(metadata: Record<string, string>, file: string): SideFiles | undefined {
  const raw = metadata[SIDE_FILES_KEY];
  if (raw === undefined) return undefined;
  let value: unknown;
  try {
    value = JSON.parse(raw);
  } catch (error) {
    throw new Error(`${file}: metadata "${SIDE_FILES_KEY}" is not valid JSON (${(error as Error).message})`);
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new Error(`${file}: metadata "${SIDE_FILES_KEY}" must be an object of file texts`);
  }
  const files: SideFiles = new Map();
  for (const [rel, text] of Object.entries(value as Record<string, unknown>)) {
    const safe = /^(model_index\.json|(unet|vae|text_encoder|tokenizer|scheduler)\/[\w.-]+)$/.test(rel);
    if (!safe || typeof rel !== "string" || typeof text !== "string" || rel.includes("..")) {
      throw new Error(`${file}: metadata "${SIDE_FILES_KEY}" holds an unexpected entry "${rel}"`);
    }
    files.set(rel, text);
  }
  return files;
}

/** A shipped standard file (data/single_file/<name>). */
export function shipped(name: string): string {
  return readFileSync(join(DATA_DIR, name), "utf8");
}

/** diffusers' JSON layout: sorted keys, two-space indent, trailing newline. */
export function configText(value: Record<string, unknown>): string {
  const sorted = Object.fromEntries(Object.entries(value).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
  return `${JSON.stringify(sorted, null, 2)}\n`;
}

/** The standard side files of a family: tokenizer and scheduler, with `prediction_type` set. */
export function standardSideFiles(family: "sd1" | "sd2"): SideFiles {
  return new Map([
    ["tokenizer/vocab.json", shipped("vocab.json")],
    ["tokenizer/merges.txt", shipped("merges.txt")],
    ["tokenizer/tokenizer_config.json", shipped(`${family}/tokenizer_config.json`)],
    ["tokenizer/special_tokens_map.json", shipped(`${family}/special_tokens_map.json`)],
    ["scheduler/scheduler_config.json", shipped("scheduler_config.json")],
  ]);
}
