// Native surface: training (native/bindings/trainer_binding.cc).
import type { SchedulerParams } from "../config/scheduler.js";
import type { TrainerSettings } from "../config/trainer.js";
import type { NativeTextEncoder } from "./clip.js";
import type { NativeUNet, NativeVAE } from "./models.js";
import type { NativeProcessGroup } from "./dist.js";
import type { Tensor } from "./tensor.js";

/** The settings a config decides (src/config/trainer.ts) plus what only the caller has. */
export interface NativeTrainerOptions extends TrainerSettings {
  unet: NativeUNet;
  textEncoder?: NativeTextEncoder;
  vae?: NativeVAE;
  /** The VAE's scaling_factor (default: the given VAE's); required without a VAE. */
  vaeScalingFactor?: number;
  /** "unet" / "text_encoder": given parameters (e.g. LoRA adapters), or the whole model (`full`). */
  groups: (
    { name: "unet" | "text_encoder"; params: [string, Tensor][] } | { name: "unet" | "text_encoder"; full: true }
  )[];
  /** The DDPM training schedule, resolved in TypeScript (src/config/scheduler.ts). */
  noiseSchedule: SchedulerParams;
  lossScaling?: { enabled: boolean; initScale?: number; growthInterval?: number };
  seed?: number;
  /** true: latents = posterior sample (diffusers); false: the mean. */
  sampleLatents?: boolean;
  clipSkip?: number;
  trainTextEncoder?: boolean;
  /** Data parallel: rank 0's trained weights are broadcast at creation; gradients are averaged over ranks. */
  processGroup?: NativeProcessGroup;
}

/** One micro-batch: pixels, cached latent distribution or latents; inputIds or cached embeddings. */
export interface NativeTrainBatch {
  pixels?: Tensor;
  latentMean?: Tensor;
  latentStd?: Tensor;
  latents?: Tensor;
  inputIds?: Tensor;
  encoderHiddenStates?: Tensor;
  noise?: Tensor;
  timesteps?: Tensor;
  /** The last rows are class images (prior preservation). */
  priorRows?: number;
  /**
   * Data parallel: this rank's row indices (int64 [B]) in a global batch of `globalBatch` rows. Random
   * draws are made for the global batch (identically on every rank) and these rows kept.
   */
  globalRows?: Tensor;
  globalBatch?: number;
  /** Scales this micro-batch's gradient (data parallel: rows held × world size / global rows). Default 1. */
  lossWeight?: number;
}

export interface NativeStepResult {
  loss: number;
  instanceLoss: number;
  priorLoss: number;
  optimizerStepped: boolean;
  overflow: boolean;
  /** Data parallel: the gradients were averaged inside the backward (c10d's Reducer), not after it. */
  gradientsOverlapped: boolean;
  gradNorm: number;
  lossScale: number;
  microStep: number;
  optimizerStep: number;
  /** Wall time of the step's phases (benchmarks): forward (with the loss read), backward, clip, optimizer. */
  phaseMs: { forward: number; backward: number; clip: number; optimizer: number };
  modelPred?: Tensor;
}

export interface NativeTrainer {
  /** One micro-batch; `lrs` has one learning rate per group, in group order. */
  step(batch: NativeTrainBatch, lrs: number[], options?: { keepPrediction?: boolean }): Promise<NativeStepResult>;
  /** Copies of every tensor that decides the next step (parameters, optimizer, EMA, scaler, generator, counters). */
  stateDict(): Promise<[string, Tensor][]>;
  loadStateDict(state: [string, Tensor][]): Promise<void>;
  copyEmaToModel(): Promise<void>;
  readonly optimizerStep: number;
  dispose(): void;
}
