// The in-memory form every LoRA file format loads into and saves from.
import type { Tensor } from "../../native/index.js";

/** The model a LoRA module belongs to (diffusers pipeline component names). */
export type LoraComponent = "unet" | "text_encoder" | "text_encoder_2";
export const LORA_COMPONENTS: readonly LoraComponent[] = ["unet", "text_encoder", "text_encoder_2"];

/**
 * - kohya: sd-scripts / AUTOMATIC1111 / ComfyUI keys (lora_unet_..., lora_te_..., .alpha, ss_* metadata)
 * - diffusers: what diffusers 0.27 training scripts write (unet.<path>.lora.down.weight,
 *   text_encoder.<path>.lora_linear_layer.down.weight; other modules in PEFT keys), no alpha
 * - peft: unet.<path>.lora_A.weight / lora_B.weight (newer diffusers), no alpha unless
 *   the "lora_adapter_metadata" entry says so
 * - peft_adapter: a PEFT folder (adapter_config.json + adapter_model.safetensors)
 */
export type LoraFormat = "kohya" | "diffusers" | "peft" | "peft_adapter";

/** One low-rank adapter. Its weight delta is alpha / rank * up @ down. */
export interface LoraAdapter {
  /** [rank, in] (Linear) or [rank, in, kh, kw] (Conv2d). */
  down: Tensor;
  /** [out, rank] (Linear) or [out, rank, 1, 1] (Conv2d). */
  up: Tensor;
  alpha: number;
  rank: number;
  /**
   * Set when `up` already holds a folded alpha / rank factor (alpha here then equals rank)
   * and the file recorded the alpha it had before (sdtune's diffusers/peft exports):
   * saving to kohya restores this alpha and unfolds `up` exactly.
   */
  originalAlpha?: number;
  /** With originalAlpha: the int8 correction that makes unfolding `up` bit-exact (see save.ts). Opaque. */
  foldResidual?: Tensor;
  /**
   * DoRA (peft's use_dora): the magnitude per output channel, [out]. The layer's weight becomes
   * magnitude / ||W + dW|| * (W + dW), the norm per output channel (see native/nn/lora_types.h).
   */
  magnitude?: Tensor;
}

/** The LyCORIS adapter types sdtune reads, trains and writes (besides LoRA and DoRA). */
export type LycorisType = "loha" | "lokr";

/**
 * A LyCORIS adapter, its tensors named as LyCORIS names them: LoHa hada_w1_a [out, r], hada_w1_b
 * [r, in*kh*kw], hada_w2_a, hada_w2_b (delta = (w1_a w1_b) * (w2_a w2_b) * alpha / rank); LoKr
 * lokr_w1 or lokr_w1_a + lokr_w1_b, lokr_w2 or lokr_w2_a + lokr_w2_b (delta = kron(w1, w2) * alpha / rank;
 * rank 0 when both are full: scale 1).
 */
export interface LycorisAdapter {
  type: LycorisType;
  factors: Record<string, Tensor>;
  alpha: number;
  rank: number;
}

export interface LoraWeights {
  format: LoraFormat;
  /** Keyed "<component>.<module path>", e.g. "unet.down_blocks.0.attentions.0.proj_in", in sorted order. */
  adapters: Map<string, LoraAdapter>;
  /** LoHa / LoKr modules, keyed like `adapters` (a module is in one map or the other); absent: none. */
  lycoris?: Map<string, LycorisAdapter>;
  /** The file's safetensors metadata (ss_* for kohya files), as read. */
  metadata: Record<string, string>;
  /** Things the loader accepted but the caller may want to know (never silent drops). */
  warnings: string[];
}

/** Splits "unet.down_blocks.0..." into its component and module path. */
export function splitAdapterKey(key: string): { component: LoraComponent; path: string } {
  for (const component of LORA_COMPONENTS) {
    if (key.startsWith(`${component}.`)) return { component, path: key.slice(component.length + 1) };
  }
  throw new Error(
    `LoRA adapter key "${key}" must start with one of ${LORA_COMPONENTS.map((c) => `"${c}."`).join(", ")}`,
  );
}

/** A LoRA file that cannot be read or written as asked; `problems` lists every issue found. */
export class LoraFormatError extends Error {
  override name = "LoraFormatError";
  constructor(
    readonly file: string,
    readonly problems: string[],
    summary = "cannot use this LoRA file",
  ) {
    const shown = problems.slice(0, 25).map((p) => `  - ${p}`);
    if (problems.length > shown.length) shown.push(`  - ... and ${problems.length - shown.length} more`);
    super(`${file}: ${summary}:\n${shown.join("\n")}`);
  }
}

/** Frees every tensor of a LoRA (idempotent). */
export function disposeLora(weights: LoraWeights): void {
  for (const adapter of weights.adapters.values()) {
    adapter.down.dispose();
    adapter.up.dispose();
    adapter.foldResidual?.dispose();
    adapter.magnitude?.dispose();
  }
  for (const adapter of weights.lycoris?.values() ?? []) for (const t of Object.values(adapter.factors)) t.dispose();
}

/** Modules of either kind. */
export function moduleCount(weights: LoraWeights): number {
  return weights.adapters.size + (weights.lycoris?.size ?? 0);
}
