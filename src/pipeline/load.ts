// loadPipeline(pathOrId): a diffusers Stable Diffusion folder or hub id -> a ready pipeline.
//   1. resolve: a local folder as is; a hub id through the HF cache (src/hub resolveModel)
//   2. check model_index.json (layout.ts) and that the components fit together
//   3. load text_encoder, unet, vae (native), the tokenizer and the scheduler config
import { existsSync, statSync } from "node:fs";
import { basename, join } from "node:path";

import { resolveModel, type HubProgressEvent } from "../hub/index.js";
import { parseClipTextEncoderConfig } from "../models/clip_config.js";
import { parseUNetConfig, parseVAEConfig } from "../models/config.js";
import { readJsonFile, resolveWeightFiles } from "../models/files.js";
import { checkModelOptions, warningSink, type ModelDType } from "../models/options.js";
import { isSingleFilePath } from "../models/single_file/index.js";
import { TextEncoder } from "../models/text_encoder.js";
import { UNet } from "../models/unet.js";
import { VAE } from "../models/vae.js";
import { resolveDevice } from "../runtime.js";
import { readSchedulerConfig } from "../sched/config.js";
import { ClipTokenizer } from "../text/clip_tokenizer.js";
import { PipelineLayoutError, readPipelineIndex } from "./layout.js";
import { StableDiffusionPipeline } from "./pipeline.js";

/** Progress of loadPipeline: hub downloads, then one event per component loaded. */
export type PipelineLoadEvent =
  | HubProgressEvent
  | { phase: "load"; step: number; total: number; component: string; [value: string]: number | string };

export interface LoadPipelineOptions {
  /** Weights are converted to this dtype (default float32). */
  dtype?: ModelDType;
  /** "cpu" (default), "cuda", "cuda:N", or "auto" (cuda:0 when a GPU is visible, else cpu; resolveDevice). */
  device?: string;
  /** Weight variant, e.g. "fp16"; components without it use their plain weights (with a warning). */
  variant?: string;
  /** Hub branch, tag or commit (default "main"). */
  revision?: string;
  /** Hub token (default HF_TOKEN / the stored token); false sends none. */
  token?: string | false;
  /** Use the HF cache only (also HF_HUB_OFFLINE=1). */
  offline?: boolean;
  /** Hub base URL (default HF_ENDPOINT or https://huggingface.co). */
  endpoint?: string;
  /** HF cache folder (default HF_HUB_CACHE, else $HF_HOME/hub). */
  cacheDir?: string;
  onProgress?: (event: PipelineLoadEvent) => void;
  /** Cancels downloads (resumable) and stops between components. */
  signal?: AbortSignal;
  /** Variant fallbacks and similar notices. Default: process.emitWarning. */
  onWarning?: (message: string) => void;
  /**
   * A single-file checkpoint's prediction type, over the .yaml beside it and the family default
   * (SD 1.x epsilon, SD 2.x v_prediction).
   */
  predictionType?: "epsilon" | "v_prediction";
}

const COMPONENTS = ["text_encoder", "unet", "vae", "tokenizer", "scheduler"] as const;

/** Loads a Stable Diffusion 1.x / 2.x pipeline from a local diffusers folder or a hub id. */
export async function loadPipeline(
  pathOrId: string,
  options: LoadPipelineOptions = {},
): Promise<StableDiffusionPipeline> {
  options = { ...options, ...(options.device !== undefined ? { device: resolveDevice(options.device) } : {}) };
  checkModelOptions(options, "loadPipeline");
  const local = typeof pathOrId === "string" && existsSync(pathOrId) && statSync(pathOrId).isDirectory();
  const singleFile = isSingleFilePath(pathOrId);
  const dir = await resolveModel(pathOrId, {
    revision: options.revision,
    variant: options.variant,
    token: options.token,
    offline: options.offline,
    endpoint: options.endpoint,
    cacheDir: options.cacheDir,
    signal: options.signal,
    onProgress: options.onProgress,
    ...(options.predictionType ? { singleFile: { predictionType: options.predictionType } } : {}),
  });
  const index = readPipelineIndex(dir);
  checkComponentsFit(dir);

  const load = {
    dtype: options.dtype,
    device: options.device,
    variant: options.variant,
    onWarning: warningSink(options),
  };
  const loaded: { dispose(): void }[] = [];
  let step = 0;
  const done = (component: string): void => {
    options.onProgress?.({ phase: "load", step: ++step, total: COMPONENTS.length, component });
  };
  try {
    options.signal?.throwIfAborted();
    const textEncoder = await TextEncoder.load(join(dir, "text_encoder"), load);
    loaded.push(textEncoder);
    done("text_encoder");
    options.signal?.throwIfAborted();
    const unet = await UNet.load(join(dir, "unet"), load);
    loaded.push(unet);
    done("unet");
    options.signal?.throwIfAborted();
    const vae = await VAE.load(join(dir, "vae"), load);
    loaded.push(vae);
    done("vae");
    const tokenizer = await ClipTokenizer.fromPretrained(join(dir, "tokenizer"));
    done("tokenizer");
    const schedulerConfig = readSchedulerConfig(dir);
    done("scheduler");
    return new StableDiffusionPipeline({
      unet,
      vae,
      textEncoder,
      tokenizer,
      schedulerConfig,
      config: index,
      name: local ? basename(dir) : singleFile ? basename(pathOrId) : pathOrId,
      path: dir,
      modelFiles: resolveWeightFiles(join(dir, "unet"), { variant: options.variant }),
    });
  } catch (error) {
    for (const model of loaded) model.dispose();
    throw error;
  }
}

/**
 * Reads the three model configs and checks they make a text-to-image pipeline before any
 * weights load: the UNet denoises the VAE's latents, and cross-attends to the text encoder.
 */
function checkComponentsFit(dir: string): void {
  const file = (c: string): string => join(dir, c, "config.json");
  const unet = parseUNetConfig(readJsonFile(file("unet")), file("unet"));
  const vae = parseVAEConfig(readJsonFile(file("vae")), file("vae"));
  const text = parseClipTextEncoderConfig(readJsonFile(file("text_encoder")), file("text_encoder")).config;
  if (unet.in_channels !== vae.latent_channels || unet.out_channels !== vae.latent_channels) {
    throw new PipelineLayoutError(
      `${file("unet")}: in_channels ${unet.in_channels} / out_channels ${unet.out_channels} do not match the VAE's ` +
        `latent_channels ${vae.latent_channels}: this is not a text-to-image UNet (inpainting, depth and upscaling ` +
        "UNets take extra input channels) and is not supported",
    );
  }
  const cross = Array.isArray(unet.cross_attention_dim) ? unet.cross_attention_dim : [unet.cross_attention_dim];
  if (cross.some((d) => d !== text.hidden_size)) {
    throw new PipelineLayoutError(
      `${file("unet")}: cross_attention_dim ${JSON.stringify(unet.cross_attention_dim)} does not match the text ` +
        `encoder's hidden_size ${text.hidden_size} (${file("text_encoder")})`,
    );
  }
}
