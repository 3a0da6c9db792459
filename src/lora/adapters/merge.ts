// Merging LoRA files into a full diffusers model folder: the UNet and text encoder are
// loaded, the LoRAs applied at their scales and fused permanently, and a complete folder
// is written that diffusers (and sdtune) load like the base: same keys as the base
// checkpoints, merged weights, every other component (vae/, tokenizer/, scheduler/, ...)
// hard-linked or copied unchanged. Written to a temp folder beside `out`, then renamed.
import { existsSync, readdirSync, statSync } from "node:fs";
import { join, resolve, sep } from "node:path";

import { resolveModel } from "../../hub/index.js";
import type { ModelDType } from "../../models/options.js";
import { TextEncoder } from "../../models/text_encoder.js";
import { UNet } from "../../models/unet.js";
import type { ProgressEvent } from "../../native/index.js";
import { saveDiffusersModel } from "../../models/save_model.js";
import { saveSingleFile } from "../../models/single_file/save.js";
import { applyLoraFile, fuseLora, type LoraModels } from "./apply.js";

export interface MergeLoraSpec {
  /** A LoRA file or folder in any supported format. */
  path: string;
  /** Default 1. */
  scale?: number;
}

export interface MergeLoraOptions {
  /** A diffusers model folder, or a hub id (resolved through the HF cache). */
  base: string;
  loras: MergeLoraSpec[];
  /**
   * The folder to write; must not exist or be empty (unless force). A path ending in .safetensors
   * writes one single-file checkpoint (the LDM layout AUTOMATIC1111 and ComfyUI load) instead.
   */
  out: string;
  /** Write the UNet and text encoder weights in this dtype (default: each tensor's dtype in the base). */
  dtype?: ModelDType;
  /** Read the base's `variant` weights (e.g. fp16) and write the merged ones under the same variant name. */
  variant?: string;
  /** Replace a non-empty `out`. */
  force?: boolean;
  signal?: AbortSignal;
  onProgress?: (event: ProgressEvent) => void;
}

export interface MergeLoraResult {
  out: string;
  /** Layers changed per model. */
  layers: { unet?: number; textEncoder?: number };
  /** The weight files written (inside `out`). */
  weightFiles: string[];
}

/** Merges `loras` into `base` and writes a complete diffusers folder to `out`. */
export async function mergeLoraIntoModel(options: MergeLoraOptions): Promise<MergeLoraResult> {
  const { signal, onProgress } = options;
  if (!options.loras?.length) throw new TypeError("mergeLoraIntoModel: give at least one LoRA");
  for (const [i, l] of options.loras.entries()) {
    if (typeof l.path !== "string" || !l.path) throw new TypeError(`mergeLoraIntoModel: loras[${i}].path is missing`);
    if (l.scale !== undefined && !Number.isFinite(l.scale)) {
      throw new TypeError(`mergeLoraIntoModel: loras[${i}].scale must be a finite number`);
    }
  }
  const base = resolve(await resolveModel(options.base, { variant: options.variant, signal }));
  const out = resolve(options.out);
  const single = out.toLowerCase().endsWith(".safetensors");
  if (single) checkSingleFileOut(base, out, options.force ?? false);
  else checkFolders(base, out, options.force ?? false);

  const total = options.loras.length + 5;
  let step = 0;
  const progress = (what: string): void => {
    signal?.throwIfAborted();
    onProgress?.({ phase: "lora.merge", step: ++step, total, what });
  };

  const models: LoraModels = {};
  try {
    if (existsSync(join(base, "unet"))) {
      models.unet = await UNet.load(join(base, "unet"), { variant: options.variant });
    }
    if (existsSync(join(base, "text_encoder"))) {
      models.textEncoder = await TextEncoder.load(join(base, "text_encoder"), { variant: options.variant });
    }
    progress("loaded the base model");
    if (!models.unet && !models.textEncoder) throw new Error(`${base}: no unet/ or text_encoder/ to merge into`);
    for (const [i, l] of options.loras.entries()) {
      await applyLoraFile(models, l.path, { name: `merge_${i}`, scale: l.scale ?? 1, signal });
      progress(`applied ${l.path}`);
    }
    const layers = await fuseLora(models, { permanent: true });
    progress("fused");

    const weightFiles = single
      ? [await saveSingleFile({ base, out, models, dtype: options.dtype, variant: options.variant })]
      : await saveDiffusersModel({
          base,
          out,
          models,
          dtype: options.dtype,
          variant: options.variant,
          onFile: progress,
        });
    // Same step count either way: the single file is written in one go.
    if (single) progress("merged the weights into the single file");
    progress(single ? `wrote ${out}` : "copied the other components");
    return { out, layers: { unet: layers.unet, textEncoder: layers.textEncoder }, weightFiles };
  } finally {
    models.unet?.dispose();
    models.textEncoder?.dispose();
  }
}

/** A single-file output: a new file (or, with force, a file to replace) outside the base folder. */
function checkSingleFileOut(base: string, out: string, force: boolean): void {
  if (!existsSync(join(base, "model_index.json"))) {
    throw new Error(`${base}: not a diffusers model folder (no model_index.json)`);
  }
  if (out.startsWith(base + sep)) {
    throw new Error(`mergeLoraIntoModel: the output file ${out} must be outside the base model folder ${base}`);
  }
  if (existsSync(out) && (statSync(out).isDirectory() || !force)) {
    throw new Error(`${out}: exists; choose another output or pass --force (force: true) to replace the file`);
  }
}

export function checkFolders(base: string, out: string, force: boolean): void {
  if (!existsSync(join(base, "model_index.json"))) {
    throw new Error(`${base}: not a diffusers model folder (no model_index.json)`);
  }
  const inside = (a: string, b: string): boolean => a === b || a.startsWith(b + sep);
  if (inside(out, base) || inside(base, out)) {
    throw new Error(`mergeLoraIntoModel: the output folder ${out} must be outside the base model folder ${base}`);
  }
  if (!existsSync(out)) return;
  if (!statSync(out).isDirectory()) throw new Error(`${out}: exists and is not a folder`);
  if (readdirSync(out).length > 0 && !force) {
    throw new Error(
      `${out}: the folder is not empty; choose another output or pass --force (force: true) to replace it`,
    );
  }
}
