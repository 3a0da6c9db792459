// A diffusers folder (or loaded models with changed weights) -> one single-file checkpoint in the
// original LDM layout, with the key names and tensor layout of diffusers'
// scripts/convert_diffusers_to_original_stable_diffusion.py: UNet under model.diffusion_model., VAE
// under first_stage_model. (mid-block attention as 1x1 convolutions), text encoder under
// cond_stage_model.transformer. (CLIP, SD 1.x) or cond_stage_model.model. (open_clip, SD 2.x, q/k/v
// fused into in_proj_weight / in_proj_bias). The folder's configs ride along in the metadata so that
// converting back gives the same folder. Written atomically.
import { join } from "node:path";

import { readSafetensors, writeSafetensors } from "../../io/safetensors.js";
import { unetLayoutFromModuleNames } from "../ldm.js";
import type { Tensor } from "../../native/index.js";
import { readJsonFile, resolveWeightFiles } from "../files.js";
import { inspectSingleFile } from "./detect.js";
import { readSideFiles, SIDE_FILES_KEY } from "./side_files.js";
import { castFloat, concatRows, type FloatDType } from "./tensors.js";
import { TEXT_PREFIX, textToSingleFile, type TextLayout } from "./text_keys.js";
import { mapUnetKey, UNET_PREFIX } from "./unet_keys.js";
import { VAE_PREFIX, vaeKeyToLdm } from "./vae_keys.js";

export interface ToSingleFileOptions {
  /** Weights in this dtype (default: as stored). */
  dtype?: FloatDType;
  /**
   * The text encoder's layout in the file. Default: "openclip" (SD 2.x) when the text encoder's
   * hidden_act is "gelu" (open_clip's activation), "clip" (SD 1.x) for "quick_gelu".
   */
  textEncoderLayout?: TextLayout;
  /** Weight variant of the folder's files (e.g. "fp16"). */
  variant?: string;
}

/** Each component's tensors by diffusers key (views; nothing is read until written). */
export interface ComponentTensors {
  unet: Map<string, Tensor>;
  vae: Map<string, Tensor>;
  textEncoder: Map<string, Tensor>;
}

/** Writes `folder` (a diffusers Stable Diffusion folder) as the single file `out`. */
export async function convertDiffusersToSingleFile(
  folder: string,
  out: string,
  options: ToSingleFileOptions = {},
): Promise<void> {
  const owned: Tensor[] = [];
  const read = async (component: string): Promise<Map<string, Tensor>> => {
    const tensors = new Map<string, Tensor>();
    for (const file of resolveWeightFiles(join(folder, component), { variant: options.variant })) {
      for (const [name, t] of (await readSafetensors(file)).tensors) {
        tensors.set(name, t);
        owned.push(t);
      }
    }
    return tensors;
  };
  try {
    const tensors = { unet: await read("unet"), vae: await read("vae"), textEncoder: await read("text_encoder") };
    await writeSingleFile(folder, out, tensors, options);
  } finally {
    for (const t of owned) t.dispose();
  }
}

/** Writes `tensors` (the weights of a pipeline shaped like `folder`) as the single file `out`. */
export async function writeSingleFile(
  folder: string,
  out: string,
  tensors: ComponentTensors,
  options: ToSingleFileOptions = {},
): Promise<void> {
  const made: Tensor[] = [];
  const keep = async (t: Tensor): Promise<Tensor> => {
    const cast = await castFloat(t, options.dtype);
    if (cast !== t) made.push(cast);
    return cast;
  };
  try {
    const entries: [string, Tensor][] = [];
    const layout = unetLayoutFromModuleNames(tensors.unet.keys());
    if (!layout) throw new Error(`${folder}: the UNet has no down blocks (down_blocks.*)`);
    for (const [key, t] of tensors.unet) {
      const ldm = mapUnetKey(key, layout, "diffusers");
      if (!ldm) throw new Error(`${folder}/unet: no LDM name for "${key}"`);
      entries.push([UNET_PREFIX + ldm, await keep(t)]);
    }
    const vaeConfig = readJsonFile(join(folder, "vae", "config.json")) as { block_out_channels?: unknown[] };
    const levels = vaeConfig.block_out_channels?.length ?? 4;
    for (const [key, t] of tensors.vae) {
      const ldm = vaeKeyToLdm(key, levels);
      if (!ldm) throw new Error(`${folder}/vae: no LDM name for "${key}"`);
      // The mid-block attention's linear layers are 1x1 convolutions in LDM.
      const conv = /\.mid\.attn_1\.(q|k|v|proj_out)\.weight$/.test(ldm) && t.shape.length === 2;
      const shaped = conv ? t.reshape([...t.shape, 1, 1]) : t;
      if (conv) made.push(shaped);
      entries.push([VAE_PREFIX + ldm, await keep(shaped)]);
    }
    const textLayout = options.textEncoderLayout ?? textLayoutOf(folder);
    for (const [name, sources] of textToSingleFile(textLayout, tensors.textEncoder.keys())) {
      const parts = sources.map((s) => tensors.textEncoder.get(s)!);
      const t = parts.length === 1 ? parts[0]! : concatRows(parts, `${folder}/text_encoder: ${name}`);
      if (parts.length > 1) made.push(t);
      entries.push([TEXT_PREFIX[textLayout] + name, await keep(t)]);
    }
    const sideFiles = JSON.stringify(Object.fromEntries(readSideFiles(folder)));
    await writeSafetensors(out, entries, { format: "pt", [SIDE_FILES_KEY]: sideFiles });
  } finally {
    for (const t of made) t.dispose();
  }
}

/** open_clip (SD 2.x) when the text encoder uses plain gelu, CLIP (SD 1.x, quick_gelu) otherwise. */
export function textLayoutOf(folder: string): TextLayout {
  const config = readJsonFile(join(folder, "text_encoder", "config.json")) as { hidden_act?: unknown };
  return config.hidden_act === "gelu" ? "openclip" : "clip";
}

/**
 * A single file -> another single file: the same keys and metadata, in `dtype`, with or without
 * the EMA copy of the UNet (model_ema.*). Checked as a Stable Diffusion 1.x / 2.x file first.
 */
export async function resaveSingleFile(
  file: string,
  out: string,
  options: { dtype?: FloatDType; ema?: boolean } = {},
): Promise<void> {
  await inspectSingleFile(file);
  const { tensors, metadata } = await readSafetensors(file);
  const made: Tensor[] = [];
  try {
    const entries: [string, Tensor][] = [];
    for (const [name, t] of tensors) {
      if (options.ema === false && name.startsWith("model_ema.")) continue;
      const cast = await castFloat(t, options.dtype);
      if (cast !== t) made.push(cast);
      entries.push([name, cast]);
    }
    await writeSafetensors(out, entries, metadata);
  } finally {
    for (const t of [...made, ...tensors.values()]) t.dispose();
  }
}
