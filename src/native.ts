// The one place that loads the addon, and the whole native surface typed in one file.
// Everything here mirrors native/bindings/*.cc; keep the two in step.
import { existsSync, readdirSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

// ---------------------------------------------------------------- tensors

export type DType =
  "float32" | "float16" | "bfloat16" | "float64" | "int64" | "int32" | "int16" | "int8" | "uint8" | "bool";

/** The typed array that carries each dtype (float16/bfloat16 as raw bits). */
export interface TypedArrayOf {
  float32: Float32Array;
  float64: Float64Array;
  float16: Uint16Array;
  bfloat16: Uint16Array;
  int64: BigInt64Array;
  int32: Int32Array;
  int16: Int16Array;
  int8: Int8Array;
  uint8: Uint8Array;
  bool: Uint8Array;
}
export type AnyTypedArray = TypedArrayOf[DType];

/** A handle on one native tensor. Memory is freed by dispose() (idempotent) or by GC. */
export interface Tensor {
  readonly dtype: DType;
  readonly shape: number[];
  /** "cpu", "cuda:0", ... */
  readonly device: string;
  readonly numel: number;
  readonly disposed: boolean;
  /**
   * A typed array over the tensor's memory (zero-copy for contiguous CPU tensors,
   * otherwise over a contiguous CPU copy). It is a view: later in-place changes show.
   */
  toTypedArray(): AnyTypedArray;
  /** A copy with another dtype and/or device. */
  to(options: { dtype?: DType; device?: string }): Promise<Tensor>;
  clone(): Tensor;
  reshape(shape: number[]): Tensor;
  dispose(): void;
}

export interface CancelToken {
  cancel(): void;
  readonly cancelled: boolean;
}

export interface ProgressEvent {
  phase: string;
  step: number;
  total: number;
  [value: string]: number | string;
}

// ---------------------------------------------------------------- safetensors

/** dtype names as the safetensors format writes them. */
export type SafetensorsDType = "F64" | "F32" | "F16" | "BF16" | "I64" | "I32" | "I16" | "I8" | "U8" | "BOOL";

export interface SafetensorsTensorInfo {
  name: string;
  dtype: SafetensorsDType;
  shape: number[];
  /** [begin, end) relative to the start of the data area. */
  dataOffsets: [number, number];
}

export interface SafetensorsHeader {
  headerSize: number;
  fileSize: number;
  metadata: Record<string, string>;
  tensors: SafetensorsTensorInfo[];
}

export interface SafetensorsFile {
  readonly path: string;
  readonly header: SafetensorsHeader;
  /** A tensor over the mapped file; pages load when first touched. */
  get(name: string): Tensor;
  /** Drops this handle's share of the mapping; tensors already taken stay valid. */
  dispose(): void;
}

// ---------------------------------------------------------------- runtime

export interface RuntimeInfo {
  libtorchVersion: string;
  torchSource: string;
  threads: number;
  interopThreads: number;
  cores: number;
  blasLibraries: string[];
  parallelInfo: string;
  buildConfig: string;
  cuda: {
    built: boolean;
    available: boolean;
    devices: { index: number; name: string; capability: string; memoryBytes: number }[];
  };
}

// ---------------------------------------------------------------- UNet and VAE

/** UNet2DConditionModel config as the native loader takes it: resolved per block (see src/models/config.ts). */
export interface NativeUNetConfig {
  inChannels: number;
  outChannels: number;
  blockOutChannels: number[];
  downBlockTypes: ("CrossAttnDownBlock2D" | "DownBlock2D")[];
  upBlockTypes: ("CrossAttnUpBlock2D" | "UpBlock2D")[];
  /** null: no mid block. */
  midBlockType: "UNetMidBlock2DCrossAttn" | null;
  /** Per down block; the up blocks read them reversed (with one more resnet each), the mid block the last one. */
  layersPerBlock: number[];
  /** Heads per block (diffusers' legacy `attention_head_dim`); head dim = channels / heads. */
  numAttentionHeads: number[];
  crossAttentionDim: number[];
  transformerLayersPerBlock: number[];
  onlyCrossAttention: boolean[];
  useLinearProjection: boolean;
  upcastAttention: boolean;
  normNumGroups: number;
  normEps: number;
  actFn: string;
  flipSinToCos: boolean;
  freqShift: number;
  resnetTimeScaleShift: "default" | "scale_shift";
  centerInputSample: boolean;
  downsamplePadding: number;
  midBlockScaleFactor: number;
  dropout: number;
  convInKernel: number;
  convOutKernel: number;
  /** null: 4 * blockOutChannels[0]. */
  timeEmbeddingDim: number | null;
  timeEmbeddingActFn: string | null;
  timestepPostAct: string | null;
}

/** AutoencoderKL config as the native loader takes it. */
export interface NativeVAEConfig {
  inChannels: number;
  outChannels: number;
  latentChannels: number;
  blockOutChannels: number[];
  downBlockTypes: "DownEncoderBlock2D"[];
  upBlockTypes: "UpDecoderBlock2D"[];
  layersPerBlock: number;
  normNumGroups: number;
  actFn: string;
  scalingFactor: number;
  midBlockAddAttention: boolean;
}

export interface NativeModelLoadOptions<Config> {
  config: Config;
  /** safetensors files holding the checkpoint (several when sharded); or give randomSeed instead. */
  files?: string[];
  /** No files: a seeded random init (tests, benchmarks). */
  randomSeed?: number;
  /** float32 (default), float16 or bfloat16: weights are converted at load. */
  dtype?: DType;
  /** "cpu" (default), "cuda", "cuda:N". */
  device?: string;
}

export interface ParameterInfo {
  name: string;
  shape: number[];
  dtype: DType;
  requiresGrad: boolean;
}

export interface UNetLossAndGradients {
  /** mse(output, target), mean over all elements, float32, 0-dim. */
  loss: Tensor;
  output: Tensor;
  /** d loss / d parameter, by parameter name (the checkpoint key). */
  grads: Record<string, Tensor>;
}

/** A loaded UNet2DConditionModel (native/bindings/unet_binding.cc). Inputs are cast to the model's dtype and device. */
export interface NativeUNet {
  /** sample [B, C, H, W]; timestep: number, 0-dim or [B] tensor (int or float); ehs [B, L, D] -> [B, out, H, W]. */
  forward(sample: Tensor, timestep: Tensor | number, encoderHiddenStates: Tensor): Promise<Tensor>;
  /** forward, plus the outputs of conv_in, time_proj, time_embedding, down_blocks.N, mid_block, up_blocks.N, conv_norm_out. */
  forwardWithIntermediates(
    sample: Tensor,
    timestep: Tensor | number,
    encoderHiddenStates: Tensor,
  ): Promise<{ output: Tensor; intermediates: Record<string, Tensor> }>;
  /** The mse loss against target and the gradient of every parameter (all temporarily trainable). */
  lossAndGradients(
    sample: Tensor,
    timestep: Tensor | number,
    encoderHiddenStates: Tensor,
    target: Tensor,
  ): Promise<UNetLossAndGradients>;
  /** Recompute each resnet / transformer block in backward instead of keeping activations (same gradients). */
  setGradientCheckpointing(enabled: boolean): void;
  readonly gradientCheckpointing: boolean;
  parameterInfo(): ParameterInfo[];
  readonly dtype: DType;
  readonly device: string;
  readonly disposed: boolean;
  /** Idempotent; running work keeps the model until it ends. */
  dispose(): void;
}

export interface NativeCallOptions {
  onProgress?: (event: ProgressEvent) => void;
  cancel?: CancelToken;
}

export interface LatentDistribution {
  /** quant_conv output [B, 2*latent, h, w] = cat(mean, logvar) before clamping. */
  moments: Tensor;
  mean: Tensor;
  /** Clamped to [-30, 20]. */
  logvar: Tensor;
  /** exp(0.5 * logvar). */
  std: Tensor;
}

/** A loaded AutoencoderKL (native/bindings/vae_binding.cc). Runs one image at a time. */
export interface NativeVAE {
  /** images in [-1, 1], [B, 3, H, W]. */
  encode(images: Tensor, options?: NativeCallOptions): Promise<LatentDistribution>;
  /** mean + std * noise (noise given, or randn from a CPU generator seeded with `seed`); times scalingFactor when `scaled`. */
  sample(
    images: Tensor,
    options?: NativeCallOptions & { seed?: number; noise?: Tensor; scaled?: boolean },
  ): Promise<Tensor>;
  /**
   * Latents [B, latent, h, w] (divided by scalingFactor first when `scaled`) -> images [B, 3, h*f, w*f];
   * tileSize (latent px) decodes in cross-faded tiles.
   */
  decode(
    latents: Tensor,
    options?: NativeCallOptions & { scaled?: boolean; tileSize?: number; tileOverlap?: number },
  ): Promise<Tensor>;
  readonly scalingFactor: number;
  /** Spatial factor between images and latents (8 for SD). */
  readonly scaleFactor: number;
  readonly dtype: DType;
  readonly device: string;
  readonly disposed: boolean;
  dispose(): void;
}

// ---------------------------------------------------------------- the addon

export interface NativeAddon {
  Tensor: abstract new () => Tensor;
  tensorFromTypedArray(data: AnyTypedArray, shape: number[], dtype: DType): Tensor;
  CancelToken: new () => CancelToken;
  safetensors: {
    inspect(path: string): Promise<SafetensorsHeader>;
    open(path: string): Promise<SafetensorsFile>;
    write(path: string, tensors: [string, Tensor][], metadata?: Record<string, string>): Promise<void>;
  };
  ops: {
    matmul(a: Tensor, b: Tensor): Promise<Tensor>;
    randn(shape: number[], options?: { seed?: number; dtype?: DType }): Tensor;
    maxAbsDiff(a: Tensor, b: Tensor): number;
  };
  UNet: { load(options: NativeModelLoadOptions<NativeUNetConfig>): Promise<NativeUNet> };
  VAE: { load(options: NativeModelLoadOptions<NativeVAEConfig>): Promise<NativeVAE> };
  info(): RuntimeInfo;
  setNumThreads(threads: number): number;
  manualSeed(seed: number): void;
}

// ---------------------------------------------------------------- loading

const packageRoot = join(dirname(fileURLToPath(import.meta.url)), "..");

/** Where the addon is looked for, in order. */
export function addonCandidates(): string[] {
  const candidates: string[] = [];
  if (process.env.SDTUNE_ADDON) candidates.push(process.env.SDTUNE_ADDON);
  candidates.push(join(packageRoot, "build", "Release", "sdtune.node"));
  const prebuilds = join(packageRoot, "prebuilds", `${process.platform}-${process.arch}`);
  if (existsSync(prebuilds)) {
    for (const name of readdirSync(prebuilds).sort()) {
      if (name.endsWith(".node")) candidates.push(join(prebuilds, name));
    }
  }
  return candidates;
}

let loaded: { addon: NativeAddon; path: string } | undefined;

/** The addon, loaded on first use. Throws an Error that says how to build it. */
export function native(): NativeAddon {
  return load().addon;
}

/** The file the addon was loaded from. */
export function addonPath(): string {
  return load().path;
}

function load(): { addon: NativeAddon; path: string } {
  if (loaded) return loaded;
  const require = createRequire(import.meta.url);
  const candidates = addonCandidates();
  const path = candidates.find((candidate) => existsSync(candidate));
  if (!path) {
    throw new Error(
      `sdtune: the native addon is not built (looked in ${candidates.join(", ")}). ` +
        "Run `npm run bootstrap` in the sdtune folder: it installs libtorch and builds the addon.",
    );
  }
  try {
    loaded = { addon: require(path) as NativeAddon, path };
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    throw new Error(
      `sdtune: cannot load the native addon ${path}: ${message}. ` +
        "If libtorch changed since it was built, rebuild with `npm run build:native`.",
    );
  }
  return loaded;
}
