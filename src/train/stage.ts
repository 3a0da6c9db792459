// One training stage, start (or resume) to finish: data stream, native trainer,
// the optimisation loop with metrics, checkpoints, validation samples and a clean
// stop on Ctrl-C; then the stage's outputs (LoRA files and/or a full model).
import { mkdir } from "node:fs/promises";
import { join } from "node:path";

import { nativeOptimizerSpec } from "../config/optimizer.js";
import type { StageConfig, TrainConfig } from "../config/train.js";
import { createBatchStream, openDataset, type BatchOptions, type Dataset, type DatasetSpec } from "../data/index.js";
import { readSafetensors } from "../io/safetensors.js";
import { CheckpointStore } from "./checkpoints.js";
import type { DataParallel } from "./distributed.js";
import type { MetricsLog } from "./metrics.js";
import type { Placement } from "./precision.js";
import { generateClassImages } from "./images.js";
import { runPath } from "./paths.js";
import { openBatches, type BatchSource } from "./stage_batches.js";
import { STATE_FILE, trainLoop, type LoopState } from "./stage_loop.js";
import { addTrainable, loadStageBase, type StageBase, type StageModels } from "./stage_models.js";
import { stagePlan, type StagePlan } from "./stage_plan.js";
import { Trainer } from "./trainer.js";

export { TrainingStopped } from "./stage_loop.js";

export interface StageProgress {
  phase: "train" | "class-images" | "cache" | "validation" | "save" | "notice";
  stage: string;
  step: number;
  total: number;
  loss?: number;
  lr?: number;
  [key: string]: unknown;
}

/** What a checkpoint's manifest records besides the tensors. */
export interface StageCheckpointState {
  stage: string;
  /** Optimizer steps taken (accumulation boundaries). */
  step: number;
  position: { epoch: number; index: number };
  metricsLines: number;
  consecutiveNonFinite: number;
  /** The last step's loss (what a stage that ends at this checkpoint reports). */
  lastLoss?: number;
  /** Data parallel: the number of ranks that trained it (absent: 1). */
  worldSize?: number;
}

export interface StageContext {
  stage: TrainConfig["stages"][number];
  index: number;
  runDir: string;
  base: StageBase;
  placement: Placement;
  seed: number;
  metrics: MetricsLog;
  /** A checkpoint to continue from (resume). */
  resumeFrom?: { dir: string; state: StageCheckpointState };
  signal?: AbortSignal;
  onProgress?: (event: StageProgress) => void;
  /** Where latent / text-embedding caches live (default: resolveCacheDir()). */
  cacheDir?: string;
  /** Weights variant of the run's model (e.g. "fp16"). */
  variant?: string;
  /** Data parallel: this process's rank; rank 0 alone writes. */
  dp?: DataParallel;
  /** Rewrites report.html mid-stage (after validation samples and checkpoints; it may skip some). */
  refreshReport?: (step: number, total: number) => Promise<unknown>;
}

export interface StageOutcome {
  models: StageModels;
  trainer: Trainer;
  dataset: Dataset;
  steps: number;
  lastLoss: number;
  resolution: number;
  /** The steps the stage was planned for, and the steps of one epoch. */
  totalSteps: number;
  stepsPerEpoch: number;
}

function defaultResolution(models: StageModels): number {
  const sampleSize = Number(models.unet.config.sample_size ?? 64);
  return sampleSize * (models.vae?.scaleFactor ?? 8);
}

/** A stage's folder: `<runDir>/<stage>`, checked to lie inside the run folder. */
export function stageDir(runDir: string, stage: string): string {
  return runPath(runDir, stage);
}

export function datasetSpecFor(stage: StageConfig, classDir: string | undefined): DatasetSpec {
  const d = stage.dataset;
  const spec: DatasetSpec = {
    type: stage.method === "dreambooth" ? "dreambooth" : (d.type ?? "auto"),
    path: d.path,
    revision: d.revision,
    split: d.split,
    captionColumn: d.caption_column,
    imageColumn: d.image_column,
    captionExt: d.caption_ext,
    repeats: d.repeats,
  };
  if (stage.method === "dreambooth") {
    spec.instancePrompt = stage.instance_prompt;
    if (stage.prior_preservation) {
      spec.classDir = classDir;
      spec.classPrompt = stage.prior_preservation.class_prompt;
      spec.numClassImages = stage.prior_preservation.num_class_images;
    }
  }
  return spec;
}

/** Trains one stage; the caller saves outputs and disposes the returned models. */
export async function runStage(ctx: StageContext): Promise<StageOutcome> {
  const { stage } = ctx;
  const dir = stageDir(ctx.runDir, stage.name);
  await mkdir(dir, { recursive: true });
  const store = new CheckpointStore<StageCheckpointState>(join(dir, "checkpoints"), stage.checkpoints_total_limit);
  if (ctx.dp?.isMain !== false) await store.removePartial();
  const models = await loadStageBase(ctx.base, stage, ctx.placement, {
    loadVae: !stage.cache_latents,
    variant: ctx.variant,
  });
  let trainer: Trainer | undefined;
  let nextBatch: BatchSource | undefined;
  try {
    // diffusers' default size: the UNet's sample_size in pixels.
    const resolution = stage.resolution ?? defaultResolution(models);
    const dataset = await prepareDataset(ctx, models, resolution);
    await addTrainable(models, stage, stageSeed(ctx));
    trainer = await createStageTrainer(ctx, models);
    const state = await restoreState(trainer, ctx);
    const options = batchOptions(ctx, resolution, state.position);
    const plan = planOf(ctx, createBatchStream(dataset, options).batchesPerEpoch, state.step);
    nextBatch = await openBatches(dataset, options, models, ctx);
    await trainLoop({ ctx, models, trainer, store, nextBatch, dir, resolution, plan, dataset }, state);
    await nextBatch.close();
    const { totalSteps, stepsPerEpoch } = plan;
    return {
      models,
      trainer,
      dataset,
      steps: state.step,
      lastLoss: state.lastLoss,
      resolution,
      totalSteps,
      stepsPerEpoch,
    };
  } catch (error) {
    await nextBatch?.close().catch(() => undefined);
    trainer?.dispose();
    models.dispose();
    throw withAdvice(error, stage.name, store.dir);
  }
}

/** The stage's plan; a checkpoint past its end (steps or epochs lowered) is refused. */
function planOf(ctx: StageContext, batchesPerEpoch: number, step: number): StagePlan {
  const plan = stagePlan(ctx.stage, batchesPerEpoch);
  if (step > plan.totalSteps) {
    throw new Error(
      `stage "${ctx.stage.name}": the checkpoint resumed from is at step ${step}, past the ${plan.totalSteps} steps ` +
        "this config trains for; a run can only be extended (raise max_train_steps or num_train_epochs)",
    );
  }
  return plan;
}

/** Each stage draws its own random streams. */
const stageSeed = (ctx: StageContext): number => ctx.seed + 1000 * ctx.index;

/** The stage's dataset; with prior preservation, missing class images are generated first. */
async function prepareDataset(ctx: StageContext, models: StageModels, resolution: number): Promise<Dataset> {
  const { stage, signal } = ctx;
  const classDir = stage.prior_preservation
    ? (stage.prior_preservation.class_data_dir ?? runPath(ctx.runDir, "class_images", stage.name))
    : undefined;
  const dataset = await openDataset(datasetSpecFor(stage, classDir), { signal });
  // Data parallel: every rank meets at the barrier, whatever it saw missing (rank 0 may be done already).
  if (!stage.prior_preservation || (!ctx.dp && dataset.classImagesNeeded === 0)) return dataset;
  // Class images come from the base model, before any trainable weight exists; with data
  // parallel every rank makes its share, then all meet before reading the folder.
  await generateClassImages(models, stage, classDir!, {
    seed: ctx.seed,
    resolution,
    signal,
    dp: ctx.dp,
    onProgress: (done, total) => ctx.onProgress?.({ phase: "class-images", stage: stage.name, step: done, total }),
  });
  await ctx.dp?.barrier();
  return openDataset(datasetSpecFor(stage, classDir), { signal });
}

function createStageTrainer(ctx: StageContext, models: StageModels): Promise<Trainer> {
  const { stage, placement } = ctx;
  const scheduler = models.schedulerConfig;
  return Trainer.create({
    unet: models.unet,
    textEncoder: models.textEncoder,
    vae: models.vae,
    vaeScalingFactor: models.vaeScalingFactor,
    groups: models.groups,
    noiseScheduleConfig: scheduler,
    predictionType: stage.prediction_type ?? (scheduler.prediction_type as "epsilon" | "v_prediction" | undefined),
    snrGamma: stage.snr_gamma,
    noiseOffset: stage.noise_offset,
    priorLossWeight: stage.prior_preservation?.prior_loss_weight ?? 1,
    gradientAccumulationSteps: stage.gradient_accumulation_steps,
    maxGradNorm: stage.max_grad_norm,
    optimizer: nativeOptimizerSpec(stage.optimizer, stage.optimizer_args, {
      beta1: stage.adam_beta1,
      beta2: stage.adam_beta2,
      eps: stage.adam_epsilon,
      weightDecay: stage.adam_weight_decay,
    }),
    lossScaling: { enabled: placement.lossScaling },
    ema: { enabled: stage.use_ema, decay: stage.ema_decay },
    seed: stageSeed(ctx),
    processGroup: ctx.dp?.group,
  });
}

/** A fresh loop state, or the trainer state and position of the checkpoint resumed from. */
async function restoreState(trainer: Trainer, ctx: StageContext): Promise<LoopState> {
  const { resumeFrom } = ctx;
  if (!resumeFrom) return { step: 0, position: { epoch: 0, index: 0 }, nonFinite: 0, lastLoss: Number.NaN };
  const saved = await readSafetensors(join(resumeFrom.dir, STATE_FILE));
  await trainer.loadStateDict([...saved.tensors]);
  for (const t of saved.tensors.values()) t.dispose();
  const { step, position, consecutiveNonFinite, lastLoss } = resumeFrom.state;
  return {
    step,
    position: positionForWorld(ctx, position, resumeFrom.state.worldSize ?? 1),
    nonFinite: consecutiveNonFinite,
    lastLoss: lastLoss ?? Number.NaN,
  };
}

/**
 * A checkpoint saved by another number of ranks: its position counts global batches of that
 * size; the run goes on from the same point of the epoch (the same examples consumed) in
 * global batches of the new size, and says so.
 */
function positionForWorld(
  ctx: StageContext,
  position: LoopState["position"],
  savedWorld: number,
): LoopState["position"] {
  const world = ctx.dp?.worldSize ?? 1;
  if (savedWorld === world) return position;
  const index = Math.floor((position.index * savedWorld) / world);
  ctx.onProgress?.({
    phase: "notice",
    stage: ctx.stage.name,
    step: 0,
    total: 0,
    message:
      `the checkpoint was trained by ${savedWorld} process${savedWorld === 1 ? "" : "es"}, this run has ${world}: ` +
      `the global batch is now ${ctx.stage.train_batch_size * world} (train_batch_size ${ctx.stage.train_batch_size} ` +
      `x ${world}); training continues from the same point of epoch ${position.epoch} (batch ${index}), so it is ` +
      "not bit-identical to an uninterrupted run",
  });
  return { epoch: position.epoch, index };
}

function batchOptions(ctx: StageContext, resolution: number, position: LoopState["position"]): BatchOptions {
  const { stage } = ctx;
  return {
    resolution,
    buckets: stage.buckets?.enabled
      ? { minSide: stage.buckets.min_side, maxSide: stage.buckets.max_side, step: stage.buckets.step }
      : false,
    // Data parallel: the global batch is planned once, identically on every rank, then split.
    batchSize: stage.train_batch_size * (ctx.dp?.worldSize ?? 1),
    ...(ctx.dp ? { shard: { rank: ctx.dp.rank, worldSize: ctx.dp.worldSize } } : {}),
    crop: stage.center_crop ? "center" : "random",
    flip: stage.random_flip,
    seed: stageSeed(ctx),
    captionDropout: stage.caption_dropout,
    shuffleTags: stage.shuffle_tags,
    keepTags: stage.keep_tags,
    position,
    // No stop signal here: Ctrl-C ends the run at an optimizer-step boundary (in the loop),
    // never inside an accumulation cycle, so nothing since the last checkpoint is lost.
  };
}

/** Out-of-memory errors get what to change and where the last good state is. */
function withAdvice(error: unknown, stage: string, checkpoints: string): unknown {
  if (!(error instanceof Error) || !/out of memory|bad_alloc|cannot allocate/i.test(error.message)) return error;
  return new Error(
    `stage "${stage}": out of memory (${error.message.split("\n")[0]}). Try, in order: gradient_checkpointing: true, ` +
      "cache_latents: true, a smaller train_batch_size (with gradient_accumulation_steps to keep the effective batch), " +
      `a lower resolution, mixed_precision fp16/bf16 on a GPU. Checkpoints saved so far are in ${checkpoints}; ` +
      "resume with --resume latest.",
    { cause: error },
  );
}
