// Native surface: training (native/bindings/trainer_binding.cc).
import type { NativeTextEncoder } from "./clip.js";
import type { NativeUNet, NativeVAE } from "./models.js";
import type { AdamWOptions } from "./optim.js";
import type { Tensor } from "./tensor.js";

export interface NativeTrainerOptions {
  unet: NativeUNet;
  textEncoder?: NativeTextEncoder;
  vae?: NativeVAE;
  /** The VAE's scaling_factor (default: the given VAE's); required without a VAE. */
  vaeScalingFactor?: number;
  /** "unet" / "text_encoder": given parameters (e.g. LoRA adapters), or the whole model (`full`). */
  groups: (
    { name: "unet" | "text_encoder"; params: [string, Tensor][] } | { name: "unet" | "text_encoder"; full: true }
  )[];
  /** scheduler_config.json as JSON text: the DDPM training schedule. */
  noiseScheduleConfig: string;
  predictionType?: "epsilon" | "v_prediction";
  snrGamma?: number;
  noiseOffset?: number;
  priorLossWeight?: number;
  gradientAccumulationSteps?: number;
  /** 0: measure the norm only. */
  maxGradNorm?: number;
  adamw?: AdamWOptions;
  lossScaling?: { enabled: boolean; initScale?: number; growthInterval?: number };
  ema?: { enabled: boolean; decay?: number; useWarmup?: boolean };
  seed?: number;
  /** true: latents = posterior sample (diffusers); false: the mean. */
  sampleLatents?: boolean;
  clipSkip?: number;
  trainTextEncoder?: boolean;
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
}

export interface NativeStepResult {
  loss: number;
  instanceLoss: number;
  priorLoss: number;
  optimizerStepped: boolean;
  overflow: boolean;
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
