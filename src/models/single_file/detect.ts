// What a single-file checkpoint is, from its safetensors header alone (nothing loads):
// Stable Diffusion 1.x (CLIP text encoder) or 2.x (open_clip), or a family sdtune does not run,
// named with the keys that told.
import { existsSync, statSync } from "node:fs";
import { basename, extname } from "node:path";

import { CONVERT_CHECKPOINT, PICKLE, pickleRefusal } from "../../io/pickle.js";
import { inspectSafetensors } from "../../io/safetensors.js";
import type { SafetensorsHeader } from "../../native/index.js";
import { TEXT_PREFIX, type TextLayout } from "./text_keys.js";
import { UNET_PREFIX } from "./unet_keys.js";
import { VAE_PREFIX } from "./vae_keys.js";

export interface SingleFileInfo {
  file: string;
  header: SafetensorsHeader;
  /** sd1: CLIP ViT-L text encoder; sd2: open_clip ViT-H. */
  family: "sd1" | "sd2";
  textLayout: TextLayout;
  /** The file holds an EMA copy of the UNet (model_ema.*). */
  hasEma: boolean;
}

const SUPPORTED = "Stable Diffusion 1.x and 2.x text-to-image checkpoints (4 latent input channels)";

/** True when `path` names a file (not a folder) that sdtune would read as a single-file checkpoint. */
export function isSingleFilePath(path: string): boolean {
  if (typeof path !== "string") return false;
  const ext = extname(path).toLowerCase();
  if (ext !== ".safetensors" && !PICKLE.test(path)) return false;
  return !existsSync(path) || !statSync(path).isDirectory();
}

/**
 * Throws unless `path` is an existing .safetensors file: pickled checkpoints (.ckpt, .pt, .bin, ...)
 * are refused because loading one runs arbitrary code; the message says how to convert them once.
 */
export function checkSingleFilePath(path: string): void {
  if (PICKLE.test(path)) {
    throw new Error(
      pickleRefusal(
        `${path}: a pickled checkpoint (${extname(path)})`,
        `Convert it once, in Python, where you trust the file: ${CONVERT_CHECKPOINT}`,
      ),
    );
  }
  if (!existsSync(path)) throw new Error(`${path}: file not found`);
  if (extname(path).toLowerCase() !== ".safetensors") {
    throw new Error(`${path}: not a .safetensors file (single-file checkpoints must be safetensors)`);
  }
}

/** Reads the header and names the model family; throws for other families and partial files. */
export async function inspectSingleFile(file: string): Promise<SingleFileInfo> {
  checkSingleFilePath(file);
  let header: SafetensorsHeader;
  try {
    header = await inspectSafetensors(file);
  } catch (error) {
    throw new Error(`${file}: not a readable safetensors file (${(error as Error).message})`);
  }
  const names = header.tensors.map((t) => t.name);
  const any = (prefix: string): boolean => names.some((n) => n.startsWith(prefix));
  refuseOtherFamilies(file, names, any);
  const textLayout: TextLayout | undefined = any(TEXT_PREFIX.clip)
    ? "clip"
    : any(TEXT_PREFIX.openclip)
      ? "openclip"
      : undefined;
  if (!textLayout) {
    throw new Error(
      `${file}: no text encoder (cond_stage_model.transformer.* for SD 1.x, cond_stage_model.model.* for SD 2.x): ` +
        "the file holds only part of a model",
    );
  }
  if (!any(VAE_PREFIX)) throw new Error(`${file}: no VAE (first_stage_model.*): the file holds only part of a model`);
  const convIn = header.tensors.find((t) => t.name === `${UNET_PREFIX}input_blocks.0.0.weight`);
  if (!convIn) throw new Error(`${file}: missing tensor "${UNET_PREFIX}input_blocks.0.0.weight" (the UNet's conv_in)`);
  const inChannels = convIn.shape[1];
  if (inChannels !== 4) {
    const kind = inChannels === 9 ? "an inpainting model" : inChannels === 5 ? "a depth-to-image model" : "a model";
    throw new Error(`${file}: ${kind} (UNet in_channels ${inChannels}); sdtune supports ${SUPPORTED} only`);
  }
  return {
    file,
    header,
    family: textLayout === "openclip" ? "sd2" : "sd1",
    textLayout,
    hasEma: any("model_ema."),
  };
}

function refuseOtherFamilies(file: string, names: string[], any: (prefix: string) => boolean): void {
  const found = (what: string, evidence: string): Error =>
    new Error(`${file}: ${what} checkpoint (found ${evidence}); sdtune supports ${SUPPORTED} only`);
  if (any("conditioner.embedders.")) throw found("an SDXL", "conditioner.embedders.*");
  if (any(`${UNET_PREFIX}joint_blocks.`)) throw found("a Stable Diffusion 3", "model.diffusion_model.joint_blocks.*");
  if (any("double_blocks.") || any(`${UNET_PREFIX}double_blocks.`)) throw found("a Flux", "double_blocks.*");
  if (any(`${UNET_PREFIX}label_emb.`)) throw found("a class-conditioned (SDXL-style or unCLIP)", "label_emb.*");
  if (any(UNET_PREFIX)) return;
  const sample = names.slice(0, 3).join(", ");
  if (names.some((n) => n.startsWith("lora_") || n.includes(".lora_"))) {
    throw new Error(`${file}: a LoRA file (found ${sample}), not a model: load a base model and apply it as a LoRA`);
  }
  if (names.some((n) => /^(down_blocks|mid_block|text_model|encoder\.down_blocks)\./.test(n))) {
    throw new Error(
      `${file}: one component of a diffusers folder (found ${sample}); pass the folder that holds ` +
        `model_index.json, or a single-file checkpoint (${basename(file)} has no model.diffusion_model.* keys)`,
    );
  }
  throw new Error(
    `${file}: not a Stable Diffusion checkpoint (no model.diffusion_model.* keys; found ${sample || "no tensors"})`,
  );
}
