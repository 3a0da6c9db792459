// Text-to-image: validate (options.ts), tokenize, run the native loop (one call, off the
// JS thread: native/pipeline/generate.cc), then encode PNGs that carry their parameters.
import { createRequire } from "node:module";

import sharp from "sharp";

import { addPngText, formatInfotext } from "../io/png.js";
import type { TextEncoder } from "../models/text_encoder.js";
import type { UNet } from "../models/unet.js";
import type { VAE } from "../models/vae.js";
import { native, type NativeGenerateResult, type SamplerName, type Tensor } from "../native/index.js";
import type { SchedulerConfig } from "../sched/config.js";
import { resolveScheduler, samplerNames, schedulerFrom } from "../sched/scheduler.js";
import { cancelTokenFor, disposeAll, tensorFrom } from "../tensor.js";
import type { ClipTokenizer } from "../text/clip_tokenizer.js";
import { resolveGenerateOptions, type GenerateOptions, type ModelFacts, type ResolvedGenerate } from "./options.js";

export interface PipelineImage {
  /** PNG bytes with a "parameters" text chunk (outputType "png"). */
  png?: Buffer;
  seed: number;
  width: number;
  height: number;
  prompt: string;
  negativePrompt: string;
  /** AUTOMATIC1111's infotext: what the PNG's "parameters" chunk holds. */
  parameters: string;
}

export interface GenerateTimings {
  /** Seconds: prompt encoding, the denoising loop (UNet included), UNet calls alone, VAE decode, PNG encoding, all. */
  textEncoder: number;
  denoise: number;
  unet: number;
  decode: number;
  png: number;
  total: number;
}

export interface GenerateResult {
  /** One per image, prompt-major (prompt 0's images first). */
  images: PipelineImage[];
  /** outputType "tensor": float32 [N, H, W, 3] in [0, 1]. */
  tensor?: Tensor;
  /** outputType "latent" or returnLatents: the final latents [N, C, h, w]. */
  latents?: Tensor;
  sampler: SamplerName;
  timings: GenerateTimings;
  warnings: string[];
}

/** The pieces of a pipeline generate() uses. */
export interface GenerateContext {
  unet: UNet;
  vae: VAE;
  textEncoder: TextEncoder;
  tokenizer: ClipTokenizer;
  schedulerConfig: SchedulerConfig;
  /** Written as "Model" into PNG parameters. */
  name?: string;
  /** Active LoRA adapters (name -> scale), written into PNG parameters. */
  loras?: Record<string, number>;
  /** name -> AutoV3 short hash of its file ("Lora hashes"); adapters without a file have none. */
  loraHashes?: Record<string, string>;
  /** A1111's "Model hash" (10 hex digits); see StableDiffusionPipeline.modelHash(). */
  modelHash?: string;
}

/** For parity tests: the native loop's per-step tensors (native/pipeline/generate.h). */
export interface GenerateDebug {
  capture?: boolean;
  /** Synchronize CUDA around UNet calls so timings.unet is exact (benchmarks). */
  syncTimings?: boolean;
}

export async function generateImages(
  ctx: GenerateContext,
  options: GenerateOptions,
  debug: GenerateDebug = {},
): Promise<GenerateResult & { captured?: Record<string, Tensor> }> {
  const started = performance.now();
  const r = resolveGenerateOptions(options, modelFacts(ctx));
  // Resolved once; built here for the sampler's own checks (unsupported values fail now).
  const resolved = resolveScheduler(r.scheduler, ctx.schedulerConfig, r.schedulerOptions);
  const sampler = resolved.name;
  schedulerFrom(resolved).dispose();
  const samplerLabel = a1111SamplerName(sampler, resolved.effective);

  const warnings: string[] = [];
  const warn = (message: string): void => {
    warnings.push(message);
    (options.onWarning ?? ((m: string) => process.emitWarning(m, { code: "SDTUNE_WARNING" })))(message);
  };
  const cfg = r.guidanceScale > 1;
  const promptIds = tokenize(ctx.tokenizer, r.prompts, "prompt", warn);
  const negativeIds = cfg ? tokenize(ctx.tokenizer, r.negativePrompts, "negative prompt", warn) : undefined;

  let out: NativeGenerateResult;
  try {
    out = await native().pipeline.generate(
      { textEncoder: ctx.textEncoder.handle, unet: ctx.unet.handle, vae: ctx.vae.handle },
      {
        promptIds,
        negativeIds,
        imagePrompt: r.imagePrompt,
        seeds: r.seeds,
        latents: options.latents,
        latentHeight: r.latentHeight,
        latentWidth: r.latentWidth,
        steps: r.steps,
        guidanceScale: r.guidanceScale,
        guidanceRescale: r.guidanceRescale,
        clipSkip: r.clipSkip,
        batchSize: r.batchSize,
        output: r.outputType === "png" ? "uint8" : r.outputType === "tensor" ? "float" : "latent",
        returnLatents: options.returnLatents ?? false,
        tileSize: r.tileSize,
        sampler,
        schedulerParams: resolved.params,
        capture: debug.capture ?? false,
        syncTimings: debug.syncTimings ?? false,
      },
      { onProgress: options.onProgress, cancel: cancelTokenFor(options.signal) },
    );
  } finally {
    disposeAll(promptIds, negativeIds);
  }

  const pngStarted = performance.now();
  const version = packageVersion();
  const images: PipelineImage[] = r.seeds.map((seed, i) => {
    const p = r.imagePrompt[i]!;
    return {
      seed,
      width: r.width,
      height: r.height,
      prompt: r.prompts[p]!,
      negativePrompt: cfg ? r.negativePrompts[p]! : "",
      parameters: formatInfotext({
        prompt: r.prompts[p]!,
        negativePrompt: cfg ? r.negativePrompts[p] : undefined,
        steps: r.steps,
        sampler: samplerLabel,
        guidanceScale: r.guidanceScale,
        seed,
        width: r.width,
        height: r.height,
        model: ctx.name,
        modelHash: ctx.modelHash,
        clipSkip: r.clipSkip > 0 ? r.clipSkip + 1 : undefined, // AUTOMATIC1111 counts the last layer as 1
        loras: ctx.loras && Object.keys(ctx.loras).length ? ctx.loras : undefined,
        loraHashes: activeHashes(ctx),
        version: `sdtune ${version}`,
      }),
    };
  });
  let tensor: Tensor | undefined;
  try {
    if (r.outputType === "png") {
      await encodePngs(out.images!, images, r, options.signal);
    } else if (r.outputType === "tensor") {
      tensor = out.images;
    }
  } catch (error) {
    disposeAll(out.images, out.latents, Object.values(out.captured ?? {}));
    throw error;
  }
  if (r.outputType === "png") out.images!.dispose();
  const finished = performance.now();
  return {
    images,
    tensor,
    latents: out.latents,
    sampler,
    warnings,
    timings: { ...out.timings, png: (finished - pngStarted) / 1000, total: (finished - started) / 1000 },
    ...(out.captured ? { captured: out.captured } : {}),
  };
}

/** The hashes of the active adapters that came from files, in their order. */
function activeHashes(ctx: GenerateContext): Record<string, string> | undefined {
  const entries = Object.keys(ctx.loras ?? {}).flatMap((name): [string, string][] => {
    const hash = ctx.loraHashes?.[name];
    return hash ? [[name, hash]] : [];
  });
  return entries.length ? Object.fromEntries(entries) : undefined;
}

function modelFacts(ctx: GenerateContext): ModelFacts {
  const scaleFactor = ctx.vae.scaleFactor;
  const sample = ctx.unet.config.sample_size ?? 64;
  const [sampleH, sampleW] = Array.isArray(sample) ? sample : [sample, sample];
  const vaeSample = ctx.vae.config.sample_size;
  const vaeEdge = Array.isArray(vaeSample) ? Math.min(...vaeSample) : vaeSample;
  return {
    scaleFactor,
    latentChannels: ctx.unet.config.in_channels,
    defaultWidth: sampleW! * scaleFactor,
    defaultHeight: sampleH! * scaleFactor,
    defaultTileSize: Math.max(1, Math.floor(vaeEdge / scaleFactor)),
    samplers: samplerNames(),
    textEncoderLayers: ctx.textEncoder.config.num_hidden_layers,
  };
}

/** int64 [n, L] ids; warns (as diffusers does) with the part of a prompt that truncation drops. */
function tokenize(tokenizer: ClipTokenizer, texts: string[], what: string, warn: (m: string) => void): Tensor {
  const encoded = tokenizer.encodeIds(texts);
  encoded.truncatedText.forEach((dropped, i) => {
    if (dropped) {
      warn(
        `${what} ${i} is longer than ${tokenizer.maxLength} tokens (${encoded.untruncatedLengths[i]}); ` +
          `CLIP drops the rest: "${dropped}"`,
      );
    }
  });
  const length = encoded.ids[0]!.length;
  const flat = BigInt64Array.from(encoded.ids.flat(), (v) => BigInt(v));
  return tensorFrom(flat, [texts.length, length], "int64");
}

/** uint8 [N, H, W, 3] -> one PNG per image, each with its "parameters" text chunk. */
async function encodePngs(
  pixels: Tensor,
  images: PipelineImage[],
  r: ResolvedGenerate,
  signal: AbortSignal | undefined,
): Promise<void> {
  const data = pixels.toTypedArray() as Uint8Array;
  const bytes = r.width * r.height * 3;
  await Promise.all(
    images.map(async (image, i) => {
      const raw = Buffer.from(data.buffer, data.byteOffset + i * bytes, bytes);
      const png = await sharp(raw, { raw: { width: r.width, height: r.height, channels: 3 } })
        .png()
        .toBuffer();
      image.png = addPngText(png, { parameters: image.parameters });
    }),
  );
  signal?.throwIfAborted();
}

/** The sampler as AUTOMATIC1111 names it in infotext ("Euler a", "DPM++ 2M Karras", ...). */
export function a1111SamplerName(name: SamplerName, config: Record<string, unknown>): string {
  const karras = config.use_karras_sigmas === true ? " Karras" : "";
  switch (name) {
    case "ddim":
      return "DDIM";
    case "pndm":
      return "PLMS";
    case "ddpm":
      return "DDPM";
    case "euler":
      return `Euler${karras}`;
    case "euler_ancestral":
      return `Euler a${karras}`;
    default: {
      const order = Number(config.solver_order ?? 2);
      const plus = config.algorithm_type === "dpmsolver" ? "" : "++";
      return `DPM${plus} ${order}M${karras}`;
    }
  }
}

let version: string | undefined;
function packageVersion(): string {
  version ??= (createRequire(import.meta.url)("../../package.json") as { version: string }).version;
  return version;
}
