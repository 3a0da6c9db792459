// Stable Diffusion's AutoencoderKL: a diffusers vae/ folder
// (config.json + diffusion_pytorch_model[.variant].safetensors), run natively.
import { join } from "node:path";

import { native, type LatentDistribution, type NativeVAE, type ProgressEvent, type Tensor } from "../native/index.js";
import { cancelTokenFor } from "../tensor.js";
import { nativeVAEConfig, parseVAEConfig, type VAEConfig } from "./config.js";
import { LoadedModel } from "./loaded_model.js";
import { modelFile, readJsonFile, resolveWeightFiles } from "./files.js";
import { checkModelOptions, warningSink, type ModelLoadOptions } from "./options.js";
import { explainedLoad } from "./single_file/source.js";
import { checkModelMemory, vaeParameters } from "./memory.js";

export type VAELoadOptions = ModelLoadOptions;

export interface VAECallOptions {
  /** Called after each image ("vae.encode" / "vae.decode", step = images done). */
  onProgress?: (event: ProgressEvent) => void;
  /** Stops between images; the promise rejects with an AbortError. */
  signal?: AbortSignal;
}

export interface VAEDecodeOptions extends VAECallOptions {
  /** The latents are in the UNet's space (multiplied by scalingFactor): divide them back first, as the pipeline does. */
  scaled?: boolean;
  /**
   * Decode in overlapping tiles of this many latent pixels, cross-faded at the seams
   * (diffusers' tiled_decode), when the latents are larger than one tile.
   */
  tileSize?: number;
  /** Fraction of a tile shared with its neighbour (default 0.25, as diffusers). */
  tileOverlap?: number;
}

export class VAE extends LoadedModel<NativeVAE> {
  private constructor(
    handle: NativeVAE,
    /** The parsed config.json, with diffusers' defaults filled in. */
    readonly config: VAEConfig,
    readonly path: string | undefined,
  ) {
    super(handle);
  }

  /** Loads a diffusers vae/ folder. */
  static async load(dir: string, options: VAELoadOptions = {}): Promise<VAE> {
    checkModelOptions(options, "VAE.load");
    const configPath = join(dir, "config.json");
    const config = parseVAEConfig(readJsonFile(modelFile(configPath)), configPath);
    checkModelMemory(
      `${dir}: the VAE`,
      vaeParameters(nativeVAEConfig(config)),
      options.dtype ?? "float32",
      options.device ?? "cpu",
    );
    const files = resolveWeightFiles(dir, { variant: options.variant, onWarning: warningSink(options) });
    const handle = await explainedLoad(
      dir,
      native().VAE.load({
        config: nativeVAEConfig(config),
        files,
        dtype: options.dtype ?? "float32",
        device: options.device ?? "cpu",
      }),
    );
    return new VAE(handle, config, dir);
  }

  /** A randomly initialised VAE (seeded) for a config object: tests and benchmarks. */
  static async fromConfig(
    raw: unknown,
    options: { seed?: number; dtype?: VAELoadOptions["dtype"]; device?: string } = {},
  ): Promise<VAE> {
    checkModelOptions(options, "VAE.fromConfig");
    const config = parseVAEConfig(raw, "VAE.fromConfig config");
    checkModelMemory(
      "VAE.fromConfig",
      vaeParameters(nativeVAEConfig(config)),
      options.dtype ?? "float32",
      options.device ?? "cpu",
    );
    const handle = await native().VAE.load({
      config: nativeVAEConfig(config),
      randomSeed: options.seed ?? 0,
      dtype: options.dtype ?? "float32",
      device: options.device ?? "cpu",
    });
    return new VAE(handle, config, undefined);
  }

  /** Latents are multiplied by this for the UNet (decode divides them back). */
  get scalingFactor(): number {
    return this.handle.scalingFactor;
  }

  /** Image pixels per latent pixel (8 for Stable Diffusion). */
  get scaleFactor(): number {
    return this.handle.scaleFactor;
  }

  /** The latent distribution of images in [-1, 1], [B, in_channels, H, W] (H, W multiples of scaleFactor). */
  async encode(images: Tensor, options: VAECallOptions = {}): Promise<LatentDistribution> {
    this.checkImages(images);
    return this.handle.encode(images, nativeCall(options));
  }

  /**
   * A draw from the latent distribution: mean + std * noise, with `noise` given or drawn from a
   * CPU generator seeded with `seed` (as torch.Generator().manual_seed(seed)). `scaled`: multiplied
   * by scalingFactor, i.e. the UNet's latents for training.
   */
  async sample(
    images: Tensor,
    options: VAECallOptions & { seed?: number; noise?: Tensor; scaled?: boolean } = {},
  ): Promise<Tensor> {
    this.checkImages(images);
    if (options.seed !== undefined && (!Number.isSafeInteger(options.seed) || options.seed < 0)) {
      throw new RangeError(`VAE.sample: seed ${options.seed} must be a non-negative integer`);
    }
    return this.handle.sample(images, {
      ...nativeCall(options),
      seed: options.seed,
      noise: options.noise,
      scaled: options.scaled,
    });
  }

  /** Images (about [-1, 1]) from latents [B, latent_channels, h, w]; pass `scaled` for the UNet's latents. */
  async decode(latents: Tensor, options: VAEDecodeOptions = {}): Promise<Tensor> {
    const c = this.config;
    if (latents.shape.length !== 4 || latents.shape[1] !== c.latent_channels) {
      throw new TypeError(
        `VAE: latents must be [batch, ${c.latent_channels}, height, width] (got [${latents.shape.join(", ")}])`,
      );
    }
    if (options.tileSize !== undefined && (!Number.isInteger(options.tileSize) || options.tileSize <= 0)) {
      throw new RangeError(`VAE.decode: tileSize ${options.tileSize} must be a positive integer`);
    }
    if (options.tileOverlap !== undefined && !(options.tileOverlap >= 0 && options.tileOverlap < 1)) {
      throw new RangeError(`VAE.decode: tileOverlap ${options.tileOverlap} must be in [0, 1)`);
    }
    return this.handle.decode(latents, {
      ...nativeCall(options),
      scaled: options.scaled,
      tileSize: options.tileSize,
      tileOverlap: options.tileOverlap,
    });
  }

  /** Every weight by checkpoint key: views of the live tensors (fused LoRA shows, unfused adapters do not), no copy. */
  stateDict(): Promise<[string, Tensor][]> {
    return this.handle.stateDict();
  }

  private checkImages(images: Tensor): void {
    const c = this.config;
    if (images.shape.length !== 4 || images.shape[1] !== c.in_channels) {
      throw new TypeError(
        `VAE: images must be [batch, ${c.in_channels}, height, width] (got [${images.shape.join(", ")}])`,
      );
    }
  }
}

/** VAE.load as a function. */
export function loadVAE(dir: string, options: VAELoadOptions = {}): Promise<VAE> {
  return VAE.load(dir, options);
}

function nativeCall(options: VAECallOptions): {
  onProgress?: (e: ProgressEvent) => void;
  cancel?: ReturnType<typeof cancelTokenFor>;
} {
  return { onProgress: options.onProgress, cancel: cancelTokenFor(options.signal) };
}
