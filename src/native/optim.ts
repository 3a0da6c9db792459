// Native surface: optimisation.
import type { Tensor } from "./tensor.js";

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
