// Native surface: LoRA adapters on models (native/bindings/lora_binding.cc).
import type { NativeClipModel, NativeTextEncoder } from "./clip.js";
import type { NativeUNet, NativeVAE } from "./models.js";
import type { Generator } from "./sched.js";
import type { Tensor } from "./tensor.js";

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
