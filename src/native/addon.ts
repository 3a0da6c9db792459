// Native surface: the addon.
import type {
  NativeClipLoadOptions,
  NativeClipModel,
  NativeClipModelConfig,
  NativeClipTextConfig,
  NativeTextEncoder,
} from "./clip.js";
import type { SchedulerParams } from "../config/scheduler.js";
import type { NativeClipPreprocessOptions, NativeJpegJob, ResampleFilter } from "./image.js";
import type { NativeLoraOps } from "./lora.js";
import type { LoraFilesOps } from "./lora_files.js";
import type { LoraToolsOps } from "./lora_tools.js";
import type {
  NativeCallOptions,
  NativeModelLoadOptions,
  NativeUNet,
  NativeUNetConfig,
  NativeVAE,
  NativeVAEConfig,
} from "./models.js";
import type { AdamW, AdamWOptions, NativeOptimizerSpec, Optimizer } from "./optim.js";
import type { NativeGenerateRequest, NativeGenerateResult, NativePipelineModels } from "./pipeline.js";
import type { RuntimeInfo } from "./runtime.js";
import type { SafetensorsFile, SafetensorsHeader } from "./safetensors.js";
import type { Generator, NoiseSchedule, SamplerName, Scheduler } from "./sched.js";
import type { AnyTypedArray, CancelToken, DType, Tensor } from "./tensor.js";
import type { NativeTrainer, NativeTrainerOptions } from "./trainer.js";
import type { NativeProcessGroup, NativeProcessGroupOptions } from "./dist.js";

/**
 * attention: shape [batch, heads, queryLength, keyLength, headDim]; linear: [rows, in, out];
 * conv: [batch, in, out, side, kernel, stride] (padding kernel / 2).
 */
export interface KernelParityOptions {
  kernel: "attention" | "linear" | "conv";
  shape: number[];
  seed: number;
  /** linear: with a bias (default true). */
  bias?: boolean;
}

/** Largest absolute differences, ours against the reference: output, output without gradient mode, each gradient. */
export interface KernelParityReport {
  output: number;
  inferenceOutput: number;
  grads: number[];
  /** Largest absolute reference output, for relative bounds. */
  magnitude: number;
  /** Whether our kernel took the inputs on this thread (false: both sides were libtorch's). */
  used: boolean;
  /** Largest change of any input (weight, bias) after our kernel ran on it: must be 0. */
  inputsChanged: number;
  /** Milliseconds of one forward + backward after a warm-up: ours, then libtorch's (benchmarks, not tests). */
  oursMs: number;
  referenceMs: number;
}

export interface NativeAddon {
  Tensor: abstract new () => Tensor;
  tensorFromTypedArray(data: AnyTypedArray, shape: number[], dtype: DType): Tensor;
  CancelToken: new () => CancelToken;
  /** The class of safetensors.open()'s result (not constructible from JS). */
  SafetensorsFile: abstract new () => SafetensorsFile;
  safetensors: {
    inspect(path: string): Promise<SafetensorsHeader>;
    open(path: string): Promise<SafetensorsFile>;
    write(path: string, tensors: [string, Tensor][], metadata?: Record<string, string>): Promise<void>;
  };
  ops: {
    matmul(a: Tensor, b: Tensor): Promise<Tensor>;
    randn(shape: number[], options?: { seed?: number; dtype?: DType }): Tensor;
    maxAbsDiff(a: Tensor, b: Tensor): number;
    /** One of sdtune's own CPU kernels against libtorch's plain ops on seeded random inputs (tests). */
    kernelParity(options: KernelParityOptions): Promise<KernelParityReport>;
  };
  AdamW: new (params: [string, Tensor][], options?: AdamWOptions) => AdamW;
  /** Any optimizer by type: AdamW, Prodigy, Adafactor (relativeStep ignores step()'s lr) or Lion. */
  Optimizer: new (params: [string, Tensor][], options: NativeOptimizerSpec) => Optimizer;
  /** torch.nn.utils.clip_grad_norm_ in place; resolves to the norm before clipping (maxNorm <= 0 only measures). */
  clipGradNorm(grads: Tensor[], maxNorm: number): Promise<number>;
  /** Data pipeline ops (native/bindings/data_ops.cc). */
  data: {
    /** uint8 [B, H, W, 3] -> float32 [B, 3, H, W] as (v / 255 - 0.5) / 0.5, off the JS thread. */
    pixelsToTensor(pixels: Tensor): Promise<Tensor>;
    /**
     * (mean + std * noise) * scale on a cached latent distribution, with noise cast to mean's dtype and
     * device first (VAE.sample's arithmetic); mean * scale without noise; no multiply without scale.
     */
    sampleLatents(mean: Tensor, options?: { std?: Tensor; noise?: Tensor; scale?: number }): Promise<Tensor>;
  };
  /** Image ops (native/bindings/image_binding.cc). */
  image: {
    /** PIL Image.resize on packed uint8 [H, W, C] (C 1..4), bit-exact for 8-bit modes. */
    resize(pixels: Tensor, options: { width: number; height: number; filter?: ResampleFilter }): Promise<Tensor>;
    /** CLIPImageProcessor: uint8 RGB images [H, W, 3] -> float32 pixel_values [n, 3, H', W']. */
    clipPreprocess(images: Tensor[], options: NativeClipPreprocessOptions): Promise<Tensor>;
    /**
     * The data pipeline's JPEG road (native/image/jpeg_render.h): decode at a reduced DCT scale,
     * resize, EXIF-orient, crop, flip -> packed RGB [height, width, 3]; null when sharp must decode it.
     * Runs on libuv's pool, not the executor.
     */
    renderJpeg(bytes: Uint8Array, job: NativeJpegJob): Promise<Buffer | null>;
    /** Whether the addon was built with libjpeg (renderJpeg otherwise always returns null). */
    jpegAvailable: boolean;
  };
  /** Evaluation math (native/bindings/metrics_binding.cc), in the embeddings' dtype. */
  metrics: {
    /** scale * cos(a_i, b_i) per row: [n, d] x [n, d] -> [n] (CLIP score: scale 100). */
    rowCosine(a: Tensor, b: Tensor, scale?: number): Promise<Tensor>;
    /** Cosines of every pair: [n, d] x [m, d] -> [n, m]. */
    cosineMatrix(a: Tensor, b: Tensor): Promise<Tensor>;
  };
  loraFiles: LoraFilesOps;
  loraTools: LoraToolsOps;
  Generator: new (seed?: number | bigint) => Generator;
  Scheduler: {
    /** A sampler from a config resolved in TypeScript (src/config/scheduler.ts); src/sched attaches `config`. */
    create(name: string, params: SchedulerParams | Record<string, unknown>): Omit<Scheduler, "config">;
  };
  NoiseSchedule: {
    /** The noise schedule of a resolved DDPMScheduler config; src/sched attaches `config`. */
    create(params: SchedulerParams): Omit<NoiseSchedule, "config">;
  };
  samplerNames: readonly SamplerName[];
  UNet: { load(options: NativeModelLoadOptions<NativeUNetConfig>): Promise<NativeUNet> };
  VAE: { load(options: NativeModelLoadOptions<NativeVAEConfig>): Promise<NativeVAE> };
  Trainer: { create(options: NativeTrainerOptions): Promise<NativeTrainer> };
  /** Data-parallel training: the c10d rendezvous (blocks until every rank joins). */
  ProcessGroup: { connect(options: NativeProcessGroupOptions): Promise<NativeProcessGroup> };
  info(): RuntimeInfo;
  setNumThreads(threads: number): number;
  manualSeed(seed: number): void;
  TextEncoder: {
    load(
      options:
        | NativeClipLoadOptions<NativeClipTextConfig>
        | { config: NativeClipTextConfig; randomSeed: number; dtype?: DType; device?: string },
    ): Promise<NativeTextEncoder>;
  };
  pipeline: {
    /** The whole text-to-image loop off the JS thread; progress phases "denoise" and "decode". */
    generate(
      models: NativePipelineModels,
      request: NativeGenerateRequest,
      control?: NativeCallOptions,
    ): Promise<NativeGenerateResult>;
  };
  ClipModel: { load(options: NativeClipLoadOptions<NativeClipModelConfig>): Promise<NativeClipModel> };
  lora: NativeLoraOps;
}

/**
 * What each member of the addon is, declared once so a test can hold the addon to it: every key of
 * NativeAddon must appear (the mapped type makes a missing or extra key a compile error), and
 * test/native_surface.test.ts checks that the loaded addon exports exactly these members.
 */
type Member<T> = T extends readonly unknown[]
  ? "array"
  : T extends boolean
    ? "boolean"
    : T extends abstract new (...args: never[]) => unknown
      ? "class"
      : T extends (...args: never[]) => unknown
        ? "function"
        : { [K in keyof T]-?: Member<T[K]> };

export type AddonSurface = { [K in keyof NativeAddon]-?: Member<NativeAddon[K]> };

/** The addon's members, checked against the loaded addon by test/native_surface.test.ts. */
export const ADDON_SURFACE: AddonSurface = {
  Tensor: "class",
  tensorFromTypedArray: "function",
  CancelToken: "class",
  SafetensorsFile: "class",
  safetensors: { inspect: "function", open: "function", write: "function" },
  ops: { matmul: "function", randn: "function", maxAbsDiff: "function", kernelParity: "function" },
  AdamW: "class",
  Optimizer: "class",
  clipGradNorm: "function",
  data: { pixelsToTensor: "function", sampleLatents: "function" },
  image: { resize: "function", clipPreprocess: "function", renderJpeg: "function", jpegAvailable: "boolean" },
  metrics: { rowCosine: "function", cosineMatrix: "function" },
  loraFiles: { fold: "function", foldExact: "function", unfold: "function" },
  loraTools: { lowRankOfDifference: "function", lowRankOfProduct: "function", concat: "function" },
  Generator: "class",
  Scheduler: { create: "function" },
  NoiseSchedule: { create: "function" },
  samplerNames: "array",
  UNet: { load: "function" },
  VAE: { load: "function" },
  Trainer: { create: "function" },
  ProcessGroup: { connect: "function" },
  info: "function",
  setNumThreads: "function",
  manualSeed: "function",
  TextEncoder: { load: "function" },
  pipeline: { generate: "function" },
  ClipModel: { load: "function" },
  lora: {
    modules: "function",
    attach: "function",
    create: "function",
    parameters: "function",
    extract: "function",
    list: "function",
    setAdapters: "function",
    setEnabled: "function",
    remove: "function",
    fuse: "function",
    unfuse: "function",
    unetLossAndGradients: "function",
    layerForward: "function",
  },
};
