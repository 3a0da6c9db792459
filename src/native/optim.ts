// Native surface: optimisation.
import type { NativeOptimizerSpec } from "../config/optimizer.js";
import type { Tensor } from "./tensor.js";

export type { NativeOptimizerSpec };

export interface AdamWOptions {
  beta1?: number;
  beta2?: number;
  eps?: number;
  weightDecay?: number;
}

/** An optimizer over named tensors (updated in place); float32 master copies for half params. */
export interface Optimizer {
  /** One update; uses each parameter's gradient, or `grads` in parameter order. */
  step(lr: number, grads?: Tensor[]): Promise<void>;
  /** Its own keys (AdamW: "<name>.exp_avg", "<name>.exp_avg_sq"), "<name>.master", "__step__" (copies). */
  stateDict(): [string, Tensor][];
  loadStateDict(state: [string, Tensor][]): void;
  readonly stepCount: number;
  dispose(): void;
}

/** torch.optim.AdamW (the Optimizer of type "adamw"). */
export type AdamW = Optimizer;
