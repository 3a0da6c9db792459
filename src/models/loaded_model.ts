// What every loaded model class (UNet, VAE, TextEncoder, ClipModel) shares: the
// native handle other native components take, where it runs, and dispose().
import type { ModelDType } from "./options.js";

interface ModelHandle {
  readonly dtype: string;
  readonly device: string;
  readonly disposed: boolean;
  dispose(): void;
}

export abstract class LoadedModel<Handle extends ModelHandle> {
  protected constructor(
    /** The native handle, for other native components (pipeline, trainer, LoRA). */
    readonly handle: Handle,
  ) {}

  get dtype(): ModelDType {
    return this.handle.dtype as ModelDType;
  }

  get device(): string {
    return this.handle.device;
  }

  get disposed(): boolean {
    return this.handle.disposed;
  }

  /** Frees the weights (idempotent); work already running keeps the model until it ends. */
  dispose(): void {
    this.handle.dispose();
  }
}
