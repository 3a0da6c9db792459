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
  /** Every weight by checkpoint key: views of the live tensors (fused LoRA shows), no copy. */
  stateDict(): Promise<[string, Tensor][]>;
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
  /** Every weight by checkpoint key: views of the live tensors, no copy. */
  stateDict(): Promise<[string, Tensor][]>;
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

// ---------------------------------------------------------------- LoRA files (native/bindings/lora_files.cc)

export interface LoraFilesOps {
  /** tensor * factor in the tensor's dtype, rounded as PyTorch rounds `tensor * python_float`. */
  fold(tensor: Tensor, factor: number): Promise<Tensor>;
  /**
   * fold, plus what makes it invertible: `residual` (int8, the tensor's shape) is the original's
   * bit pattern minus unfold(folded)'s, non-zero only where two floats fold to one value.
   */
  foldExact(tensor: Tensor, factor: number): Promise<{ folded: Tensor; residual: Tensor; nonzero: number }>;
  /**
   * The inverse of fold: x with fold(x, factor) == tensor for every element where such an x
   * exists (`inexact` counts those where none does); with foldExact's residual, the original.
   */
  unfold(tensor: Tensor, factor: number, residual?: Tensor): Promise<{ tensor: Tensor; inexact: number }>;
}

// ---------------------------------------------------------------- schedulers and random numbers

/** Sampler names; see src/sched and the README section "Samplers". */
export type SamplerName =
  "ddpm" | "ddim" | "pndm" | "euler" | "euler_ancestral" | "dpmpp_2m" | "dpmpp_2m_karras" | "dpm_multistep";

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
  /** Every weight by checkpoint key: views of the live tensors (fused LoRA shows), no copy. */
  stateDict(): Promise<[string, Tensor][]>;
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
  /** Every weight by checkpoint key: views of the live tensors, no copy. */
  stateDict(): Promise<[string, Tensor][]>;
  readonly dtype: DType;
  readonly device: string;
  readonly disposed: boolean;
  dispose(): void;
}

// ---------------------------------------------------------------- pipeline (native/bindings/pipeline_binding.cc)

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
  schedulerConfig: Record<string, unknown>;
  schedulerOverrides?: Record<string, unknown>;
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

// ---------------------------------------------------------------- training (native/bindings/trainer_binding.cc)

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

// ---------------------------------------------------------------- LoRA adapters on models (native/bindings/lora_binding.cc)

/** A loaded model whose Linear / Conv2d layers take LoRA adapters. */
export type NativeAdaptableModel = NativeUNet | NativeTextEncoder | NativeClipModel | NativeVAE;

/** One adapter's weights for one layer; `path` is the module path (checkpoint key without ".weight"). */
export interface NativeLoraAdapterWeights {
  path: string;
  /** [rank, in] (Linear) or [rank, in, kh, kw] (Conv2d). */
  down: Tensor;
  /** [out, rank] (Linear) or [out, rank, 1, 1] (Conv2d). */
  up: Tensor;
  alpha: number;
}

/** gaussian: A ~ N(0, 1/r^2), B = 0 (diffusers scripts); kaiming: peft's default, B = 0; random: A and B kaiming (non-zero). */
export type LoraInit = "gaussian" | "kaiming" | "random";

export interface NativeLoraCreateOptions {
  /** Module paths of the target layers (already matched). */
  paths: string[];
  rank: number;
  /** Default: rank. */
  alpha?: number;
  dropout?: number;
  multiplier?: number;
  init?: LoraInit;
  /** CPU generator for the init draws (default: the global one, see manualSeed). */
  generator?: Generator;
  /** Put before paths in errors, e.g. "unet.". */
  keyPrefix?: string;
}

export interface LoraAdapterInfo {
  name: string;
  layers: number;
  minRank: number;
  maxRank: number;
  multiplier: number;
  /** In the active set and the model's LoRA not disabled. */
  enabled: boolean;
  /** Layers where it is fused into the weights (0 or all). */
  fusedLayers: number;
  trainable: boolean;
}

export interface NativeLoraOps {
  /** Every submodule: kind "linear", "conv2d" (adaptable) or the native class name. */
  modules(model: NativeAdaptableModel): { path: string; kind: string }[];
  /** Adds adapter `name` (copied to float32 on the model's device); one error lists every misfit and unmatched path. */
  attach(
    model: NativeAdaptableModel,
    name: string,
    adapters: NativeLoraAdapterWeights[],
    options?: { multiplier?: number; dropout?: number; trainable?: boolean; keyPrefix?: string },
  ): Promise<void>;
  /** New trainable float32 adapters; resolves to their live tensors ("<path>.lora_A.weight", ".lora_B.weight"). */
  create(model: NativeAdaptableModel, name: string, options: NativeLoraCreateOptions): Promise<[string, Tensor][]>;
  /** The live tensors of adapter `name` (peft names, module order): an optimizer updates them in place. */
  parameters(model: NativeAdaptableModel, name: string): Promise<[string, Tensor][]>;
  /** Copies of adapter `name`'s weights. */
  extract(model: NativeAdaptableModel, name: string): Promise<NativeLoraAdapterWeights[]>;
  list(model: NativeAdaptableModel): Promise<LoraAdapterInfo[]>;
  /** diffusers' set_adapters: exactly `names` active, with these multipliers. */
  setAdapters(model: NativeAdaptableModel, names: string[], weights: number[]): Promise<void>;
  /** diffusers' enable_lora / disable_lora. */
  setEnabled(model: NativeAdaptableModel, enabled: boolean): Promise<void>;
  /** Resolves to the number of layers it was on. */
  remove(model: NativeAdaptableModel, name: string): Promise<number>;
  /** W += scale * multiplier * alpha / rank * up @ down (float32 sum, one rounding); resolves to layers changed. */
  fuse(
    model: NativeAdaptableModel,
    options?: { names?: string[]; scale?: number; permanent?: boolean },
  ): Promise<number>;
  /** Restores every fused layer bit for bit; resolves to layers restored. */
  unfuse(model: NativeAdaptableModel): Promise<number>;
  /** mse(unet(...), target) and the gradients of adapter `name` (a diagnostic; the base stays frozen). */
  unetLossAndGradients(
    unet: NativeUNet,
    sample: Tensor,
    timestep: Tensor | number,
    encoderHiddenStates: Tensor,
    target: Tensor,
    name: string,
  ): Promise<{ loss: Tensor; output: Tensor; grads: [string, Tensor][]; frozenWithGrad: string[] }>;
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
  };
  /** Evaluation math (native/bindings/metrics_binding.cc), in the embeddings' dtype. */
  metrics: {
    /** scale * cos(a_i, b_i) per row: [n, d] x [n, d] -> [n] (CLIP score: scale 100). */
    rowCosine(a: Tensor, b: Tensor, scale?: number): Promise<Tensor>;
    /** Cosines of every pair: [n, d] x [m, d] -> [n, m]. */
    cosineMatrix(a: Tensor, b: Tensor): Promise<Tensor>;
  };
  loraFiles: LoraFilesOps;
  Generator: new (seed?: number | bigint) => Generator;
  Scheduler: {
    /** A sampler from a raw scheduler config plus overrides (diffusers from_config semantics). */
    create(name: string, config: Record<string, unknown>, overrides?: Record<string, unknown>): Scheduler;
  };
  NoiseSchedule: {
    /** DDPMScheduler.from_config(config, **overrides)'s noise schedule. */
    create(config: Record<string, unknown>, overrides?: Record<string, unknown>): NoiseSchedule;
  };
  samplerNames: readonly SamplerName[];
  UNet: { load(options: NativeModelLoadOptions<NativeUNetConfig>): Promise<NativeUNet> };
  VAE: { load(options: NativeModelLoadOptions<NativeVAEConfig>): Promise<NativeVAE> };
  Trainer: { create(options: NativeTrainerOptions): Promise<NativeTrainer> };
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
