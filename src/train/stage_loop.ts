// A stage's optimisation loop: optimizer steps (each over gradient_accumulation_steps
// micro-batches), one metrics line per step, validation samples, checkpoints, a guard
// against a loss that stays non-finite, and a clean stop on Ctrl-C at a step boundary.
import { join } from "node:path";

import { assertFinite } from "../io/finite.js";
import { writeSafetensors } from "../io/safetensors.js";
import type { CheckpointStore } from "./checkpoints.js";
import { validationSamples } from "./images.js";
import { learningRate } from "./lr_schedule.js";
import type { StageCheckpointState, StageContext } from "./stage.js";
import type { BatchSource } from "./stage_batches.js";
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
}

interface StepTotals {
  loss: number;
  priorLoss: number;
  examples: number;
  seconds: number;
  result: StepResult;
}

/** Trains from `state` to max_train_steps, updating `state` as it goes. */
export async function trainLoop(loop: StageLoop, state: LoopState): Promise<void> {
  const { stage, signal } = loop.ctx;
  const total = stage.max_train_steps;
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
    await recordStep(loop, state, totals, lrs.unet);
    refuseNonFinite(loop, state);
    const validating = stage.validation && (state.step % stage.validation.every_n_steps === 0 || state.step === total);
    if (validating) {
      // Not cancellable: a stop request waits for these few images, then saves.
      loop.ctx.onProgress?.({ phase: "validation", stage: stage.name, step: state.step, total });
      await validationSamples(loop.models, stage, loop.dir, state.step, { resolution: loop.resolution });
      await loop.ctx.refreshReport?.(state.step, total);
    }
    const stopping = signal?.aborted ?? false;
    if (state.step % stage.checkpointing_steps === 0 || state.step === total || stopping) {
      // A state whose loss is not finite is never saved: the newest checkpoint stays a good one.
      const saved = state.nonFinite === 0 ? await saveCheckpoint(loop, state) : (await loop.store.latest())?.dir;
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
      totalSteps: stage.max_train_steps,
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
    lossSum += result.loss;
    priorSum += result.priorLoss;
    examples += batch.examples;
    state.position = batch.next;
  }
  const seconds = (performance.now() - started) / 1000;
  return { loss: lossSum / accumulation, priorLoss: priorSum / accumulation, examples, seconds, result: result! };
}

/** The step's metrics line and progress event. */
async function recordStep(loop: StageLoop, state: LoopState, totals: StepTotals, lr: number): Promise<void> {
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
    time: Date.now() / 1000,
  });
  loop.ctx.onProgress?.({
    phase: "train",
    stage: stage.name,
    step: state.step,
    total: stage.max_train_steps,
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
