// Load options shared by every model loader (UNet, VAE, TextEncoder, ClipModel).

/** The dtypes models run in; weights are converted at load. */
export type ModelDType = "float32" | "float16" | "bfloat16";

export const MODEL_DTYPES: readonly ModelDType[] = ["float32", "float16", "bfloat16"];

export interface ModelLoadOptions {
  /** Weights are converted to this dtype at load (default float32). */
  dtype?: ModelDType;
  /** "cpu" (default), "cuda", "cuda:N". */
  device?: string;
  /**
   * Weight file variant, e.g. "fp16" for diffusion_pytorch_model.fp16.safetensors. A folder
   * without that variant falls back to its plain weights (as diffusers does), with a warning.
   */
  variant?: string;
  /** Receives warnings (e.g. a variant fallback). Default: process.emitWarning. */
  onWarning?: (message: string) => void;
}

/** Validates dtype/device options before anything crosses to native code. */
export function checkModelOptions(options: { dtype?: string; device?: string }, what: string): void {
  if (options.dtype !== undefined && !(MODEL_DTYPES as readonly string[]).includes(options.dtype)) {
    throw new TypeError(
      `${what}: dtype "${String(options.dtype)}" is not supported (expected ${MODEL_DTYPES.join(", ")})`,
    );
  }
  if (options.device !== undefined && !/^(cpu|cuda(:\d+)?)$/.test(options.device)) {
    throw new TypeError(`${what}: device "${options.device}" is not valid (expected cpu, cuda or cuda:N)`);
  }
}

/** The warning sink of a load: the caller's, else process.emitWarning. */
export function warningSink(options: { onWarning?: (message: string) => void }): (message: string) => void {
  return options.onWarning ?? ((message) => process.emitWarning(message, { code: "SDTUNE_WARNING" }));
}
