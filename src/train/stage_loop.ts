// A stage's optimisation loop: optimizer steps (each over gradient_accumulation_steps
// micro-batches), one metrics line per step, validation samples, checkpoints, a guard
// against a loss that stays non-finite, and a clean stop on Ctrl-C at a step boundary.
import { join } from "node:path";

import { assertFinite } from "../io/finite.js";
import { writeSafetensors } from "../io/safetensors.js";
import type { CheckpointStore } from "./checkpoints.js";
import { mainThenBarrier } from "./distributed.js";
import { validationSamples } from "./images.js";
import { learningRate } from "./lr_schedule.js";
import type { StageCheckpointState, StageContext } from "./stage.js";
import type { BatchSource } from "./stage_batches.js";
import type { StagePlan } from "./stage_plan.js";
import { afterSaveStep } from "./lora_saves.js";
import type { Dataset } from "../data/index.js";
import type { StageModels } from "./stage_models.js";
import type { StepResult, Trainer } from "./trainer.js";

export const STATE_FILE = "training_state.safetensors";
const MAX_NON_FINITE = 5;

export class TrainingStopped extends Error {
  override name = "AbortError";
  readonly code = "ABORT_ERR";
  constructor(readonly checkpoint: string | undefined) {
    super(`training interrupted${checkpoint ? `; state saved in ${checkpoint} (resume with --resume latest)` : ""}`);
  }
}

/** Where the loop is: what a checkpoint records and a resume restores. */
export interface LoopState {
  step: number;
  position: { epoch: number; index: number };
  nonFinite: number;
  lastLoss: number;
}

/** What the loop works with. */
export interface StageLoop {
  ctx: StageContext;
  models: StageModels;
  trainer: Trainer;
  store: CheckpointStore<StageCheckpointState>;
  nextBatch: BatchSource;
  /** The stage folder (validation samples). */
  dir: string;
  resolution: number;
  plan: StagePlan;
  /** The stage's dataset (intermediate LoRAs' metadata). */
  dataset: Dataset;
}

interface StepTotals {
  loss: number;
  priorLoss: number;
  examples: number;
  seconds: number;
  result: StepResult;
  /** A stop was asked for (on any rank, data parallel). */
  stop: boolean;
}

/** Trains from `state` to max_train_steps, updating `state` as it goes. */
export async function trainLoop(loop: StageLoop, state: LoopState): Promise<void> {
  const { stage } = loop.ctx;
  const total = loop.plan.totalSteps;
  loop.ctx.onProgress?.({ phase: "train", stage: stage.name, step: state.step, total });
  while (state.step < total) {
    const lrs = {
      unet: lrAt(loop, stage.learning_rate, state.step),
      text_encoder: lrAt(loop, stage.text_encoder_learning_rate ?? stage.learning_rate, state.step),
    };
    const totals = await optimizerStep(loop, state, lrs);
    state.step++;
    // Gradient overflows (float16) are the loss scaler's business; a non-finite loss is not.
    state.nonFinite = Number.isFinite(totals.loss) ? 0 : state.nonFinite + 1;
    state.lastLoss = totals.loss;
    await recordStep(loop, state, totals, lrs.unet, await verifyRanks(loop, state.step));
    refuseNonFinite(loop, state);
    const validating = stage.validation && (state.step % stage.validation.every_n_steps === 0 || state.step === total);
    if (validating) {
      // Not cancellable: a stop request waits for these few images, then saves. Rank 0 makes them.
      loop.ctx.onProgress?.({ phase: "validation", stage: stage.name, step: state.step, total });
      await mainThenBarrier(loop.ctx.dp, () =>
        validationSamples(loop.models, stage, loop.dir, state.step, { resolution: loop.resolution }),
      );
      await loop.ctx.refreshReport?.(state.step, total);
    }
    // Like checkpoints, no intermediate LoRA is written from a step whose loss was not finite;
    // rank 0 writes it while the other ranks wait.
    if (state.nonFinite === 0) await mainThenBarrier(loop.ctx.dp, () => afterSaveStep(loop, state.step));
    // One process: a stop asked for while this step was recorded (Ctrl-C, onProgress) saves this
    // step. Data parallel: the ranks agreed on the stop in the step's all-reduce (a later request
    // is taken at the next step, so every rank stops at the same one).
    const stopping = totals.stop || (!loop.ctx.dp && (loop.ctx.signal?.aborted ?? false));
    if (state.step % stage.checkpointing_steps === 0 || state.step === total || stopping) {
      // A state whose loss is not finite is never saved: the newest checkpoint stays a good one.
      const saved = await mainThenBarrier(loop.ctx.dp, async () =>
        state.nonFinite === 0 ? await saveCheckpoint(loop, state) : (await loop.store.latest())?.dir,
      );
      if (stopping) throw new TrainingStopped(saved);
      if (state.step < total && !validating) await loop.ctx.refreshReport?.(state.step, total);
    }
  }
}

function lrAt(loop: StageLoop, base: number, step: number): number {
  const { stage } = loop.ctx;
  return learningRate(
    {
      name: stage.lr_scheduler,
      baseLr: base,
      warmupSteps: stage.lr_warmup_steps,
      totalSteps: loop.plan.totalSteps,
      numCycles: stage.lr_num_cycles,
      power: stage.lr_power,
    },
    step,
  );
}

/** One optimizer step: gradient_accumulation_steps micro-batches; advances the data position. */
async function optimizerStep(
  loop: StageLoop,
  state: LoopState,
  lrs: { unet: number; text_encoder: number },
): Promise<StepTotals> {
  const accumulation = loop.ctx.stage.gradient_accumulation_steps;
  const started = performance.now();
  let lossSum = 0;
  let priorSum = 0;
  let examples = 0;
  let result: StepResult | undefined;
  for (let micro = 0; micro < accumulation; micro++) {
    const batch = await loop.nextBatch();
    try {
      result = await loop.trainer.step(batch.input, lrs);
    } finally {
      batch.dispose();
    }
    // Data parallel: a rank's loss weighs by its share of the global batch (lossWeight).
    const weight = batch.input.lossWeight ?? 1;
    lossSum += result.loss * weight;
    priorSum += result.priorLoss * weight;
    examples += batch.examples;
    state.position = batch.next;
  }
  let stop = loop.ctx.signal?.aborted ?? false;
  const dp = loop.ctx.dp;
  if (dp) {
    // The global batch's numbers, and one stop decision for all ranks (any rank asked: all stop here).
    const [loss, prior, ex, anyStop] = await dp.mean([lossSum, priorSum, examples, stop ? 1 : 0]);
    [lossSum, priorSum, examples, stop] = [loss!, prior!, Math.round(ex! * dp.worldSize), anyStop! > 0];
  }
  const seconds = (performance.now() - started) / 1000;
  return { loss: lossSum / accumulation, priorLoss: priorSum / accumulation, examples, seconds, result: result!, stop };
}

/**
 * Data parallel, every distributed.verifyEvery steps: each rank's hash of its trainer state; they
 * must all be equal (same weights, optimizer state and generator), else the run stops.
 */
async function verifyRanks(loop: StageLoop, step: number): Promise<number[] | undefined> {
  const dp = loop.ctx.dp;
  if (!dp || dp.verifyEvery <= 0 || step % dp.verifyEvery !== 0) return undefined;
  const state = await loop.trainer.stateDict();
  try {
    const hashes = await dp.hashes(state.map(([, t]) => t));
    if (hashes.some((h) => h !== hashes[0])) {
      throw new Error(
        `stage "${loop.ctx.stage.name}": at step ${step} the ranks hold different weights (hashes ` +
          `${hashes.join(", ")}); data-parallel training has diverged, which is a bug: please report it`,
      );
    }
    return hashes;
  } finally {
    for (const [, t] of state) t.dispose();
  }
}

/** The step's metrics line and progress event. */
async function recordStep(
  loop: StageLoop,
  state: LoopState,
  totals: StepTotals,
  lr: number,
  rankHashes: number[] | undefined,
): Promise<void> {
  const { stage } = loop.ctx;
  const { result, seconds } = totals;
  await loop.ctx.metrics.append({
    stage: stage.name,
    step: state.step,
    epoch: state.position.epoch,
    loss: totals.loss,
    ...(stage.prior_preservation ? { prior_loss: totals.priorLoss } : {}),
    lr,
    grad_norm: result.gradNorm,
    loss_scale: result.lossScale,
    overflow: result.overflow,
    step_time: seconds,
    images_per_sec: totals.examples / seconds,
    ...(rankHashes ? { rank_hashes: rankHashes } : {}),
    // Data parallel: the gradient all-reduce ran overlapped with the backward (absent: after it).
    ...(result.gradientsOverlapped ? { gradients_overlapped: true } : {}),
    time: Date.now() / 1000,
  });
  loop.ctx.onProgress?.({
    phase: "train",
    stage: stage.name,
    step: state.step,
    total: loop.plan.totalSteps,
    loss: totals.loss,
    lr,
    epoch: state.position.epoch,
  });
}

/**
 * In float32 a non-finite loss means the weights diverged: the run stops at once. With a loss
 * scaler (float16) an overflow is the scaler's business, so only a loss that stays non-finite
 * for MAX_NON_FINITE steps stops it.
 */
function refuseNonFinite(loop: StageLoop, state: LoopState): void {
  const limit = loop.ctx.placement.lossScaling ? MAX_NON_FINITE : 1;
  if (state.nonFinite < limit) return;
  throw new Error(
    `stage "${loop.ctx.stage.name}": the loss has not been finite for ${state.nonFinite} ` +
      `step${state.nonFinite === 1 ? "" : "s"} (step ${state.step}). ` +
      "Lower learning_rate, use mixed_precision bf16 or no instead of fp16, or check the data; " +
      `the last good state is in ${loop.store.dir}.`,
  );
}

/** Saves the trainer's state and the loop's position as checkpoint-<step>; returns its folder. */
async function saveCheckpoint(loop: StageLoop, state: LoopState): Promise<string> {
  const manifestState: StageCheckpointState = {
    stage: loop.ctx.stage.name,
    step: state.step,
    position: state.position,
    metricsLines: loop.ctx.metrics.lineCount,
    consecutiveNonFinite: state.nonFinite,
    lastLoss: state.lastLoss,
    ...(loop.ctx.dp ? { worldSize: loop.ctx.dp.worldSize } : {}),
  };
  // The lines the checkpoint counts are on disk before it exists (a resume cuts back to them).
  await loop.ctx.metrics.sync();
  const tensors = await loop.trainer.stateDict();
  try {
    // Weights that diverged without a non-finite loss yet (e.g. a huge learning rate) are never saved.
    assertFinite(
      tensors,
      `stage "${loop.ctx.stage.name}": at step ${state.step} the weights and optimizer state`,
      `no checkpoint was saved; lower learning_rate. The last good state is in ${loop.store.dir}.`,
    );
    const saved = await loop.store.save(state.step, manifestState, (folder) =>
      writeSafetensors(join(folder, STATE_FILE), tensors),
    );
    return saved.dir;
  } finally {
    for (const [, t] of tensors) t.dispose();
  }
}
