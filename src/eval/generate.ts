// Mode B: generate every (variant, prompt, seed) image with the diffusion pipeline, with
// the same seeds for every variant, into <output>/images/<variant>/ (PNG with A1111
// parameters + metadata.jsonl), so scoring then reads them like any image folder.
//
// The pipeline lives elsewhere (src/pipeline); this module only needs an ImageGenerator.
// Register one with setImageGeneratorLoader (generatorFromPipeline adapts the pipeline).
import { readFile } from "node:fs/promises";
import { join } from "node:path";

import { writeFileAtomic } from "../io/atomic.js";
import { addPngText, formatInfotext, readPngText } from "../io/png.js";
import type { ProgressEvent } from "../native.js";
import type { GenerateConfig } from "./config.js";

export interface LoraSpec {
  path: string;
  scale: number;
  name: string;
}

export interface GenerationRequest {
  prompt: string;
  negativePrompt: string;
  width?: number;
  height?: number;
  steps: number;
  guidanceScale: number;
  /** A sampler name of src/sched (ddim, euler_ancestral, dpmpp_2m_karras, ...); undefined: the model's scheduler. */
  sampler?: string;
  seed: number;
}

export interface GeneratedImage {
  /** Encoded PNG. */
  png: Buffer;
  seed: number;
  width: number;
  height: number;
}

/** What mode B needs from a text-to-image pipeline. */
export interface ImageGenerator {
  /** Model id or path (written into the PNG parameters). */
  readonly model: string;
  /** Activates exactly these LoRAs at these scales; [] = the base model. */
  setLoras(loras: readonly LoraSpec[]): Promise<void>;
  generate(
    request: GenerationRequest,
    options: { signal?: AbortSignal; onProgress?: (event: ProgressEvent) => void },
  ): Promise<GeneratedImage>;
  dispose(): void;
}

export interface ImageGeneratorLoadOptions {
  dtype?: "float32" | "float16" | "bfloat16";
  device?: string;
  signal?: AbortSignal;
}

export type ImageGeneratorLoader = (pathOrId: string, options: ImageGeneratorLoadOptions) => Promise<ImageGenerator>;

let loader: ImageGeneratorLoader | undefined;

/** Registers how mode B loads a pipeline: `(id, o) => generatorFromPipeline(await loadPipeline(id, o), id)`. */
export function setImageGeneratorLoader(next: ImageGeneratorLoader | undefined): void {
  loader = next;
}

export async function loadImageGenerator(
  pathOrId: string,
  options: ImageGeneratorLoadOptions,
): Promise<ImageGenerator> {
  if (!loader) {
    throw new Error(
      "sdtune eval: generating images (the `generate` section) needs the diffusion pipeline, which is not " +
        "registered in this build; score existing images with `images` instead (see setImageGeneratorLoader)",
    );
  }
  return loader(pathOrId, options);
}

/**
 * The pipeline's surface as announced for src/pipeline: generate() resolving to PNG
 * buffers with their seeds, and named LoRA adapters switched with setAdapters.
 */
export interface DiffusionPipelineLike {
  generate(options: {
    prompt: string;
    negativePrompt?: string;
    width?: number;
    height?: number;
    steps?: number;
    guidanceScale?: number;
    scheduler?: string;
    seed?: number;
    numImages?: number;
    signal?: AbortSignal;
    onProgress?: (event: ProgressEvent) => void;
  }): Promise<PipelineImages>;
  loadLora(path: string, options: { name: string; scale?: number }): Promise<unknown>;
  setAdapters(names: string[], scales?: number[]): unknown;
  dispose?(): void;
}

type PipelineImage = { png?: Buffer; seed: number; width?: number; height?: number };
type PipelineImages = PipelineImage[] | { images: PipelineImage[] };

/** Adapts a pipeline to ImageGenerator: LoRAs load once by name, then switch per variant. */
export function generatorFromPipeline(pipeline: DiffusionPipelineLike, model: string): ImageGenerator {
  const loaded = new Map<string, string>(); // adapter name -> path
  return {
    model,
    async setLoras(loras) {
      for (const l of loras) {
        const known = loaded.get(l.name);
        if (known !== undefined && known !== l.path) {
          throw new Error(`two LoRAs are named "${l.name}" (${known}, ${l.path}); give them distinct names`);
        }
        if (known === undefined) {
          await pipeline.loadLora(l.path, { name: l.name, scale: l.scale });
          loaded.set(l.name, l.path);
        }
      }
      await pipeline.setAdapters(
        loras.map((l) => l.name),
        loras.map((l) => l.scale),
      );
    },
    async generate(request, options) {
      const result = await pipeline.generate({
        prompt: request.prompt,
        negativePrompt: request.negativePrompt,
        ...(request.width !== undefined ? { width: request.width } : {}),
        ...(request.height !== undefined ? { height: request.height } : {}),
        steps: request.steps,
        guidanceScale: request.guidanceScale,
        ...(request.sampler !== undefined ? { scheduler: request.sampler } : {}),
        seed: request.seed,
        numImages: 1,
        ...(options.signal ? { signal: options.signal } : {}),
        ...(options.onProgress ? { onProgress: options.onProgress } : {}),
      });
      const images = Array.isArray(result) ? result : result.images;
      const image = images[0];
      if (!image?.png) throw new Error(`the pipeline returned no PNG image for seed ${request.seed}`);
      const size = pngSize(image.png);
      return { png: image.png, seed: image.seed, width: size.width, height: size.height };
    },
    dispose() {
      pipeline.dispose?.();
    },
  };
}

function pngSize(png: Buffer): { width: number; height: number } {
  if (png.length < 24 || png.toString("latin1", 12, 16) !== "IHDR") throw new Error("the pipeline returned no PNG");
  return { width: png.readUInt32BE(16), height: png.readUInt32BE(20) };
}

export interface GeneratedVariant {
  name: string;
  /** The folder holding its images and metadata.jsonl. */
  dir: string;
  /** "base model" or "lora-a@0.8 + lora-b@1". */
  source: string;
}

/** Variants in order: "base" (unless include_base is false), then the configured ones. */
export function variantPlan(config: GenerateConfig): { name: string; loras: LoraSpec[] }[] {
  const plan: { name: string; loras: LoraSpec[] }[] = [];
  if (config.include_base) plan.push({ name: "base", loras: [] });
  for (const v of config.variants) {
    plan.push({
      name: v.name,
      loras: v.loras.map((l, i) => ({ path: l.path, scale: l.scale, name: l.name ?? `${v.name}-${i + 1}` })),
    });
  }
  return plan;
}

/**
 * Generates every image of every variant with identical seeds. An image whose PNG already
 * exists with the same parameters is kept (a rerun after a crash resumes); the generator
 * is only loaded when some image is missing.
 */
export async function generateVariants(
  config: GenerateConfig,
  outputDir: string,
  getGenerator: () => Promise<ImageGenerator>,
  options: { signal?: AbortSignal; onProgress?: (event: ProgressEvent) => void } = {},
): Promise<GeneratedVariant[]> {
  const plan = variantPlan(config);
  const total = plan.length * config.prompts.length * config.seeds.length;
  let done = 0;
  const out: GeneratedVariant[] = [];
  for (const variant of plan) {
    const dir = join(outputDir, "images", variant.name);
    let generator: ImageGenerator | undefined;
    const rows: string[] = [];
    for (const [p, prompt] of config.prompts.entries()) {
      for (const seed of config.seeds) {
        options.signal?.throwIfAborted();
        const file = `p${String(p).padStart(3, "0")}-s${seed}.png`;
        const request: GenerationRequest = {
          prompt,
          negativePrompt: config.negative_prompt,
          steps: config.steps,
          guidanceScale: config.guidance_scale,
          ...(config.sampler !== undefined ? { sampler: config.sampler } : {}),
          seed,
          ...(config.width !== undefined ? { width: config.width } : {}),
          ...(config.height !== undefined ? { height: config.height } : {}),
        };
        const infotextFor = (w: number, h: number): string =>
          formatInfotext({
            prompt,
            negativePrompt: config.negative_prompt,
            steps: config.steps,
            sampler: config.sampler ?? "default",
            guidanceScale: config.guidance_scale,
            seed,
            width: w,
            height: h,
            model: config.model,
            ...(variant.loras.length ? { loras: Object.fromEntries(variant.loras.map((l) => [l.name, l.scale])) } : {}),
          });
        if (!(await existingMatches(join(dir, file), infotextFor))) {
          if (!generator) {
            generator = await getGenerator();
            await generator.setLoras(variant.loras);
          }
          const image = await generator.generate(request, options);
          await writeFileAtomic(
            join(dir, file),
            addPngText(image.png, { parameters: infotextFor(image.width, image.height) }),
          );
        }
        rows.push(JSON.stringify({ file_name: file, prompt, seed }));
        options.onProgress?.({ phase: "generate", step: ++done, total, variant: variant.name });
      }
    }
    await writeFileAtomic(join(dir, "metadata.jsonl"), `${rows.join("\n")}\n`);
    const source = variant.loras.length ? variant.loras.map((l) => `${l.name}@${l.scale}`).join(" + ") : "base model";
    out.push({ name: variant.name, dir, source });
  }
  return out;
}

/** True when `path` is a PNG whose parameters equal what this request would write. */
async function existingMatches(path: string, infotextFor: (w: number, h: number) => string): Promise<boolean> {
  let png: Buffer;
  try {
    png = await readFile(path);
  } catch {
    return false;
  }
  try {
    const { width, height } = pngSize(png);
    return readPngText(png).parameters === infotextFor(width, height);
  } catch {
    return false;
  }
}
