// Options every model loader shares (UNet, VAE, text encoder, CLIP), checked in
// TypeScript before anything crosses into native code.

/** The dtypes weights can be loaded in. */
export type ModelDType = "float32" | "float16" | "bfloat16";

export const MODEL_DTYPES: readonly ModelDType[] = ["float32", "float16", "bfloat16"];

export interface ModelLoadOptions {
  /** Weights are converted to this dtype at load (default float32). */
  dtype?: ModelDType;
  /** "cpu" (default), "cuda", "cuda:N". */
  device?: string;
  /** Weight file variant, e.g. "fp16" for diffusion_pytorch_model.fp16.safetensors. */
  variant?: string;
}

/** Throws a TypeError naming `what` for an unsupported dtype or a malformed device. */
export function checkLoadOptions(options: { dtype?: string; device?: string }, what: string): void {
  if (options.dtype !== undefined && !(MODEL_DTYPES as readonly string[]).includes(options.dtype)) {
    throw new TypeError(
      `${what}: dtype "${String(options.dtype)}" is not supported (expected ${MODEL_DTYPES.join(", ")})`,
    );
  }
  if (options.device !== undefined && !/^(cpu|cuda(:\d+)?)$/.test(options.device)) {
    throw new TypeError(`${what}: device "${options.device}" is not valid (expected cpu, cuda or cuda:N)`);
  }
}
