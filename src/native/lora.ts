// Native surface: LoRA adapters on models (native/bindings/lora_binding.cc).
import type { NativeClipModel, NativeTextEncoder } from "./clip.js";
import type { NativeUNet, NativeVAE } from "./models.js";
import type { Generator } from "./sched.js";
import type { Tensor } from "./tensor.js";

/** A loaded model whose Linear / Conv2d layers take LoRA adapters. */
export type NativeAdaptableModel = NativeUNet | NativeTextEncoder | NativeClipModel | NativeVAE;

/** lora; dora (peft's weight-decomposed LoRA); loha, lokr (LyCORIS' Hadamard / Kronecker products). */
export type LoraType = "lora" | "dora" | "loha" | "lokr";

/** One adapter's weights for one layer; `path` is the module path (checkpoint key without ".weight"). */
export interface NativeLoraAdapterWeights {
  path: string;
  /** [rank, in] (Linear) or [rank, in, kh, kw] (Conv2d); lora and dora only. */
  down?: Tensor;
  /** [out, rank] (Linear) or [out, rank, 1, 1] (Conv2d); lora and dora only. */
  up?: Tensor;
  alpha: number;
  /** Default lora. */
  type?: LoraType;
  /** dora: {magnitude: [out]}; loha: hada_w1_a, hada_w1_b, hada_w2_a, hada_w2_b; lokr: lokr_w1 or lokr_w1_a + _b, lokr_w2 or lokr_w2_a + _b. */
  factors?: Record<string, Tensor>;
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
  /** Default lora. */
  type?: LoraType;
  /** lokr: LyCORIS' factor (-1: split each dimension as evenly as possible). */
  factor?: number;
  /** lokr: LyCORIS' decompose_both. */
  decomposeBoth?: boolean;
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
  type: LoraType;
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
  /** One layer's output (eval mode) with its adapters, and the gradients of sum(output * gradOutput) for adapter `name` there (a diagnostic). */
  layerForward(
    model: NativeAdaptableModel,
    path: string,
    name: string,
    x: Tensor,
    gradOutput: Tensor,
  ): Promise<{ output: Tensor; grads: [string, Tensor][] }>;
}
