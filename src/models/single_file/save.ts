// A model whose weights changed (a merged LoRA, a full fine-tune) written as one single-file
// checkpoint: the changed components from the live models (or override tensors, e.g. EMA or
// float32 master weights), the rest from the base folder's files, each with exactly the base
// checkpoint's keys, as saveDiffusersModel writes a folder.
import { join } from "node:path";

import { readSafetensors } from "../../io/safetensors.js";
import type { Tensor } from "../../native/index.js";
import { resolveWeightFiles } from "../files.js";
import type { TextEncoder } from "../text_encoder.js";
import type { UNet } from "../unet.js";
import type { FloatDType } from "./tensors.js";
import { writeSingleFile, type ToSingleFileOptions } from "./to_single.js";

export interface SaveSingleFileOptions extends ToSingleFileOptions {
  /** The diffusers folder the models were loaded from. */
  base: string;
  /** The .safetensors file to write. */
  out: string;
  models: { unet?: UNet; textEncoder?: TextEncoder };
  /** Tensors to write instead of the model's own, by checkpoint key. */
  overrides?: { unet?: Map<string, Tensor>; textEncoder?: Map<string, Tensor> };
  dtype?: FloatDType;
}

/** Writes the single file; resolves to its path. */
export async function saveSingleFile(options: SaveSingleFileOptions): Promise<string> {
  const owned: Tensor[] = [];
  const component = async (
    name: string,
    model: UNet | TextEncoder | undefined,
    overrides: Map<string, Tensor> | undefined,
  ): Promise<Map<string, Tensor>> => {
    const state = new Map(model ? await model.stateDict() : []);
    owned.push(...state.values());
    const out = new Map<string, Tensor>();
    for (const file of resolveWeightFiles(join(options.base, name), { variant: options.variant })) {
      const { tensors } = await readSafetensors(file);
      owned.push(...tensors.values());
      for (const [key, t] of tensors) out.set(key, overrides?.get(key) ?? state.get(key) ?? t);
    }
    return out;
  };
  try {
    const tensors = {
      unet: await component("unet", options.models.unet, options.overrides?.unet),
      vae: await component("vae", undefined, undefined),
      textEncoder: await component("text_encoder", options.models.textEncoder, options.overrides?.textEncoder),
    };
    await writeSingleFile(options.base, options.out, tensors, options);
  } finally {
    for (const t of owned) t.dispose();
  }
  return options.out;
}
