// Resizing a LoRA (kohya sd-scripts' resize_lora): each adapter's product up @ down is
// re-decomposed by a truncated SVD (native, through QR of the factors, so the full
// matrix is never formed) to a rank, or to the fewest singular values holding a target
// energy share. The scale alpha / rank is kept, as resize_lora keeps it: the new alpha
// is (alpha / rank) * new rank.
import { checkPlainLora } from "./block_weights.js";
import { native, type ProgressEvent } from "../../native/index.js";
import type { LoraAdapter, LoraWeights } from "../formats/types.js";

export interface ResizeLoraOptions {
  /** The most singular values kept per layer (default: each layer's current rank, with `energy`). */
  rank?: number;
  /** In (0, 1]: keep the fewest singular values holding this share of sum(sigma^2) (at most `rank`). */
  energy?: number;
  /** sd-scripts' clamp of the factors at this quantile (0.99 there); default none. */
  clampQuantile?: number;
  signal?: AbortSignal;
  onProgress?: (event: ProgressEvent) => void;
}

export interface ResizedLayer {
  key: string;
  fromRank: number;
  rank: number;
  /** Kept sigma^2 / total sigma^2 of the layer's product. */
  energy: number;
}

export interface ResizeLoraResult {
  /** New LoraWeights (the input is left as it was); free with disposeLora. */
  weights: LoraWeights;
  layers: ResizedLayer[];
}

export function checkRankOptions(o: { rank?: number; energy?: number; clampQuantile?: number }, what: string): void {
  if (o.rank !== undefined && !(Number.isInteger(o.rank) && o.rank > 0))
    throw new RangeError(`${what}: rank must be a positive integer`);
  if (o.energy !== undefined && !(o.energy > 0 && o.energy <= 1))
    throw new RangeError(`${what}: energy must be in (0, 1]`);
  if (o.clampQuantile !== undefined && !(o.clampQuantile > 0 && o.clampQuantile <= 1))
    throw new RangeError(`${what}: clampQuantile must be in (0, 1]`);
}

/** Re-decomposes every adapter of `weights` to `rank` (or the `energy` target). */
export async function resizeLora(weights: LoraWeights, options: ResizeLoraOptions): Promise<ResizeLoraResult> {
  checkRankOptions(options, "resizeLora");
  checkPlainLora(weights, "resizeLora");
  if (options.rank === undefined && options.energy === undefined)
    throw new TypeError("resizeLora: give rank and/or energy");
  const adapters = new Map<string, LoraAdapter>();
  const layers: ResizedLayer[] = [];
  const warnings: string[] = [];
  let step = 0;
  try {
    for (const [key, a] of weights.adapters) {
      options.signal?.throwIfAborted();
      const r = await native().loraTools.lowRankOfProduct(a.up, a.down, 1, {
        rank: options.rank ?? a.rank,
        ...(options.energy !== undefined ? { energy: options.energy } : {}),
        ...(options.clampQuantile !== undefined ? { clampQuantile: options.clampQuantile } : {}),
      });
      r.singular.dispose();
      if (!r.up || !r.down) {
        warnings.push(`module "${key}" is all zeros (an untrained adapter) and was left out`);
        continue;
      }
      adapters.set(key, { up: r.up, down: r.down, rank: r.rank, alpha: (a.alpha / a.rank) * r.rank });
      layers.push({ key, fromRank: a.rank, rank: r.rank, energy: r.energy });
      options.onProgress?.({ phase: "lora.resize", step: ++step, total: weights.adapters.size, what: key });
    }
  } catch (error) {
    for (const a of adapters.values()) {
      a.up.dispose();
      a.down.dispose();
    }
    throw error;
  }
  // The file's fold record (diffusers / peft) describes the old factors; saveLora recomputes it.
  return { weights: { format: weights.format, adapters, metadata: { ...weights.metadata }, warnings }, layers };
}
