// Native surface: pipeline (native/bindings/pipeline_binding.cc).
import type { SchedulerParams } from "../config/scheduler.js";
import type { NativeTextEncoder } from "./clip.js";
import type { NativeUNet, NativeVAE } from "./models.js";
import type { Tensor } from "./tensor.js";

export interface NativePipelineModels {
  textEncoder: NativeTextEncoder;
  unet: NativeUNet;
  vae: NativeVAE;
}

/** One generate call, validated by src/pipeline/generate.ts. */
export interface NativeGenerateRequest {
  /** int64 [P, L]: one row per distinct prompt. */
  promptIds: Tensor;
  /** int64 [P, L]: the negative prompt of each prompt row; needed when guidanceScale > 1. */
  negativeIds?: Tensor;
  /** Per image: its prompt row. */
  imagePrompt: number[];
  /** Per image: the seed of its CPU generator (non-negative safe integers). */
  seeds: number[];
  /** [N, C, h, w] initial latents (multiplied by init_noise_sigma); default randn per image. */
  latents?: Tensor;
  latentHeight: number;
  latentWidth: number;
  steps: number;
  guidanceScale: number;
  guidanceRescale?: number;
  clipSkip?: number;
  /** Images denoised together (default 1). */
  batchSize?: number;
  /** uint8 [N, H, W, 3] (default), float32 [N, H, W, 3] in [0, 1], or only the latents. */
  output?: "uint8" | "float" | "latent";
  returnLatents?: boolean;
  /** > 0: tiled VAE decode with this tile edge in latent pixels (when the latents are larger). */
  tileSize?: number;
  tileOverlap?: number;
  sampler: string;
  /** The scheduler config resolved for `sampler` (src/config/scheduler.ts). */
  schedulerParams: SchedulerParams;
  /** Record per-step tensors (parity tests; every image in one batch). */
  capture?: boolean;
  /** Synchronize CUDA after each UNet call so timings.unet is exact (benchmarks). */
  syncTimings?: boolean;
}

export interface NativeGenerateResult {
  images?: Tensor;
  latents?: Tensor;
  /** Seconds. */
  timings: { textEncoder: number; denoise: number; unet: number; decode: number };
  /**
   * With `capture`: prompt_embeds, negative_prompt_embeds [P, L, D]; unet_input, noise_pred_raw
   * [S, 2b, C, h, w]; noise_pred_guided, latents_per_step [S, b, C, h, w]; timesteps [S]; decoded [N, 3, H, W].
   */
  captured?: Record<string, Tensor>;
}
