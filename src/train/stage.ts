// One training stage, start (or resume) to finish: data stream, native trainer,
// the optimisation loop with metrics, checkpoints, validation samples and a clean
// stop on Ctrl-C; then the stage's outputs (LoRA files and/or a full model).
import { mkdir } from "node:fs/promises";
import { join } from "node:path";

import type { StageConfig, TrainConfig } from "../config/train.js";
import { createBatchStream, openDataset, type BatchOptions, type Dataset, type DatasetSpec } from "../data/index.js";
import { createLatentBatchStream, LatentCache, TextEmbeddingCache, trainingCaptions } from "../cache/index.js";
import { readSafetensors, writeSafetensors } from "../io/safetensors.js";
import { CheckpointStore } from "./checkpoints.js";
import { learningRate } from "./lr_schedule.js";
import type { MetricsLog } from "./metrics.js";
import type { Placement } from "./precision.js";
import { generateClassImages, validationSamples } from "./images.js";
import { addTrainable, loadStageBase, type StageBase, type StageModels } from "./stage_models.js";
import { Trainer, type TrainBatch } from "./trainer.js";

export interface StageProgress {
  phase: "train" | "class-images" | "cache" | "validation" | "save";
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
}

export interface StageOutcome {
  models: StageModels;
  trainer: Trainer;
  dataset: Dataset;
  steps: number;
  lastLoss: number;
  resolution: number;
}

const STATE_FILE = "training_state.safetensors";
const MAX_NON_FINITE = 5;

export class TrainingStopped extends Error {
  override name = "AbortError";
  readonly code = "ABORT_ERR";
  constructor(readonly checkpoint: string | undefined) {
    super(`training interrupted${checkpoint ? `; state saved in ${checkpoint} (resume with --resume latest)` : ""}`);
  }
}

function defaultResolution(models: StageModels): number {
  const sampleSize = Number(models.unet.config.sample_size ?? 64);
  return sampleSize * (models.vae?.scaleFactor ?? 8);
}

export function stageDir(runDir: string, stage: string): string {
  return join(runDir, stage);
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
  const { stage, placement, signal } = ctx;
  const dir = stageDir(ctx.runDir, stage.name);
  await mkdir(dir, { recursive: true });
  const store = new CheckpointStore<StageCheckpointState>(join(dir, "checkpoints"), stage.checkpoints_total_limit);
  await store.removePartial();

  const classDir = stage.prior_preservation
    ? (stage.prior_preservation.class_data_dir ?? join(ctx.runDir, "class_images", stage.name))
    : undefined;
  const seed = ctx.seed + 1000 * ctx.index;
  const models = await loadStageBase(ctx.base, stage, placement, {
    loadVae: !stage.cache_latents,
    variant: ctx.variant,
  });
  let trainer: Trainer | undefined;
  let closeBatches: (() => Promise<void>) | undefined;
  try {
    // diffusers' default size: the UNet's sample_size in pixels.
    const resolution = stage.resolution ?? defaultResolution(models);
    let dataset = await openDataset(datasetSpecFor(stage, classDir), { signal });
    if (stage.prior_preservation && dataset.classImagesNeeded > 0) {
      // Class images come from the base model, before any trainable weight exists.
      await generateClassImages(models, stage, classDir!, {
        seed: ctx.seed,
        resolution,
        signal,
        onProgress: (done, total) => ctx.onProgress?.({ phase: "class-images", stage: stage.name, step: done, total }),
      });
      dataset = await openDataset(datasetSpecFor(stage, classDir), { signal });
    }
    await addTrainable(models, stage, seed);

    const scheduler = models.schedulerConfig;
    const predictionType =
      stage.prediction_type ?? (scheduler.prediction_type as "epsilon" | "v_prediction" | undefined);
    trainer = await Trainer.create({
      unet: models.unet,
      textEncoder: models.textEncoder,
      vae: models.vae,
      vaeScalingFactor: models.vaeScalingFactor,
      groups: models.groups,
      noiseScheduleConfig: scheduler,
      predictionType,
      snrGamma: stage.snr_gamma,
      noiseOffset: stage.noise_offset,
      priorLossWeight: stage.prior_preservation?.prior_loss_weight ?? 1,
      gradientAccumulationSteps: stage.gradient_accumulation_steps,
      maxGradNorm: stage.max_grad_norm,
      adamw: {
        beta1: stage.adam_beta1,
        beta2: stage.adam_beta2,
        eps: stage.adam_epsilon,
        weightDecay: stage.adam_weight_decay,
      },
      lossScaling: { enabled: placement.lossScaling },
      ema: { enabled: stage.use_ema, decay: stage.ema_decay },
      seed,
    });

    let step = 0;
    let position = { epoch: 0, index: 0 };
    let nonFinite = 0;
    if (ctx.resumeFrom) {
      const saved = await readSafetensors(join(ctx.resumeFrom.dir, STATE_FILE));
      await trainer.loadStateDict([...saved.tensors]);
      for (const t of saved.tensors.values()) t.dispose();
      ({ step, position, consecutiveNonFinite: nonFinite } = ctx.resumeFrom.state);
    }
    let lastLoss = ctx.resumeFrom?.state.lastLoss ?? Number.NaN;

    // diffusers' default size: the UNet's sample_size in pixels.
    const batchOptions: BatchOptions = {
      resolution,
      buckets: stage.buckets?.enabled
        ? { minSide: stage.buckets.min_side, maxSide: stage.buckets.max_side, step: stage.buckets.step }
        : false,
      batchSize: stage.train_batch_size,
      crop: stage.center_crop ? "center" : "random",
      flip: stage.random_flip,
      seed,
      captionDropout: stage.caption_dropout,
      shuffleTags: stage.shuffle_tags,
      keepTags: stage.keep_tags,
      position,
      // No stop signal here: Ctrl-C ends the run at an optimizer-step boundary (below), never
      // inside an accumulation cycle, so nothing since the last checkpoint is lost.
    };
    const nextBatch = await openBatches(dataset, batchOptions, models, ctx);
    closeBatches = nextBatch.close;
    const lrFor = (base: number): number =>
      learningRate(
        {
          name: stage.lr_scheduler,
          baseLr: base,
          warmupSteps: stage.lr_warmup_steps,
          totalSteps: stage.max_train_steps,
          numCycles: stage.lr_num_cycles,
          power: stage.lr_power,
        },
        step,
      );
    const checkpoint = async (): Promise<string> => {
      const state: StageCheckpointState = {
        stage: stage.name,
        step,
        position,
        metricsLines: ctx.metrics.lineCount,
        consecutiveNonFinite: nonFinite,
        lastLoss,
      };
      const tensors = await trainer!.stateDict();
      try {
        const saved = await store.save(step, state, (folder) => writeSafetensors(join(folder, STATE_FILE), tensors));
        return saved.dir;
      } finally {
        for (const [, t] of tensors) t.dispose();
      }
    };

    ctx.onProgress?.({ phase: "train", stage: stage.name, step, total: stage.max_train_steps });
    while (step < stage.max_train_steps) {
      const lrs = {
        unet: lrFor(stage.learning_rate),
        text_encoder: lrFor(stage.text_encoder_learning_rate ?? stage.learning_rate),
      };
      const started = performance.now();
      let lossSum = 0;
      let priorSum = 0;
      let examples = 0;
      let result;
      for (let micro = 0; micro < stage.gradient_accumulation_steps; micro++) {
        const batch = await nextBatch();
        try {
          result = await trainer.step(batch.input, lrs);
        } finally {
          batch.dispose();
        }
        lossSum += result.loss;
        priorSum += result.priorLoss;
        examples += batch.examples;
        position = batch.next;
      }
      step++;
      const seconds = (performance.now() - started) / 1000;
      const loss = lossSum / stage.gradient_accumulation_steps;
      // Gradient overflows (float16) are the loss scaler's business; a non-finite loss is not.
      nonFinite = Number.isFinite(loss) ? 0 : nonFinite + 1;
      lastLoss = loss;
      await ctx.metrics.append({
        stage: stage.name,
        step,
        epoch: position.epoch,
        loss,
        ...(stage.prior_preservation ? { prior_loss: priorSum / stage.gradient_accumulation_steps } : {}),
        lr: lrs.unet,
        grad_norm: result!.gradNorm,
        loss_scale: result!.lossScale,
        overflow: result!.overflow,
        step_time: seconds,
        images_per_sec: examples / seconds,
      });
      ctx.onProgress?.({ phase: "train", stage: stage.name, step, total: stage.max_train_steps, loss, lr: lrs.unet });
      if (nonFinite >= MAX_NON_FINITE) {
        throw new Error(
          `stage "${stage.name}": the loss has not been finite for ${nonFinite} steps (step ${step}). ` +
            "Lower learning_rate, use mixed_precision bf16 or no instead of fp16, or check the data; " +
            `the last good state is in ${store.dir}.`,
        );
      }
      if (stage.validation && (step % stage.validation.every_n_steps === 0 || step === stage.max_train_steps)) {
        // Not cancellable: a stop request waits for these few images, then saves.
        ctx.onProgress?.({ phase: "validation", stage: stage.name, step, total: stage.max_train_steps });
        await validationSamples(models, stage, dir, step, { resolution });
      }
      const stopping = signal?.aborted ?? false;
      // A state whose loss is not finite is never saved: the newest checkpoint stays a good one.
      const healthy = nonFinite === 0;
      if (step % stage.checkpointing_steps === 0 || step === stage.max_train_steps || stopping) {
        const saved = healthy ? await checkpoint() : (await store.latest())?.dir;
        if (stopping) throw new TrainingStopped(saved);
      }
    }
    await nextBatch.close();
    return { models, trainer, dataset, steps: step, lastLoss, resolution };
  } catch (error) {
    await closeBatches?.().catch(() => undefined);
    trainer?.dispose();
    models.dispose();
    throw withAdvice(error, stage.name, store.dir);
  }
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

/** One micro-batch ready for the trainer, whatever stream it came from. */
interface ReadyBatch {
  input: TrainBatch;
  examples: number;
  next: { epoch: number; index: number };
  dispose(): void;
}

type BatchSource = (() => Promise<ReadyBatch>) & { close(): Promise<void> };

/**
 * The stage's batches: decoded pixels (through the VAE in the trainer), or, with
 * cache_latents, cached VAE posteriors (the VAE is loaded only to fill the cache).
 */
async function openBatches(
  dataset: Dataset,
  options: BatchOptions,
  models: StageModels,
  ctx: StageContext,
): Promise<BatchSource> {
  const { stage } = ctx;
  const priorRows = (roles: readonly string[]): number => roles.filter((r) => r === "class").length;
  let iterator: AsyncIterator<ReadyBatch>;
  if (!stage.cache_latents) {
    const stream = createBatchStream(dataset, options)[Symbol.asyncIterator]();
    iterator = {
      next: async () => {
        const r = await stream.next();
        if (r.done) return r;
        const b = r.value;
        const ids = models.tokenizer.encode(b.captions);
        return {
          done: false,
          value: {
            input: { pixels: b.pixels, inputIds: ids, priorRows: priorRows(b.roles) },
            examples: b.captions.length,
            next: b.next,
            dispose: () => {
              b.pixels.dispose();
              ids.dispose();
            },
          },
        };
      },
      return: async () => {
        await stream.return?.(undefined);
        return { done: true, value: undefined };
      },
    };
  } else {
    const vaeDir = join(ctx.base.modelDir, "vae");
    const latents = await LatentCache.open({
      dir: ctx.cacheDir,
      vae: vaeDir,
      variant: ctx.variant,
      dtype: ctx.placement.weightDtype,
    });
    if ((await latents.missing(dataset, options)).length > 0) {
      await latents.ensure(dataset, options, {
        vae: await models.ensureVae(),
        signal: ctx.signal,
        onProgress: (e) => ctx.onProgress?.({ phase: "cache", stage: stage.name, step: e.step, total: e.total }),
      });
    }
    let text: TextEmbeddingCache | undefined;
    if (stage.cache_text_embeddings) {
      if (ctx.base.loras.length) {
        throw new Error(
          `stage "${stage.name}": cache_text_embeddings cannot be used on top of an earlier stage's LoRA ` +
            "(the cache keys on the text encoder's files, which the fused LoRA changes); turn it off for this stage",
        );
      }
      text = await TextEmbeddingCache.open({
        dir: ctx.cacheDir,
        textEncoder: join(ctx.base.modelDir, "text_encoder"),
        tokenizer: join(ctx.base.modelDir, "tokenizer"),
        dtype: ctx.placement.weightDtype,
      });
      await text.ensure(trainingCaptions(dataset, options), {
        textEncoder: models.textEncoder,
        tokenizer: models.tokenizer,
        signal: ctx.signal,
      });
    }
    const stream = createLatentBatchStream(dataset, options, { latents, text, vae: () => models.ensureVae() })[
      Symbol.asyncIterator
    ]();
    iterator = {
      next: async () => {
        const r = await stream.next();
        if (r.done) return r;
        const b = r.value;
        const ids = b.textEmbeddings ? undefined : models.tokenizer.encode(b.captions);
        return {
          done: false,
          value: {
            input: {
              latentMean: b.latentMean,
              latentStd: b.latentStd,
              ...(b.textEmbeddings ? { encoderHiddenStates: b.textEmbeddings } : { inputIds: ids }),
              priorRows: priorRows(b.roles),
            },
            examples: b.captions.length,
            next: b.next,
            dispose: () => {
              b.latentMean.dispose();
              b.latentStd.dispose();
              b.textEmbeddings?.dispose();
              ids?.dispose();
            },
          },
        };
      },
      return: async () => {
        await stream.return?.(undefined);
        await latents.close();
        await text?.close();
        return { done: true, value: undefined };
      },
    };
  }
  const next = async (): Promise<ReadyBatch> => {
    const r = await iterator.next();
    if (r.done) throw new Error(`stage "${stage.name}": the data stream ended early`);
    return r.value;
  };
  return Object.assign(next, { close: async () => void (await iterator.return?.()) });
}
