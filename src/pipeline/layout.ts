// model_index.json: is this folder a Stable Diffusion (1.x / 2.x) text-to-image pipeline
// that sdtune runs? diffusers' StableDiffusionPipeline.from_pretrained loads the components
// its __init__ names (vae, text_encoder, tokenizer, unet, scheduler, plus the optional
// safety_checker / feature_extractor / image_encoder); everything else makes it another
// pipeline (SDXL's text_encoder_2, an upscaler's low_res_scheduler, ...), refused here with
// a message that says what it is.
import { join } from "node:path";

import { readJsonFile } from "../models/files.js";

/** A model_index.json: {"_class_name": ..., "<component>": [library, class] | [null, null], ...}. */
export interface PipelineIndex {
  _class_name?: string;
  _diffusers_version?: string;
  [key: string]: unknown;
}

/** What each required component must be (library, accepted classes). */
const REQUIRED: Record<string, [string, string[]]> = {
  unet: ["diffusers", ["UNet2DConditionModel"]],
  vae: ["diffusers", ["AutoencoderKL"]],
  text_encoder: ["transformers", ["CLIPTextModel"]],
  tokenizer: ["transformers", ["CLIPTokenizer", "CLIPTokenizerFast"]],
  scheduler: ["diffusers", []], // any class: the sampler is chosen at generate time
};

/** Components a StableDiffusionPipeline may have that generation does not use. */
const IGNORED = ["safety_checker", "feature_extractor", "image_encoder"];

export class PipelineLayoutError extends Error {
  override name = "PipelineLayoutError";
}

/** Reads `<dir>/model_index.json` and checks it (see checkPipelineIndex). */
export function readPipelineIndex(dir: string): PipelineIndex {
  const file = join(dir, "model_index.json");
  return checkPipelineIndex(readJsonFile(file), file);
}

/**
 * Checks a parsed model_index.json; `file` names it in errors. Returns it typed.
 * Throws a PipelineLayoutError that says what the folder is and what sdtune needs.
 */
export function checkPipelineIndex(raw: unknown, file: string): PipelineIndex {
  if (!raw || typeof raw !== "object" || Array.isArray(raw)) {
    throw new PipelineLayoutError(`${file}: not a JSON object`);
  }
  const index = raw as PipelineIndex;
  const className = typeof index._class_name === "string" ? index._class_name : "an unnamed pipeline";
  const present = (key: string): boolean => {
    const v = index[key];
    return Array.isArray(v) && v.length === 2 && v[0] !== null && v[1] !== null;
  };
  if (present("text_encoder_2") || present("tokenizer_2") || /XL/.test(className)) {
    throw new PipelineLayoutError(
      `${file}: ${className} is a Stable Diffusion XL pipeline (text_encoder_2); SDXL is not supported. ` +
        "sdtune runs Stable Diffusion 1.x and 2.x pipelines (StableDiffusionPipeline layout)",
    );
  }
  for (const [key, [library, classes]] of Object.entries(REQUIRED)) {
    if (!present(key)) {
      throw new PipelineLayoutError(
        `${file}: ${className} has no "${key}" component, so it is not a StableDiffusionPipeline ` +
          "(needs unet, vae, text_encoder, tokenizer and scheduler)",
      );
    }
    const [lib, cls] = index[key] as [unknown, unknown];
    if (lib !== library || (classes.length > 0 && !classes.includes(String(cls)))) {
      throw new PipelineLayoutError(
        `${file}: "${key}" is ${JSON.stringify([lib, cls])}, but sdtune needs ` +
          `["${library}", ${classes.map((c) => `"${c}"`).join(" | ") || "a scheduler"}] (${className} is not supported)`,
      );
    }
  }
  const extra = Object.keys(index).filter(
    (key) => !key.startsWith("_") && !(key in REQUIRED) && !IGNORED.includes(key) && present(key),
  );
  if (extra.length) {
    throw new PipelineLayoutError(
      `${file}: ${className} has components a StableDiffusionPipeline does not (${extra.join(", ")}); ` +
        "sdtune runs plain text-to-image Stable Diffusion 1.x / 2.x pipelines only",
    );
  }
  return index;
}
