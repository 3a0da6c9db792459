// Mode B: generate every (variant, prompt, seed) image with the Stable Diffusion pipeline,
// with the same seeds for every variant, into <output>/images/<variant>/ (PNGs carrying
// their A1111 parameters, and a metadata.jsonl so the folder also scores as mode A input).
//
// Identical seeds make the variants comparable image for image: each image has its own
// generator seeded with its seed (src/pipeline), and the base model is the same models
// with every adapter switched off, so "base" in a run with LoRA variants is byte for byte
// the image a base-only run makes (and a LoRA at scale 0 too).
//
// Resuming: each PNG also carries an "sdtune-eval" text chunk, the JSON of everything that
// decides its pixels (model, prompt, seed, sampler, size, dtype, LoRA names, scales and
// content hashes). A rerun keeps every PNG whose chunk matches and generates the rest; the
// pipeline is only loaded when some image is missing.
import { createHash } from "node:crypto";
import { readFile, stat } from "node:fs/promises";
import { join, posix } from "node:path";

import { ConfigError } from "../config/errors.js";
import { compareStrings, walkFiles } from "../data/files.js";
import { writeFileAtomic } from "../io/atomic.js";
import { sha256File } from "../io/hash.js";
import { addPngText, readPngText } from "../io/png.js";
import type { ProgressEvent } from "../native/index.js";
import { loadPipeline } from "../pipeline/load.js";
import type { StableDiffusionPipeline } from "../pipeline/pipeline.js";
import { resolveSamplerName } from "../config/samplers.js";
import type { GenerateConfig } from "../config/eval.js";
import type { EvalImage } from "./images.js";

/** What mode B uses of a pipeline (a StableDiffusionPipeline; any object with these members works). */
export type EvalPipeline = Pick<
  StableDiffusionPipeline,
  "generate" | "loadLora" | "setAdapters" | "unloadLora" | "loras" | "unet"
>;

export interface LoraSpec {
  path: string;
  scale: number;
  /** The adapter name (PNG parameters write it as <lora:name:scale>). */
  name: string;
}

export interface VariantPlan {
  name: string;
  /** Active together at their scales; [] is the base model. */
  loras: LoraSpec[];
}

export interface GeneratedVariant {
  name: string;
  /** The folder holding its images and metadata.jsonl. */
  dir: string;
  /** "base model" or "lora-a@0.8 + lora-b@1". */
  source: string;
  /** Prompt-major, seeds in config order. */
  images: EvalImage[];
}

export interface GenerateVariantsOptions {
  /**
   * A loaded pipeline to generate with (e.g. one a trainer already holds). It stays loaded:
   * LoRAs loaded here are unloaded again and its active adapters restored. Default: the
   * pipeline is loaded from config.model (when an image is missing) and disposed at the end.
   */
  pipeline?: EvalPipeline;
  /** Where a pipeline loaded here runs: generate.device, else this (evaluate passes the eval's device). */
  device?: string;
  signal?: AbortSignal;
  /** phase "generate": one event per image (kept or generated); step/total count the variant's images. */
  onProgress?: (event: ProgressEvent) => void;
  /** Notices (e.g. a prompt longer than the text encoder takes), each once. Default: process.emitWarning. */
  onWarning?: (message: string) => void;
}

/** The PNG text chunk that records what decided an image's pixels. */
export const EVAL_KEY_CHUNK = "sdtune-eval";

/** Variants in order: "base" (unless include_base is false), then the configured ones. */
export function variantPlan(config: GenerateConfig): VariantPlan[] {
  const plan: VariantPlan[] = [];
  if (config.include_base) plan.push({ name: config.base_name, loras: [] });
  for (const v of config.variants) {
    plan.push({
      name: v.name,
      loras: v.loras.map((l, i) => ({ path: l.path, scale: l.scale, name: l.name ?? `${v.name}-${i + 1}` })),
    });
  }
  const paths = new Map<string, string>();
  for (const l of plan.flatMap((v) => v.loras)) {
    const known = paths.get(l.name);
    if (known !== undefined && known !== l.path) {
      throw new ConfigError(
        `generate.variants: two LoRAs are named "${l.name}" (${known}, ${l.path}); give them distinct names`,
      );
    }
    paths.set(l.name, l.path);
  }
  return plan;
}

/**
 * Generates (or keeps, when already there with the same parameters) every image of every
 * variant with identical seeds, and writes each variant's metadata.jsonl.
 */
export async function generateVariants(
  config: GenerateConfig,
  outputDir: string,
  options: GenerateVariantsOptions = {},
): Promise<GeneratedVariant[]> {
  const { signal, onProgress } = options;
  const plan = variantPlan(config);
  if (config.sampler !== undefined) {
    try {
      resolveSamplerName(config.sampler);
    } catch (error) {
      throw new ConfigError(
        `generate.sampler: ${(error as Error).message} (leave it out for the model's own scheduler)`,
      );
    }
  }
  const prompts = [...new Set(config.prompts)];
  // What the images will be made with: the given pipeline's, else what loadPipeline gets.
  const given = options.pipeline;
  const dtype = given ? given.unet.dtype : (config.dtype ?? "float32");
  const device = given ? given.unet.device : (config.device ?? options.device ?? "cpu");
  const hashes = await fingerprintLoras(plan, signal);
  const warned = new Set<string>();
  const onWarning = (message: string): void => {
    if (warned.has(message)) return;
    warned.add(message);
    (options.onWarning ?? ((m: string) => process.emitWarning(m, { code: "SDTUNE_WARNING" })))(message);
  };

  let session: PipelineSession | undefined;
  const open = async (): Promise<PipelineSession> => {
    if (session) return session;
    if (given) return (session = new PipelineSession(given));
    const pipeline = await loadPipeline(config.model, {
      dtype,
      device,
      ...(config.variant ? { variant: config.variant } : {}),
      ...(signal ? { signal } : {}),
      onWarning,
    });
    return (session = new PipelineSession(pipeline, () => pipeline.dispose()));
  };

  const total = prompts.length * config.seeds.length; // per variant
  const out: GeneratedVariant[] = [];
  let failed = false;
  try {
    for (const [v, variant] of plan.entries()) {
      const dir = join(outputDir, "images", variant.name);
      const images: EvalImage[] = [];
      let active = false;
      for (const [p, prompt] of prompts.entries()) {
        for (const seed of config.seeds) {
          signal?.throwIfAborted();
          const file = `p${String(p).padStart(3, "0")}-s${seed}.png`;
          const path = join(dir, file);
          const key = imageKey(config, prompt, seed, { dtype, device }, variant, hashes);
          if (!(await hasKey(path, key))) {
            const s = await open();
            if (!active) {
              await s.activate(plan, v, signal);
              active = true;
            }
            const result = await s.pipeline.generate({
              prompt,
              negativePrompt: config.negative_prompt,
              ...(config.width !== undefined ? { width: config.width } : {}),
              ...(config.height !== undefined ? { height: config.height } : {}),
              steps: config.steps,
              guidanceScale: config.guidance_scale,
              ...(config.sampler !== undefined ? { scheduler: config.sampler } : {}),
              seed,
              ...(signal ? { signal } : {}),
              onWarning,
            });
            const png = result.images[0]?.png;
            if (!png) throw new Error(`the pipeline returned no PNG for "${prompt}" seed ${seed}`);
            await writeFileAtomic(path, addPngText(png, { [EVAL_KEY_CHUNK]: key }));
          }
          images.push({ file, path, prompt, seed, promptSource: "metadata" });
          onProgress?.({ phase: "generate", step: images.length, total, variant: variant.name });
        }
      }
      const rows = images.map((i) => JSON.stringify({ file_name: i.file, prompt: i.prompt, seed: i.seed }));
      await writeFileAtomic(join(dir, "metadata.jsonl"), `${rows.join("\n")}\n`);
      const source = variant.loras.length ? variant.loras.map((l) => `${l.name}@${l.scale}`).join(" + ") : "base model";
      out.push({ name: variant.name, dir, source, images });
    }
  } catch (error) {
    failed = true;
    throw error;
  } finally {
    await session?.close(failed);
  }
  return out;
}

/**
 * One pipeline for the whole run: LoRAs load on first use (each once) and are unloaded
 * after the last variant that uses them, so memory stays flat over many variants.
 */
class PipelineSession {
  private readonly loaded = new Set<string>();
  private readonly before: [string, number][];

  /** dispose: set when the pipeline was loaded here (it is disposed at the end). */
  constructor(
    readonly pipeline: EvalPipeline,
    private readonly dispose?: () => void,
  ) {
    this.before = Object.entries(pipeline.loras);
  }

  /** Exactly variant `index`'s LoRAs active, at its scales. */
  async activate(plan: readonly VariantPlan[], index: number, signal: AbortSignal | undefined): Promise<void> {
    const wanted = new Set(plan[index]!.loras.map((l) => l.name));
    const laterUse = new Set(plan.slice(index).flatMap((v) => v.loras.map((l) => l.name)));
    for (const name of [...this.loaded]) {
      if (!wanted.has(name) && !laterUse.has(name)) await this.unload(name);
    }
    for (const l of plan[index]!.loras) {
      if (this.loaded.has(l.name)) continue;
      await this.pipeline.loadLora(l.path, { name: l.name, scale: l.scale, ...(signal ? { signal } : {}) });
      this.loaded.add(l.name);
    }
    const loras = plan[index]!.loras;
    await this.pipeline.setAdapters(
      loras.map((l) => l.name),
      loras.map((l) => l.scale),
    );
  }

  /** Disposes a pipeline loaded here; gives a caller's back as it came. */
  async close(failed: boolean): Promise<void> {
    if (this.dispose) {
      this.dispose();
      return;
    }
    try {
      for (const name of [...this.loaded]) await this.unload(name);
      await this.pipeline.setAdapters(
        this.before.map(([n]) => n),
        this.before.map(([, s]) => s),
      );
    } catch (error) {
      if (!failed) throw error; // the first error is the one to report
    }
  }

  private async unload(name: string): Promise<void> {
    await this.pipeline.unloadLora(name);
    this.loaded.delete(name);
  }
}

/** The EVAL_KEY_CHUNK text: everything that decides an image's pixels (and its parameters). */
function imageKey(
  config: GenerateConfig,
  prompt: string,
  seed: number,
  placement: { dtype: string; device: string },
  variant: VariantPlan,
  hashes: Map<string, string>,
): string {
  return JSON.stringify({
    model: config.model,
    prompt,
    negative_prompt: config.negative_prompt,
    seed,
    steps: config.steps,
    sampler: config.sampler ?? null,
    guidance_scale: config.guidance_scale,
    width: config.width ?? null,
    height: config.height ?? null,
    ...placement,
    loras: variant.loras.map((l) => ({ name: l.name, scale: l.scale, sha256: hashes.get(l.path)! })),
  });
}

/** True when `path` is a PNG whose key chunk equals `key`. */
async function hasKey(path: string, key: string): Promise<boolean> {
  let png: Buffer;
  try {
    png = await readFile(path);
  } catch {
    return false;
  }
  try {
    return readPngText(png)[EVAL_KEY_CHUNK] === key;
  } catch {
    return false; // not a PNG (a torn file cannot be: writes are atomic): generate it again
  }
}

/** sha256 of each LoRA's content (a folder: of its files' names and contents), by path. */
async function fingerprintLoras(plan: readonly VariantPlan[], signal?: AbortSignal): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  for (const { path } of plan.flatMap((v) => v.loras)) {
    if (out.has(path)) continue;
    let info;
    try {
      info = await stat(path);
    } catch {
      throw new ConfigError(`generate.variants: LoRA ${path} does not exist`);
    }
    if (info.isFile()) {
      out.set(path, await sha256File(path));
      continue;
    }
    const files = (await walkFiles(path, signal)).sort(compareStrings);
    const hash = createHash("sha256");
    for (const f of files) hash.update(`${posix.normalize(f)}\0${await sha256File(join(path, f))}\n`);
    out.set(path, hash.digest("hex"));
  }
  return out;
}
