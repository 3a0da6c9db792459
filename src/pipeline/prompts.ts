// Prompts files as kohya sd-scripts reads them for sample images (train_util's
// line_to_prompt_dict / load_prompts): one prompt per line, with per-prompt flags after
// " --": --n negative prompt, --w width, --h height, --s steps, --d seed, --l guidance scale,
// --ss sampler. Lines that are empty or start with "#" are skipped. A .json file holds a
// list of such lines, or of objects with kohya's keys (prompt, negative_prompt, width,
// height, sample_steps, seed, scale, sample_sampler).
import { readFile } from "node:fs/promises";

import { resolveSamplerName } from "../config/samplers.js";
import type { GenerateOptions } from "./options.js";

/** One prompt and the settings its flags give (unset: the run's). */
export interface PromptSpec {
  prompt: string;
  negativePrompt?: string;
  width?: number;
  height?: number;
  steps?: number;
  seed?: number;
  guidanceScale?: number;
  /** As written (any spelling resolveSamplerName takes). */
  sampler?: string;
}

type Flag = { key: Exclude<keyof PromptSpec, "prompt">; kind: "text" | "int" | "number" | "sampler" };
const FLAGS: Readonly<Record<string, Flag>> = {
  n: { key: "negativePrompt", kind: "text" },
  w: { key: "width", kind: "int" },
  h: { key: "height", kind: "int" },
  s: { key: "steps", kind: "int" },
  d: { key: "seed", kind: "int" },
  l: { key: "guidanceScale", kind: "number" },
  ss: { key: "sampler", kind: "sampler" },
};
const FLAG_LIST = "--n (negative prompt), --w, --h, --s (steps), --d (seed), --l (guidance scale), --ss (sampler)";

/** A prompt line with kohya's flags; `where` ("prompts.txt:3") names it in errors. */
export function parsePromptLine(line: string, where = "prompt"): PromptSpec {
  const [text, ...flags] = line.split(" --");
  const spec: PromptSpec = { prompt: text!.trim() };
  for (const raw of flags) {
    const m = /^(\S+)\s*(.*)$/s.exec(raw.trim());
    const flag = m ? FLAGS[m[1]!.toLowerCase()] : undefined;
    if (!m || !flag) {
      throw new Error(`${where}: unknown flag "--${raw.trim().split(/\s/)[0]}"; a prompt line takes ${FLAG_LIST}`);
    }
    setFlag(spec, flag, m[2]!.trim(), `${where}: --${m[1]}`);
  }
  return spec;
}

function setFlag(spec: PromptSpec, flag: Flag, value: string, where: string): void {
  if (flag.kind === "text") {
    (spec as unknown as Record<string, string>)[flag.key] = value;
    return;
  }
  if (flag.kind === "sampler") {
    resolveSamplerName(value); // refuses an unknown name here, with the file and line
    spec.sampler = value;
    return;
  }
  const n = Number(value);
  const ok =
    value !== "" && Number.isFinite(n) && (flag.kind === "number" ? n >= 0 : Number.isSafeInteger(n) && n >= 0);
  if (!ok)
    throw new Error(`${where} expects a non-negative ${flag.kind === "int" ? "integer" : "number"} (got "${value}")`);
  if ((flag.key === "steps" || flag.key === "width" || flag.key === "height") && n < 1) {
    throw new Error(`${where} must be at least 1 (got ${n})`);
  }
  (spec as unknown as Record<string, number>)[flag.key] = n;
}

/** kohya's JSON keys -> ours. */
const JSON_KEYS: Readonly<Record<string, keyof PromptSpec>> = {
  prompt: "prompt",
  negative_prompt: "negativePrompt",
  width: "width",
  height: "height",
  sample_steps: "steps",
  seed: "seed",
  scale: "guidanceScale",
  sample_sampler: "sampler",
};

/** Reads a prompts file (see the top of this file); errors name the file and line. */
export async function readPromptSpecs(path: string): Promise<PromptSpec[]> {
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(await readFile(path));
  } catch (error) {
    throw new Error(`prompts file ${path}: ${(error as Error).message}`);
  }
  text = text.replace(/^\uFEFF/, "");
  if (path.toLowerCase().endsWith(".json")) return promptsFromJson(text, path);
  const specs = text
    .split(/\r?\n/)
    .map((line, i) => ({ line: line.trim(), where: `${path}:${i + 1}` }))
    .filter(({ line }) => line !== "" && !line.startsWith("#"))
    .map(({ line, where }) => parsePromptLine(line, where));
  if (specs.length === 0) throw new Error(`prompts file ${path} holds no prompts`);
  return specs;
}

function promptsFromJson(text: string, path: string): PromptSpec[] {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    throw new Error(`prompts file ${path}: not valid JSON (${(error as Error).message})`);
  }
  if (!Array.isArray(value) || value.length === 0) {
    throw new Error(
      `prompts file ${path}: expected a non-empty JSON list of prompts (strings or kohya prompt objects)`,
    );
  }
  return value.map((item: unknown, i) => {
    const where = `${path}[${i}]`;
    if (typeof item === "string") return parsePromptLine(item, where);
    if (!item || typeof item !== "object" || Array.isArray(item)) {
      throw new Error(`${where}: expected a string or an object with "prompt"`);
    }
    const entries = Object.entries(item as Record<string, unknown>);
    if (typeof (item as { prompt?: unknown }).prompt !== "string")
      throw new Error(`${where}: "prompt" must be a string`);
    const spec: PromptSpec = { prompt: "" };
    for (const [key, v] of entries) {
      const ours = JSON_KEYS[key];
      if (!ours) throw new Error(`${where}: unknown key "${key}" (known: ${Object.keys(JSON_KEYS).join(", ")})`);
      if (ours === "prompt") spec.prompt = String(v);
      else setFlag(spec, FLAGS[flagOf(ours)]!, String(v), `${where}.${key}`);
    }
    return spec;
  });
}

const flagOf = (key: keyof PromptSpec): string => Object.entries(FLAGS).find(([, f]) => f.key === key)![0];

/**
 * generate() calls for prompt specs on top of `base` options: consecutive prompts with the same
 * settings share a call, so images keep the file's order. A prompt's --d seed is its first
 * image's seed; otherwise image i over the whole file uses base.seed + i (as one call would).
 */
export function promptBatches(specs: readonly PromptSpec[], base: GenerateOptions): GenerateOptions[] {
  const perPrompt = base.numImages ?? 1;
  const baseSeed = typeof base.seed === "number" ? base.seed : undefined;
  const batches: { key: string; options: GenerateOptions; prompts: string[]; seeds: number[] | undefined }[] = [];
  specs.forEach((spec, p) => {
    const settings = {
      negativePrompt: spec.negativePrompt ?? base.negativePrompt,
      width: spec.width ?? base.width,
      height: spec.height ?? base.height,
      steps: spec.steps ?? base.steps,
      guidanceScale: spec.guidanceScale ?? base.guidanceScale,
      scheduler: spec.sampler ?? base.scheduler,
    };
    const first = spec.seed ?? (baseSeed !== undefined ? baseSeed + p * perPrompt : undefined);
    const seeds = first === undefined ? undefined : Array.from({ length: perPrompt }, (_, i) => first + i);
    const key = JSON.stringify(settings);
    const last = batches.at(-1);
    if (last && last.key === key && (last.seeds === undefined) === (seeds === undefined)) {
      last.prompts.push(spec.prompt);
      if (seeds) last.seeds!.push(...seeds);
      return;
    }
    batches.push({ key, options: { ...base, ...settings }, prompts: [spec.prompt], seeds });
  });
  return batches.map((b) => ({
    ...b.options,
    prompt: b.prompts,
    ...(b.seeds ? { seed: b.seeds } : { seed: undefined }),
  }));
}
