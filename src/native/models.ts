// Native surface: UNet and VAE.
import type { CancelToken, DType, ProgressEvent, Tensor } from "./tensor.js";

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
