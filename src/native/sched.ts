// Native surface: schedulers and random numbers.
import type { DType, Tensor } from "./tensor.js";

import type { SamplerName } from "../config/scheduler.js";

/** Sampler names (src/config/scheduler.ts); see the README section "Samplers". */
export type { SamplerName };

/** A value of a diffusers scheduler config (scheduler_config.json). */
export type SchedulerConfigValue = string | number | boolean | null | number[];

/** A seedable CPU random generator: `new Generator(seed)` draws what `torch.Generator().manual_seed(seed)` draws. */
export interface Generator {
  /** The seed it was created with (or last reseeded with); a BigInt only beyond 2^53 - 1. */
  readonly seed: number | bigint;
  /** Restarts the stream from `seed`, like torch.Generator.manual_seed. */
  manualSeed(seed: number | bigint): void;
  /** Standard normal samples drawn on the CPU in `dtype` (default float32), then moved to `device`. */
  randn(shape: number[], options?: { dtype?: DType; device?: string }): Tensor;
  /** The full generator state (uint8, torch.Generator.get_state's layout), for exact resume. */
  getState(): Tensor;
  /** Restores a state from getState(). */
  setState(state: Tensor): void;
}

export interface SchedulerStepResult {
  /** The sample for the next model call. */
  prevSample: Tensor;
  /** The x0 estimate, where diffusers returns one (not PNDM, not DPM-Solver). */
  predOriginalSample?: Tensor;
  /** The random draw this step used, when it drew one. */
  noise?: Tensor;
}

/** A sampler (the inference half of a diffusers scheduler), driven by step index. */
export interface Scheduler {
  readonly name: SamplerName;
  /** The diffusers class it reproduces, e.g. "DPMSolverMultistepScheduler". */
  readonly className: string;
  /** The effective init parameters (diffusers key names), after from_config resolution. */
  readonly config: Record<string, SchedulerConfigValue>;
  /** diffusers' scheduler.order (1 for every sampler here). */
  readonly order: number;
  /** 0 until setTimesteps(). */
  readonly numInferenceSteps: number;
  /** Model calls per run (= timesteps.numel; PNDM makes steps + 1). */
  readonly numCalls: number;
  /** [numCalls] int64 (DDPM, DDIM, PNDM, DPM-Solver) or float32 (Euler, Euler-a): a copy. */
  readonly timesteps: Tensor;
  /** [numCalls + 1] float32 for Euler, Euler-a and DPM-Solver; undefined for the others. */
  readonly sigmas: Tensor | undefined;
  /** 0-dim float32: initial latents are randn * initNoiseSigma. */
  readonly initNoiseSigma: Tensor;
  /** Builds the schedule for `steps` >= 1 inference steps and starts a new run. */
  setTimesteps(steps: number): void;
  /** The timestep the model gets at call `stepIndex`. */
  timestepAt(stepIndex: number): number;
  /** The model input at call `stepIndex` (the sample itself except for Euler samplers). */
  scaleModelInput(sample: Tensor, stepIndex: number): Tensor;
  /**
   * img2img: `x0` noised to the level of call `stepIndex` (diffusers' scheduler.add_noise):
   * sqrt(acp) x0 + sqrt(1 - acp) noise, or x0 + sigma noise for the Euler samplers.
   */
  addNoise(x0: Tensor, noise: Tensor, stepIndex: number): Tensor;
  /** One denoising step; steps run in order. Random draws come from `generator` (CPU, like diffusers). */
  step(
    modelOutput: Tensor,
    stepIndex: number,
    sample: Tensor,
    generator?: Generator | Generator[],
  ): Promise<SchedulerStepResult>;
  /** Idempotent. */
  dispose(): void;
}

/** The training-time forward process of a DDPMScheduler config. */
export interface NoiseSchedule {
  readonly config: Record<string, SchedulerConfigValue>;
  readonly numTrainTimesteps: number;
  readonly predictionType: "epsilon" | "v_prediction" | "sample";
  /** [T] float32 (copies). */
  readonly betas: Tensor;
  readonly alphasCumprod: Tensor;
  /** sqrt(acp[t]) * x0 + sqrt(1 - acp[t]) * noise; `timesteps` int64 [B] (or one value). */
  addNoise(x0: Tensor, noise: Tensor, timesteps: Tensor): Tensor;
  /** The v-prediction target sqrt(acp[t]) * noise - sqrt(1 - acp[t]) * x0. */
  getVelocity(x0: Tensor, noise: Tensor, timesteps: Tensor): Tensor;
  /** diffusers.training_utils.compute_snr: acp / (1 - acp) at each timestep, float32. */
  snr(timesteps: Tensor): Tensor;
  /** Idempotent. */
  dispose(): void;
}
