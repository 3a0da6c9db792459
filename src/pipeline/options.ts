// generate() options: types, defaults, and validation with errors that name the value
// and say what is valid. Everything here runs before any native work starts.
import { randomInt } from "node:crypto";

import type { ProgressEvent, SamplerName, Tensor } from "../native/index.js";
import { resolveSamplerName } from "../config/samplers.js";
import type { SchedulerOverrides } from "../sched/config.js";

export interface GenerateOptions {
  /** One prompt, or several (each makes numImages images). An empty string is a valid (unconditional) prompt. */
  prompt: string | string[];
  /** One negative prompt for every prompt, or one per prompt. Default "" (as diffusers). Unused without CFG. */
  negativePrompt?: string | string[];
  /** Pixels, multiples of 8. Default: the UNet's sample_size times the VAE's scale factor (512 for SD 1.5). */
  width?: number;
  height?: number;
  /** Inference steps (default 50, as diffusers). */
  steps?: number;
  /** Classifier-free guidance scale (default 7.5); <= 1 turns CFG off (one UNet row per image). */
  guidanceScale?: number;
  /** diffusers' guidance_rescale (0..1, default 0). */
  guidanceRescale?: number;
  /**
   * Sampler: one of samplerNames(), or as AUTOMATIC1111, ComfyUI, kohya or diffusers spell it
   * ("DPM++ 2M Karras", "Euler a", "euler_a", "EulerDiscreteScheduler"; src/sched/aliases.ts).
   * Other strings are refused with the list. Default: the model's scheduler class.
   */
  scheduler?: SamplerName | (string & {});
  /** With `scheduler`: A1111's "Schedule type" / ComfyUI's scheduler, "karras" or "normal" (default). */
  scheduleType?: string;
  /** Overrides of the scheduler config, e.g. { eta: 0.5 } for DDIM, { use_karras_sigmas: true }. */
  schedulerOptions?: SchedulerOverrides;
  /**
   * A number: image i (over all prompts, prompt-major) uses seed + i. A list: one seed per image.
   * Default: a random base seed (reported per image).
   */
  seed?: number | number[];
  /** Images per prompt (default 1). */
  numImages?: number;
  /**
   * Images denoised together (default 1). Each image has its own generator, so its seed alone
   * decides it; larger batches are faster on a GPU and may differ in the last bits.
   */
  batchSize?: number;
  /** Initial latents [images, unet in_channels, height / f, width / f] (before init_noise_sigma). */
  latents?: Tensor;
  /** diffusers' clip_skip: 1 = the penultimate text-encoder layer (AUTOMATIC1111's "Clip skip: 2"). */
  clipSkip?: number;
  /**
   * "png" (default): PNG bytes with a "parameters" text chunk; "tensor": float32 [N, H, W, 3] in
   * [0, 1] (diffusers' output_type="np"); "latent": the final latents only.
   */
  outputType?: "png" | "tensor" | "latent";
  /** Also return the final latents. */
  returnLatents?: boolean;
  /** VAE decode in tiles: true, false, or "auto" (default: tiles when the latents exceed 4 tiles' area). */
  vaeTiling?: boolean | "auto";
  /** Tile edge in latent pixels (default: the VAE's sample_size / scale factor, 64 for SD 1.5). */
  vaeTileSize?: number;
  /** Per sampler step ("denoise", step/total over all batches, timestep) and per decoded image ("decode"). */
  onProgress?: (event: ProgressEvent) => void;
  /** Stops between steps / images; the promise rejects with an AbortError and nothing is kept. */
  signal?: AbortSignal;
  /** Prompt truncation and similar notices (also in result.warnings). Default: process.emitWarning. */
  onWarning?: (message: string) => void;
}

/** What the model fixes about a generation (from the loaded components). */
export interface ModelFacts {
  /** VAE spatial factor (8 for SD). */
  scaleFactor: number;
  latentChannels: number;
  /** Default image size in pixels. */
  defaultWidth: number;
  defaultHeight: number;
  /** Default VAE tile edge (latent pixels). */
  defaultTileSize: number;
  samplers: readonly string[];
  textEncoderLayers: number;
}

/** Options after validation and defaults. */
export interface ResolvedGenerate {
  prompts: string[];
  negativePrompts: string[];
  width: number;
  height: number;
  latentWidth: number;
  latentHeight: number;
  steps: number;
  guidanceScale: number;
  guidanceRescale: number;
  scheduler: SamplerName | undefined;
  schedulerOptions: SchedulerOverrides;
  numImages: number;
  /** Per image (prompt-major): prompt index and seed. */
  imagePrompt: number[];
  seeds: number[];
  batchSize: number;
  clipSkip: number;
  outputType: "png" | "tensor" | "latent";
  tileSize: number;
}

/** Images of a generation must be multiples of this (diffusers checks 8; the VAE needs its factor). */
export function sizeMultiple(scaleFactor: number): number {
  const gcd = (a: number, b: number): number => (b ? gcd(b, a % b) : a);
  return (8 * scaleFactor) / gcd(8, scaleFactor);
}

/** Every side must be a multiple of this whatever the model (diffusers checks 8). */
export const SIZE_MULTIPLE = 8;

/**
 * The checks that need no model: sizes, steps, counts and the sampler name. The one set
 * of these rules: `sdtune generate` runs it before anything loads or downloads, and
 * generate() runs it first (then the checks that need the model's facts).
 */
export function checkGenerateOptions(
  options: Pick<
    GenerateOptions,
    "width" | "height" | "steps" | "numImages" | "batchSize" | "scheduler" | "scheduleType"
  >,
): void {
  if (!options || typeof options !== "object") throw new TypeError("generate: expected an options object");
  if (options.width !== undefined) size(options.width, "width", SIZE_MULTIPLE);
  if (options.height !== undefined) size(options.height, "height", SIZE_MULTIPLE);
  if (options.steps !== undefined) integer(options.steps, "steps", 1);
  if (options.numImages !== undefined) integer(options.numImages, "numImages", 1);
  if (options.batchSize !== undefined) integer(options.batchSize, "batchSize", 1);
  if (options.scheduleType !== undefined && options.scheduler === undefined) {
    throw new RangeError(`generate: scheduleType "${options.scheduleType}" needs a sampler (scheduler)`);
  }
  if (options.scheduler !== undefined) {
    try {
      resolveSamplerName(options.scheduler, options.scheduleType);
    } catch (error) {
      throw new RangeError(`generate: ${(error as Error).message}`);
    }
  }
}

export function resolveGenerateOptions(options: GenerateOptions, facts: ModelFacts): ResolvedGenerate {
  checkGenerateOptions(options);
  const prompts = toPrompts(options.prompt);
  const negativePrompts = toNegatives(options.negativePrompt, prompts.length);
  const multiple = sizeMultiple(facts.scaleFactor);
  const width = size(options.width ?? facts.defaultWidth, "width", multiple);
  const height = size(options.height ?? facts.defaultHeight, "height", multiple);
  const steps = integer(options.steps ?? 50, "steps", 1);
  const guidanceScale = finite(options.guidanceScale ?? 7.5, "guidanceScale");
  const guidanceRescale = finite(options.guidanceRescale ?? 0, "guidanceRescale");
  if (guidanceRescale < 0 || guidanceRescale > 1) {
    throw new RangeError(`generate: guidanceRescale ${guidanceRescale} must be in [0, 1]`);
  }
  const sampler = resolveSampler(options, facts);
  const numImages = integer(options.numImages ?? 1, "numImages", 1);
  const total = prompts.length * numImages;
  const imagePrompt = Array.from({ length: total }, (_, i) => Math.floor(i / numImages));
  const seeds = toSeeds(options.seed, total);
  const batchSize = Math.min(integer(options.batchSize ?? 1, "batchSize", 1), total);
  const clipSkip = integer(options.clipSkip ?? 0, "clipSkip", 0);
  if (clipSkip > facts.textEncoderLayers) {
    throw new RangeError(
      `generate: clipSkip ${clipSkip} must be in [0, ${facts.textEncoderLayers}] (the text encoder's layers)`,
    );
  }
  const outputType = options.outputType ?? "png";
  if (!["png", "tensor", "latent"].includes(outputType)) {
    throw new RangeError(`generate: outputType "${String(outputType)}" must be "png", "tensor" or "latent"`);
  }
  const latentWidth = width / facts.scaleFactor;
  const latentHeight = height / facts.scaleFactor;
  if (options.latents !== undefined) {
    const want = [total, facts.latentChannels, latentHeight, latentWidth];
    const got = options.latents.shape;
    if (got.join(",") !== want.join(",")) {
      throw new TypeError(
        `generate: latents must be [${want.join(", ")}] (images, channels, height / ${facts.scaleFactor}, ` +
          `width / ${facts.scaleFactor}) for ${total} image(s) of ${width}x${height}; got [${got.join(", ")}]`,
      );
    }
  }
  const tileEdge = integer(options.vaeTileSize ?? facts.defaultTileSize, "vaeTileSize", 1);
  const tiling = options.vaeTiling ?? "auto";
  if (tiling !== "auto" && typeof tiling !== "boolean") {
    throw new TypeError(`generate: vaeTiling must be true, false or "auto" (got ${String(tiling)})`);
  }
  const large = latentWidth * latentHeight > 4 * tileEdge * tileEdge;
  const tileSize = tiling === true || (tiling === "auto" && large) ? tileEdge : 0;
  return {
    prompts,
    negativePrompts,
    width,
    height,
    latentWidth,
    latentHeight,
    steps,
    guidanceScale,
    guidanceRescale,
    scheduler: sampler?.sampler,
    // The name's implied settings first, so explicit schedulerOptions win.
    schedulerOptions: { ...sampler?.overrides, ...options.schedulerOptions },
    numImages,
    imagePrompt,
    seeds,
    batchSize,
    clipSkip,
    outputType,
    tileSize,
  };
}

function resolveSampler(
  options: GenerateOptions,
  facts: ModelFacts,
): { sampler: SamplerName; overrides: SchedulerOverrides } | undefined {
  if (options.scheduler === undefined) {
    if (options.scheduleType !== undefined) {
      throw new RangeError(`generate: scheduleType "${options.scheduleType}" needs a sampler (scheduler)`);
    }
    return undefined;
  }
  if (typeof options.scheduler !== "string") {
    throw new TypeError(`generate: scheduler must be a sampler name (got ${typeof options.scheduler})`);
  }
  let resolved;
  try {
    resolved = resolveSamplerName(options.scheduler, options.scheduleType);
  } catch (error) {
    throw new RangeError(`generate: ${(error as Error).message}`);
  }
  if (!facts.samplers.includes(resolved.sampler)) {
    throw new RangeError(
      `generate: sampler "${resolved.sampler}" is not built in; valid: ${facts.samplers.join(", ")}`,
    );
  }
  return resolved;
}

function toPrompts(prompt: unknown): string[] {
  const list = typeof prompt === "string" ? [prompt] : prompt;
  if (!Array.isArray(list)) throw new TypeError("generate: prompt must be a string or a list of strings");
  if (list.length === 0) throw new RangeError("generate: the prompt list is empty; give at least one prompt");
  list.forEach((p, i) => {
    if (typeof p !== "string") throw new TypeError(`generate: prompt ${i} must be a string (got ${typeof p})`);
  });
  return [...(list as string[])];
}

function toNegatives(negative: unknown, count: number): string[] {
  if (negative === undefined) return new Array<string>(count).fill("");
  if (typeof negative === "string") return new Array<string>(count).fill(negative);
  if (!Array.isArray(negative) || negative.some((n) => typeof n !== "string")) {
    throw new TypeError("generate: negativePrompt must be a string or a list of strings");
  }
  if (negative.length !== count) {
    throw new RangeError(
      `generate: ${negative.length} negative prompts for ${count} prompts; give one, or one per prompt`,
    );
  }
  return [...(negative as string[])];
}

function size(value: unknown, name: string, multiple: number): number {
  const v = integer(value, name, 1);
  if (v % multiple !== 0) {
    const below = Math.floor(v / multiple) * multiple;
    const above = below + multiple;
    const nearest = below > 0 ? `${below} or ${above}` : `${above}`;
    throw new RangeError(`generate: ${name} ${v} is not a multiple of ${multiple}; use ${nearest}`);
  }
  return v;
}

function integer(value: unknown, name: string, min: number): number {
  if (typeof value !== "number" || !Number.isSafeInteger(value) || value < min) {
    throw new RangeError(`generate: ${name} must be an integer >= ${min} (got ${String(value)})`);
  }
  return value;
}

function finite(value: unknown, name: string): number {
  if (typeof value !== "number" || !Number.isFinite(value)) {
    throw new RangeError(`generate: ${name} must be a finite number (got ${String(value)})`);
  }
  return value;
}

/** Seeds per image: seed + i, the given list, or a random base + i (below 2^32, as AUTOMATIC1111). */
function toSeeds(seed: unknown, total: number): number[] {
  if (Array.isArray(seed)) {
    if (seed.length !== total) {
      throw new RangeError(`generate: ${seed.length} seeds for ${total} image(s); give one seed, or one per image`);
    }
    seed.forEach((s, i) => checkSeed(s, `seed[${i}]`));
    return [...(seed as number[])];
  }
  const base = seed === undefined ? randomInt(0, 2 ** 32 - total) : checkSeed(seed, "seed");
  if (base + total - 1 > Number.MAX_SAFE_INTEGER)
    throw new RangeError(`generate: seed ${base} + ${total} is too large`);
  return Array.from({ length: total }, (_, i) => base + i);
}

function checkSeed(value: unknown, name: string): number {
  if (typeof value !== "number" || !Number.isSafeInteger(value) || value < 0) {
    throw new RangeError(`generate: ${name} must be a non-negative safe integer (got ${String(value)})`);
  }
  return value;
}
