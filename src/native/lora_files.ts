// Native surface: LoRA files (native/bindings/lora_files.cc).
import type { Tensor } from "./tensor.js";

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
