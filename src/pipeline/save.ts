// Writing models as diffusers / transformers folders that diffusers' from_pretrained and
// loadPipeline read back: config.json + safetensors per component, model_index.json for a
// pipeline. For randomly initialised models (benchmarks, demos) and trained full models.
import { existsSync } from "node:fs";
import { copyFile, mkdir } from "node:fs/promises";
import { join } from "node:path";

import { writeFileAtomic } from "../io/atomic.js";
import { assertFinite } from "../io/finite.js";
import { writeSafetensors } from "../io/safetensors.js";
import type { ModelDType } from "../models/options.js";
import { TextEncoder } from "../models/text_encoder.js";
import { UNet } from "../models/unet.js";
import { VAE } from "../models/vae.js";
import type { Tensor } from "../native/index.js";
import type { SchedulerConfig } from "../sched/config.js";
import { disposeAll } from "../tensor.js";
import type { ClipTokenizer } from "../text/clip_tokenizer.js";

/** The diffusers version whose layout these folders follow (the reference's). */
const DIFFUSERS_VERSION = "0.27.2";

export interface SaveModelOptions {
  /** Convert the weights on the way out (default: the model's dtype). */
  dtype?: ModelDType;
  /** Name the weights `<stem>.<variant>.safetensors` (e.g. "fp16"). */
  variant?: string;
}

/**
 * Writes one component folder: unet/ and vae/ as diffusers writes them
 * (config.json + diffusion_pytorch_model[.variant].safetensors), a text encoder as
 * transformers' CLIPTextModel (config.json + model[.variant].safetensors). Atomic per file.
 */
export async function saveModel(
  dir: string,
  model: UNet | VAE | TextEncoder,
  options: SaveModelOptions = {},
): Promise<void> {
  await mkdir(dir, { recursive: true });
  const variant = options.variant ? `.${options.variant}` : "";
  let config: Record<string, unknown>;
  let stem: string;
  if (model instanceof UNet) {
    config = { _class_name: "UNet2DConditionModel", _diffusers_version: DIFFUSERS_VERSION, ...model.config };
    stem = "diffusion_pytorch_model";
  } else if (model instanceof VAE) {
    config = { _class_name: "AutoencoderKL", _diffusers_version: DIFFUSERS_VERSION, ...model.config };
    stem = "diffusion_pytorch_model";
  } else if (model instanceof TextEncoder) {
    config = { architectures: ["CLIPTextModel"], model_type: "clip_text_model", ...model.config };
    stem = "model";
  } else {
    throw new TypeError("saveModel: expected a UNet, VAE or TextEncoder");
  }
  const entries = await model.stateDict();
  const converted: Tensor[] = [];
  try {
    const tensors: [string, Tensor][] = [];
    for (const [name, t] of entries) {
      if (options.dtype && t.dtype !== options.dtype) {
        const c = await t.to({ dtype: options.dtype });
        converted.push(c);
        tensors.push([name, c]);
      } else {
        tensors.push([name, t]);
      }
    }
    const target = join(dir, `${stem}${variant}.safetensors`);
    assertFinite(tensors, `${target}: the model's weights`, "the model file was not written");
    await writeSafetensors(target, tensors, { format: "pt" });
  } finally {
    disposeAll(
      converted,
      entries.map(([, t]) => t),
    );
  }
  await writeFileAtomic(join(dir, "config.json"), `${JSON.stringify(config, null, 2)}\n`);
}

export interface SavePipelineComponents {
  unet: UNet;
  vae: VAE;
  textEncoder: TextEncoder;
  /** Its files are copied (vocab.json, merges.txt, tokenizer_config.json, ...). */
  tokenizer: ClipTokenizer;
  schedulerConfig: SchedulerConfig | Record<string, unknown>;
}

const TOKENIZER_FILES = [
  "vocab.json",
  "merges.txt",
  "tokenizer_config.json",
  "special_tokens_map.json",
  "added_tokens.json",
  "tokenizer.json",
];

/**
 * Writes a StableDiffusionPipeline folder (model_index.json, unet/, vae/, text_encoder/,
 * tokenizer/, scheduler/) that loadPipeline and diffusers' from_pretrained read.
 */
export async function savePipeline(
  dir: string,
  components: SavePipelineComponents,
  options: SaveModelOptions = {},
): Promise<void> {
  await mkdir(dir, { recursive: true });
  await saveModel(join(dir, "unet"), components.unet, options);
  await saveModel(join(dir, "vae"), components.vae, options);
  await saveModel(join(dir, "text_encoder"), components.textEncoder, options);
  await mkdir(join(dir, "tokenizer"), { recursive: true });
  for (const name of TOKENIZER_FILES) {
    const from = join(components.tokenizer.dir, name);
    if (existsSync(from)) await copyFile(from, join(dir, "tokenizer", name));
  }
  const scheduler = Object.fromEntries(
    Object.entries(components.schedulerConfig).filter(([key]) => key !== "_source"),
  ) as Record<string, unknown>;
  await writeFileAtomic(join(dir, "scheduler", "scheduler_config.json"), `${pythonJson(scheduler)}\n`);
  const schedulerClass = typeof scheduler._class_name === "string" ? scheduler._class_name : "PNDMScheduler";
  const index = {
    _class_name: "StableDiffusionPipeline",
    _diffusers_version: DIFFUSERS_VERSION,
    feature_extractor: [null, null],
    image_encoder: [null, null],
    requires_safety_checker: false,
    safety_checker: [null, null],
    scheduler: ["diffusers", schedulerClass],
    text_encoder: ["transformers", "CLIPTextModel"],
    tokenizer: ["transformers", "CLIPTokenizer"],
    unet: ["diffusers", "UNet2DConditionModel"],
    vae: ["diffusers", "AutoencoderKL"],
  };
  await writeFileAtomic(join(dir, "model_index.json"), `${JSON.stringify(index, null, 2)}\n`);
}

/** JSON as Python's json module writes it: non-finite numbers as the bare tokens -Infinity, Infinity, NaN. */
function pythonJson(value: unknown): string {
  const marker = "\u0000sdtune-number:";
  const text = JSON.stringify(
    value,
    (_key, v: unknown) => (typeof v === "number" && !Number.isFinite(v) ? `${marker}${String(v)}` : v),
    2,
  );
  return text.replace(/"\\u0000sdtune-number:(-?Infinity|NaN)"/g, "$1");
}
