// The native training step over loaded models: a thin typed wrapper that
// validates options before they cross into C++.
import { resolveSchedulerParams } from "../config/scheduler.js";
import { checkTrainerSettings } from "../config/trainer.js";
import {
  native,
  type NativeStepResult,
  type NativeTrainBatch,
  type NativeTrainer,
  type NativeTrainerOptions,
  type Tensor,
} from "../native/index.js";
import type { TextEncoder } from "../models/text_encoder.js";
import type { UNet } from "../models/unet.js";
import type { VAE } from "../models/vae.js";

export type ParamGroupSpec =
  { name: "unet" | "text_encoder"; params: [string, Tensor][] } | { name: "unet" | "text_encoder"; full: true };

/** The native options with loaded models instead of handles and the scheduler config as read. */
export interface TrainerSpec extends Omit<
  NativeTrainerOptions,
  "unet" | "textEncoder" | "vae" | "noiseSchedule" | "trainTextEncoder"
> {
  unet: UNet;
  textEncoder?: TextEncoder;
  /** Needed only when batches carry pixels (not cached latents). */
  vae?: VAE;
  groups: ParamGroupSpec[];
  /** The model's scheduler/scheduler_config.json, parsed. */
  noiseScheduleConfig: Record<string, unknown>;
}

export type TrainBatch = NativeTrainBatch;
export type StepResult = NativeStepResult;

export class Trainer {
  private constructor(
    private readonly handle: NativeTrainer,
    readonly groupNames: string[],
  ) {}

  static async create(spec: TrainerSpec): Promise<Trainer> {
    if (spec.groups.length === 0) throw new Error("Trainer: nothing to train (no parameter groups)");
    const names = spec.groups.map((g) => g.name);
    if (new Set(names).size !== names.length)
      throw new Error(`Trainer: duplicate parameter groups ${names.join(", ")}`);
    const trainTextEncoder = names.includes("text_encoder");
    if (trainTextEncoder && !spec.textEncoder) throw new Error("Trainer: training the text encoder needs textEncoder");
    checkTrainerSettings(spec);
    const noiseSchedule = resolveSchedulerParams("ddpm", spec.noiseScheduleConfig).params;
    const handle = await native().Trainer.create({
      unet: spec.unet.handle,
      textEncoder: spec.textEncoder?.handle,
      vae: spec.vae?.handle,
      vaeScalingFactor: spec.vaeScalingFactor ?? spec.vae?.scalingFactor,
      groups: spec.groups,
      noiseSchedule,
      predictionType: spec.predictionType,
      snrGamma: spec.snrGamma,
      noiseOffset: spec.noiseOffset,
      priorLossWeight: spec.priorLossWeight,
      gradientAccumulationSteps: spec.gradientAccumulationSteps,
      maxGradNorm: spec.maxGradNorm,
      adamw: spec.adamw,
      optimizer: spec.optimizer,
      lossScaling: spec.lossScaling,
      ema: spec.ema,
      seed: spec.seed ?? 0,
      sampleLatents: spec.sampleLatents ?? true,
      clipSkip: spec.clipSkip ?? 0,
      trainTextEncoder,
      processGroup: spec.processGroup,
    });
    return new Trainer(handle, names);
  }

  /** One micro-batch. `lrs`: by group name (a group without an entry gets `lrs.default`). */
  step(
    batch: TrainBatch,
    lrs: Record<string, number>,
    options: { keepPrediction?: boolean } = {},
  ): Promise<StepResult> {
    const ordered = this.groupNames.map((name) => {
      const lr = lrs[name] ?? lrs.default;
      if (lr === undefined || !Number.isFinite(lr) || lr < 0)
        throw new RangeError(`Trainer.step: no valid lr for group "${name}"`);
      return lr;
    });
    return this.handle.step(batch, ordered, options);
  }

  stateDict(): Promise<[string, Tensor][]> {
    return this.handle.stateDict();
  }

  loadStateDict(state: [string, Tensor][]): Promise<void> {
    return this.handle.loadStateDict(state);
  }

  copyEmaToModel(): Promise<void> {
    return this.handle.copyEmaToModel();
  }

  get optimizerStep(): number {
    return this.handle.optimizerStep;
  }

  dispose(): void {
    this.handle.dispose();
  }
}
