// Learning-rate schedules with diffusers' semantics (diffusers.optimization.get_scheduler):
// a multiplier of the base lr as a function of the number of optimizer steps
// already taken (so a warmup's first update runs at lr 0, as in diffusers).

import type { LrScheduleName } from "../config/train.js";

export { LR_SCHEDULES, type LrScheduleName } from "../config/train.js";

export interface LrScheduleOptions {
  name: LrScheduleName;
  baseLr: number;
  warmupSteps: number;
  totalSteps: number;
  /** cosine: 0.5 (half a wave); cosine_with_restarts: number of restarts (default 1). */
  numCycles?: number;
  /** polynomial only. */
  power?: number;
  /** polynomial only: the final lr (default 1e-7). */
  lrEnd?: number;
}

/** The lr for the update that follows `step` completed optimizer steps. */
export function learningRate(options: LrScheduleOptions, step: number): number {
  return options.baseLr * multiplier(options, step);
}

function multiplier(o: LrScheduleOptions, step: number): number {
  const warmup = o.warmupSteps;
  if (o.name === "constant") return 1;
  if (step < warmup && o.name !== "polynomial") return step / Math.max(1, warmup);
  const progress = (step - warmup) / Math.max(1, o.totalSteps - warmup);
  switch (o.name) {
    case "constant_with_warmup":
      return 1;
    case "linear":
      return Math.max(0, (o.totalSteps - step) / Math.max(1, o.totalSteps - warmup));
    case "cosine": {
      const cycles = o.numCycles ?? 0.5;
      return Math.max(0, 0.5 * (1 + Math.cos(Math.PI * cycles * 2 * progress)));
    }
    case "cosine_with_restarts": {
      if (progress >= 1) return 0;
      const cycles = o.numCycles ?? 1;
      return Math.max(0, 0.5 * (1 + Math.cos(Math.PI * ((cycles * progress) % 1))));
    }
    case "polynomial": {
      const lrEnd = o.lrEnd ?? 1e-7;
      const power = o.power ?? 1;
      if (!(o.baseLr > lrEnd)) throw new RangeError(`polynomial lr schedule: lrEnd (${lrEnd}) must be below the lr`);
      if (step < warmup) return step / Math.max(1, warmup);
      if (step > o.totalSteps) return lrEnd / o.baseLr;
      const remaining = 1 - (step - warmup) / (o.totalSteps - warmup);
      return ((o.baseLr - lrEnd) * remaining ** power + lrEnd) / o.baseLr;
    }
  }
}
