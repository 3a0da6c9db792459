// The native training step over loaded models: a thin typed wrapper that
// validates options before they cross into C++.
import {
  native,
  type NativeStepResult,
  type NativeTrainBatch,
  type NativeTrainer,
  type Tensor,
} from "../native/index.js";
import type { TextEncoder } from "../models/text_encoder.js";
import type { UNet } from "../models/unet.js";
import type { VAE } from "../models/vae.js";

export type ParamGroupSpec =
  { name: "unet" | "text_encoder"; params: [string, Tensor][] } | { name: "unet" | "text_encoder"; full: true };

export interface TrainerSpec {
  unet: UNet;
  textEncoder?: TextEncoder;
  /** Needed only when batches carry pixels (not cached latents). */
  vae?: VAE;
  /** vae/config.json's scaling_factor; needed when no VAE is given. */
  vaeScalingFactor?: number;
  groups: ParamGroupSpec[];
  /** The model's scheduler/scheduler_config.json, parsed. */
  noiseScheduleConfig: Record<string, unknown>;
  predictionType?: "epsilon" | "v_prediction";
  snrGamma?: number;
  noiseOffset?: number;
  priorLossWeight?: number;
  gradientAccumulationSteps?: number;
  maxGradNorm?: number;
  adamw?: { beta1?: number; beta2?: number; eps?: number; weightDecay?: number };
  lossScaling?: { enabled: boolean; initScale?: number; growthInterval?: number };
  ema?: { enabled: boolean; decay?: number; useWarmup?: boolean };
  seed?: number;
  sampleLatents?: boolean;
  clipSkip?: number;
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
    for (const [key, value] of Object.entries({
      snrGamma: spec.snrGamma,
      noiseOffset: spec.noiseOffset,
      priorLossWeight: spec.priorLossWeight,
      maxGradNorm: spec.maxGradNorm,
    })) {
      if (value !== undefined && !(Number.isFinite(value) && value >= 0)) {
        throw new RangeError(`Trainer: ${key} must be a number >= 0, got ${value}`);
      }
    }
    const accumulation = spec.gradientAccumulationSteps ?? 1;
    if (!Number.isInteger(accumulation) || accumulation < 1) {
      throw new RangeError(`Trainer: gradientAccumulationSteps must be an integer >= 1, got ${accumulation}`);
    }
    const handle = await native().Trainer.create({
      unet: spec.unet.handle,
      textEncoder: spec.textEncoder?.handle,
      vae: spec.vae?.handle,
      vaeScalingFactor: spec.vaeScalingFactor ?? spec.vae?.scalingFactor,
      groups: spec.groups,
      noiseScheduleConfig: JSON.stringify(spec.noiseScheduleConfig),
      predictionType: spec.predictionType,
      snrGamma: spec.snrGamma,
      noiseOffset: spec.noiseOffset,
      priorLossWeight: spec.priorLossWeight,
      gradientAccumulationSteps: accumulation,
      maxGradNorm: spec.maxGradNorm,
      adamw: spec.adamw,
      lossScaling: spec.lossScaling,
      ema: spec.ema,
      seed: spec.seed ?? 0,
      sampleLatents: spec.sampleLatents ?? true,
      clipSkip: spec.clipSkip ?? 0,
      trainTextEncoder,
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
