// The training step's settings under the trainer's (camelCase) names, built from the
// stage schema's fields: one definition of each setting (its type and bounds), shared
// by the config (src/config/train.ts), the Trainer API (src/train/trainer.ts) and the
// native options type (src/native/trainer.ts). The C++ side has one struct of its own
// (native/train/trainer.h). Defaults stay the trainer's: a config fills its own
// defaults before it builds a Trainer, an API caller gets the native ones.
import { z } from "zod";

import { parseConfig } from "./errors.js";
import { nativeOptimizerSpecSchema } from "./optimizer.js";
import { PriorPreservationSchema, stageShape } from "./train.js";

/** A config field without its default, optional: the trainer takes it when given. */
function setting<T extends z.ZodType>(field: z.ZodDefault<T> | z.ZodOptional<T>): z.ZodOptional<T> {
  return field.unwrap().optional();
}

export const trainerSettingsSchema = z.object({
  predictionType: setting(stageShape.prediction_type),
  snrGamma: setting(stageShape.snr_gamma),
  noiseOffset: setting(stageShape.noise_offset),
  priorLossWeight: setting(PriorPreservationSchema.shape.prior_loss_weight),
  gradientAccumulationSteps: setting(stageShape.gradient_accumulation_steps),
  /** 0: measure the norm only. */
  maxGradNorm: setting(stageShape.max_grad_norm),
  adamw: z
    .object({
      beta1: setting(stageShape.adam_beta1),
      beta2: setting(stageShape.adam_beta2),
      eps: setting(stageShape.adam_epsilon),
      weightDecay: setting(stageShape.adam_weight_decay),
    })
    .optional(),
  /** Another optimizer (or AdamW) with its settings; replaces `adamw` when given. */
  optimizer: nativeOptimizerSpecSchema.optional(),
  ema: z
    .object({ enabled: z.boolean(), decay: setting(stageShape.ema_decay), useWarmup: z.boolean().optional() })
    .optional(),
});

/** The trainer settings a stage config decides. */
export type TrainerSettings = z.input<typeof trainerSettingsSchema>;

/** Checks the settings before anything crosses to native code; the error names each bad key. */
export function checkTrainerSettings(settings: TrainerSettings): void {
  parseConfig(trainerSettingsSchema, settings, "Trainer options");
}
