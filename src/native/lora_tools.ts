// Native surface: LoRA tools (native/bindings/lora_tools.cc): truncated SVDs for LoRA
// extraction, resizing and merging, one layer per call.
import type { Tensor } from "./tensor.js";

export interface LowRankOptions {
  /** The most singular values kept. */
  rank: number;
  /** In (0, 1]: keep the fewest that hold this share of sum(sigma^2) (at most `rank`). */
  energy?: number;
  /** < 1: clamp both factors at this quantile of their values, as kohya's scripts do (0.99); inexact. */
  clampQuantile?: number;
  /** lowRankOfDifference: skip a layer whose ||tuned - base|| <= minDiff * ||base||. */
  minDiff?: number;
}

export interface LowRankResult {
  /** Kept rank; 0 when the layer was skipped (no difference). */
  rank: number;
  /** Kept sigma^2 / total sigma^2. */
  energy: number;
  /** ||tuned - base|| / ||base|| (lowRankOfDifference). */
  relativeNorm: number;
  /** Every singular value, float64, descending. */
  singular: Tensor;
  /** float32 [out, rank] or [out, rank, 1, 1]; sigma is folded into up. */
  up?: Tensor;
  /** float32 [rank, in] or [rank, in, kh, kw]. */
  down?: Tensor;
}

export interface LoraToolsOps {
  /** Truncated SVD of tuned - base (float32; a conv weight as [out, in*kh*kw]). */
  lowRankOfDifference(base: Tensor, tuned: Tensor, options: LowRankOptions): Promise<LowRankResult>;
  /** Truncated SVD of scale * up @ down, through QR of the factors (never forms the product). */
  lowRankOfProduct(up: Tensor, down: Tensor, scale: number, options: LowRankOptions): Promise<LowRankResult>;
  /** One float32 adapter equal to sum(scale_i * up_i @ down_i): downs stacked, scaled ups side by side. */
  concat(parts: { up: Tensor; down: Tensor; scale?: number }[]): Promise<{ up: Tensor; down: Tensor }>;
}
