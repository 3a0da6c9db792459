// Images a training stage makes with its own models: DreamBooth class images
// (prior preservation, generated with the stage's base model before training)
// and validation samples (fixed prompts and seeds every N steps).
import { existsSync } from "node:fs";
import { mkdir, readdir } from "node:fs/promises";
import { join } from "node:path";

import type { StageConfig } from "../config/train.js";
import { makeGrid } from "../pipeline/grid.js";
import { writeFileAtomic } from "../io/atomic.js";
import { StableDiffusionPipeline } from "../pipeline/index.js";
import type { DataParallel } from "./distributed.js";
import type { StageModels } from "./stage_models.js";

const IMAGE = /\.(png|jpe?g|webp)$/i;

async function pipelineOf(models: StageModels, name: string): Promise<StableDiffusionPipeline> {
  return new StableDiffusionPipeline({
    unet: models.unet,
    vae: await models.ensureVae(),
    textEncoder: models.textEncoder,
    tokenizer: models.tokenizer,
    schedulerConfig: models.schedulerConfig as ConstructorParameters<
      typeof StableDiffusionPipeline
    >[0]["schedulerConfig"],
    name,
  });
}

const className = (n: number): string => `class_${String(n).padStart(5, "0")}.png`;

/**
 * The numbers of the images still to make: numbered after the `present` ones, skipping a number
 * whose file exists. A data-parallel run stopped midway can leave rank 1's number 1 without rank
 * 0's number 0; counting from `present` alone would then redo number 1 and never reach the total.
 */
export function missingNumbers(classDir: string, present: number, total: number): number[] {
  const numbers: number[] = [];
  for (let n = present; numbers.length < total - present; n++) {
    if (!existsSync(join(classDir, className(n)))) numbers.push(n);
  }
  return numbers;
}

/**
 * Fills `classDir` up to num_class_images with images of the class prompt, as
 * train_dreambooth.py does: generated with the base model, numbered after the ones
 * already there, seed = run seed + image number (so a rerun makes the same images).
 * Data parallel: every rank counts what is there, then makes the numbers it owns
 * (number mod world size = rank); the caller meets the others at a barrier afterwards.
 */
export async function generateClassImages(
  models: StageModels,
  stage: StageConfig & { name: string },
  classDir: string,
  options: {
    seed: number;
    resolution: number;
    signal?: AbortSignal;
    onProgress?: (done: number, total: number) => void;
    dp?: DataParallel;
  },
): Promise<number> {
  const prior = stage.prior_preservation!;
  const { dp } = options;
  await mkdir(classDir, { recursive: true });
  const present = (await readdir(classDir)).filter((f) => IMAGE.test(f)).length;
  // No rank writes before every rank has counted, so all agree on the numbers.
  await dp?.barrier();
  const numbers = missingNumbers(classDir, present, prior.num_class_images).filter(
    (n) => !dp || n % dp.worldSize === dp.rank,
  );
  if (numbers.length === 0) return 0;
  const pipe = await pipelineOf(models, "base");
  for (let made = 0; made < numbers.length;) {
    const batch = numbers.slice(made, made + prior.sample_batch_size);
    const result = await pipe.generate({
      prompt: prior.class_prompt,
      numImages: batch.length,
      seed: batch.map((n) => options.seed + n),
      width: options.resolution,
      height: options.resolution,
      steps: prior.num_inference_steps,
      guidanceScale: prior.guidance_scale,
      ...(prior.sampler ? { scheduler: prior.sampler } : {}),
      signal: options.signal,
      onWarning: () => undefined,
    });
    for (const [i, image] of result.images.entries()) {
      const name = className(batch[i]!);
      if (!existsSync(join(classDir, name))) await writeFileAtomic(join(classDir, name), image.png!);
    }
    made += batch.length;
    options.onProgress?.(made, numbers.length);
  }
  return numbers.length;
}

/** What samples are drawn with: the validation settings, or the same fields of another prompt set. */
export type SampleSpec = Omit<NonNullable<StageConfig["validation"]>, "every_n_steps">;

/** Validation samples for `step`: one PNG per prompt and seed, and a grid, under <stage>/samples/step-N. */
export async function validationSamples(
  models: StageModels,
  stage: StageConfig & { name: string },
  stageDir: string,
  step: number,
  options: { resolution: number; signal?: AbortSignal; spec?: SampleSpec },
): Promise<string> {
  const v = options.spec ?? stage.validation!;
  const dir = join(stageDir, "samples", `step-${step}`);
  await mkdir(dir, { recursive: true });
  const pipe = await pipelineOf(models, stage.name);
  const pngs: Buffer[] = [];
  for (const [p, prompt] of v.prompts.entries()) {
    const result = await pipe.generate({
      prompt,
      negativePrompt: v.negative_prompt,
      numImages: v.seeds.length,
      seed: v.seeds,
      width: v.width ?? options.resolution,
      height: v.height ?? options.resolution,
      steps: v.num_inference_steps,
      guidanceScale: v.guidance_scale,
      ...(v.sampler ? { scheduler: v.sampler } : {}),
      signal: options.signal,
      onWarning: () => undefined,
    });
    for (const image of result.images) {
      await writeFileAtomic(join(dir, `prompt${p}_seed${image.seed}.png`), image.png!);
      pngs.push(image.png!);
    }
  }
  const grid = await makeGrid(pngs, {
    columns: v.seeds.length,
    rowLabels: v.prompts,
    columnLabels: v.seeds.map((s) => `seed ${s}`),
  });
  await writeFileAtomic(join(dir, "grid.png"), grid);
  return dir;
}
