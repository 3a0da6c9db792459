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

// ---------------------------------------------------------------- CLIP (text encoder, CLIP model)

/** CLIPTextConfig as the native loader takes it (see src/models/clip_config.ts). */
export interface NativeClipTextConfig {
  vocabSize: number;
  hiddenSize: number;
  intermediateSize: number;
  numHiddenLayers: number;
  numAttentionHeads: number;
  maxPositionEmbeddings: number;
  hiddenAct: string;
  layerNormEps: number;
  attentionDropout?: number;
  /** 2 (legacy configs): pooled row = argmax(input_ids); otherwise the first position of this id. */
  eosTokenId: number;
}

/** CLIPVisionConfig as the native loader takes it. */
export interface NativeClipVisionConfig {
  hiddenSize: number;
  intermediateSize: number;
  numHiddenLayers: number;
  numAttentionHeads: number;
  hiddenAct: string;
  layerNormEps: number;
  attentionDropout?: number;
  numChannels: number;
  imageSize: number;
  patchSize: number;
}

/** CLIPConfig as the native loader takes it. */
export interface NativeClipModelConfig {
  text: NativeClipTextConfig;
  vision: NativeClipVisionConfig;
  projectionDim: number;
  logitScaleInitValue?: number;
}

export interface NativeClipLoadOptions<Config> {
  config: Config;
  /** safetensors files holding the checkpoint (several when sharded). */
  files: string[];
  /** float32 (default), float16 or bfloat16. */
  dtype?: DType;
  /** "cpu" (default), "cuda", "cuda:N". */
  device?: string;
  /** Checkpoint keys with these prefixes are skipped (position_ids buffers always are). */
  ignorePrefixes?: string[];
}

export interface TextEncoderForwardOptions {
  /** Also return every hidden state: [0] = embeddings, [i] = output of layer i (no final LayerNorm). */
  outputHiddenStates?: boolean;
  /** [n, L], 1 = token, 0 = padding. The SD pipeline passes none. */
  attentionMask?: Tensor;
  /** k > 0: lastHiddenState = final_layer_norm(hiddenStates[-(k+1)]) (diffusers' clip_skip); pooled from it. */
  clipSkip?: number;
}

export interface TextEncoderOutput {
  /** [n, L, hidden], after final_layer_norm: the prompt embeddings. */
  lastHiddenState: Tensor;
  /** num_hidden_layers + 1 tensors [n, L, hidden], when asked for. */
  hiddenStates?: Tensor[];
  /** [n, hidden]: lastHiddenState at the end-of-text token. */
  pooledOutput: Tensor;
}

/** A loaded CLIPTextModel (native/bindings/text_encoder_binding.cc). */
export interface NativeTextEncoder {
  forward(inputIds: Tensor, options?: TextEncoderForwardOptions): Promise<TextEncoderOutput>;
  /** loss = sum(lastHiddenState) (float32) and its gradients for the named parameters (others stay frozen). */
  lossAndGradients(
    inputIds: Tensor,
    options: { parameters: string[]; attentionMask?: Tensor; clipSkip?: number },
  ): Promise<{ loss: number; gradients: Record<string, Tensor> }>;
  /** Recompute each encoder layer in backward instead of keeping activations (same gradients). */
  setGradientCheckpointing(on: boolean): void;
  readonly gradientCheckpointing: boolean;
  readonly dtype: DType;
  readonly device: string;
  readonly disposed: boolean;
  /** Idempotent; running work keeps the model until it ends. */
  dispose(): void;
}

/** A loaded CLIPModel (native/bindings/clip_binding.cc). */
export interface NativeClipModel {
  /** text_projection(pooled text output): [n, projection_dim]. */
  getTextFeatures(inputIds: Tensor, attentionMask?: Tensor): Promise<Tensor>;
  /** visual_projection(post-LN class token): pixelValues [n, 3, S, S] -> [n, projection_dim]. */
  getImageFeatures(pixelValues: Tensor): Promise<Tensor>;
  /** The stored logit_scale (logits use exp of it). */
  readonly logitScale: number;
  readonly dtype: DType;
  readonly device: string;
  readonly disposed: boolean;
  dispose(): void;
}

// ---------------------------------------------------------------- images and evaluation

/** PIL's convolution filters (Image.resize); PIL numbers 1..5 in preprocessor configs. */
export type ResampleFilter = "bicubic" | "bilinear" | "lanczos" | "box" | "hamming";

/** CLIPImageProcessor settings as native/image/clip_preprocess.h takes them. */
export interface NativeClipPreprocessOptions {
  doResize?: boolean;
  /** size {"shortest_edge": n}; or height + width for size {"height", "width"}. */
  shortestEdge?: number;
  height?: number;
  width?: number;
  /** PIL resample number (3 = BICUBIC). */
  resample?: number;
  doCenterCrop?: boolean;
  cropHeight?: number;
  cropWidth?: number;
  doRescale?: boolean;
  rescaleFactor?: number;
  doNormalize?: boolean;
  mean?: number[];
  std?: number[];
}

// ---------------------------------------------------------------- optimisation

export interface AdamWOptions {
  beta1?: number;
  beta2?: number;
  eps?: number;
  weightDecay?: number;
}

/** torch.optim.AdamW over named tensors (updated in place); float32 master copies for half params. */
export interface AdamW {
  /** One update; uses each parameter's gradient, or `grads` in parameter order. */
  step(lr: number, grads?: Tensor[]): Promise<void>;
  /** "<name>.exp_avg", "<name>.exp_avg_sq", "<name>.master", "__step__" (copies). */
  stateDict(): [string, Tensor][];
  loadStateDict(state: [string, Tensor][]): void;
  readonly stepCount: number;
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
  AdamW: new (params: [string, Tensor][], options?: AdamWOptions) => AdamW;
  /** torch.nn.utils.clip_grad_norm_ in place; resolves to the norm before clipping (maxNorm <= 0 only measures). */
  clipGradNorm(grads: Tensor[], maxNorm: number): Promise<number>;
  /** Data pipeline ops (native/bindings/data_ops.cc). */
  data: {
    /** uint8 [B, H, W, 3] -> float32 [B, 3, H, W] as (v / 255 - 0.5) / 0.5, off the JS thread. */
    pixelsToTensor(pixels: Tensor): Promise<Tensor>;
  };
  /** Image ops (native/bindings/image_binding.cc). */
  image: {
    /** PIL Image.resize on packed uint8 [H, W, C] (C 1..4), bit-exact for 8-bit modes. */
    resize(pixels: Tensor, options: { width: number; height: number; filter?: ResampleFilter }): Promise<Tensor>;
    /** CLIPImageProcessor: uint8 RGB images [H, W, 3] -> float32 pixel_values [n, 3, H', W']. */
    clipPreprocess(images: Tensor[], options: NativeClipPreprocessOptions): Promise<Tensor>;
  };
  /** Evaluation math (native/bindings/metrics_binding.cc), in the embeddings' dtype. */
  metrics: {
    /** scale * cos(a_i, b_i) per row: [n, d] x [n, d] -> [n] (CLIP score: scale 100). */
    rowCosine(a: Tensor, b: Tensor, scale?: number): Promise<Tensor>;
    /** Cosines of every pair: [n, d] x [m, d] -> [n, m]. */
    cosineMatrix(a: Tensor, b: Tensor): Promise<Tensor>;
  };
  info(): RuntimeInfo;
  setNumThreads(threads: number): number;
  manualSeed(seed: number): void;
  TextEncoder: { load(options: NativeClipLoadOptions<NativeClipTextConfig>): Promise<NativeTextEncoder> };
  ClipModel: { load(options: NativeClipLoadOptions<NativeClipModelConfig>): Promise<NativeClipModel> };
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
