// How long a stage trains and when it writes intermediate LoRAs, in optimizer steps.
// An epoch is one pass over the dataset plan (repeats, buckets, batch size), and its
// length in steps is diffusers' num_update_steps_per_epoch: ceil(batches / accumulation).
// max_train_steps, when given, overrides num_train_epochs (as in diffusers' scripts).
import type { StageConfig } from "../config/train.js";
import { TRAIN_LIMITS } from "../config/train.js";

export interface StagePlan {
  /** Optimizer steps the stage trains for. */
  totalSteps: number;
  /** Optimizer steps per epoch. */
  stepsPerEpoch: number;
  /** Whether an intermediate LoRA is written after `step` (never at totalSteps: that is the final one). */
  isSaveStep(step: number): boolean;
}

type PlanKeys = Pick<
  StageConfig,
  "name" | "max_train_steps" | "num_train_epochs" | "gradient_accumulation_steps" | "save_every_n_steps"
> &
  Pick<StageConfig, "save_every_n_epochs">;

/** diffusers' num_update_steps_per_epoch. */
export function stepsPerEpoch(batchesPerEpoch: number, accumulation: number): number {
  return Math.max(1, Math.ceil(batchesPerEpoch / accumulation));
}

/** The stage's total steps: max_train_steps, else num_train_epochs whole epochs. */
export function plannedTotal(stage: PlanKeys, perEpoch: number): number {
  if (stage.max_train_steps !== undefined) return stage.max_train_steps;
  const total = stage.num_train_epochs! * perEpoch;
  if (total > TRAIN_LIMITS.steps) {
    throw new Error(
      `stage "${stage.name}": num_train_epochs ${stage.num_train_epochs} × ${perEpoch} steps per epoch is ` +
        `${total} steps, over the limit of ${TRAIN_LIMITS.steps}; use fewer epochs`,
    );
  }
  return total;
}

export function stagePlan(stage: PlanKeys, batchesPerEpoch: number): StagePlan {
  const perEpoch = stepsPerEpoch(batchesPerEpoch, stage.gradient_accumulation_steps);
  const totalSteps = plannedTotal(stage, perEpoch);
  const every = [stage.save_every_n_steps, stage.save_every_n_epochs && stage.save_every_n_epochs * perEpoch].filter(
    (n): n is number => n !== undefined && n > 0,
  );
  return {
    totalSteps,
    stepsPerEpoch: perEpoch,
    isSaveStep: (step) => step > 0 && step < totalSteps && every.some((n) => step % n === 0),
  };
}

/** Whether the stage writes intermediate LoRAs at all. */
export const savesIntermediate = (stage: PlanKeys): boolean =>
  stage.save_every_n_steps !== undefined || stage.save_every_n_epochs !== undefined;
