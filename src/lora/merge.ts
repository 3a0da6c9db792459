// Merging LoRA files into a full diffusers model folder: the UNet and text encoder are
// loaded, the LoRAs applied at their scales and fused permanently, and a complete folder
// is written that diffusers (and sdtune) load like the base: same keys as the base
// checkpoints, merged weights, every other component (vae/, tokenizer/, scheduler/, ...)
// hard-linked or copied unchanged. Written to a temp folder beside `out`, then renamed.
import { randomBytes } from "node:crypto";
import { existsSync, readdirSync, statSync } from "node:fs";
import { copyFile, link, mkdir, readdir, realpath, rename, rm, stat } from "node:fs/promises";
import { basename, dirname, join, resolve, sep } from "node:path";

import { resolveModel } from "../hub/index.js";
import { inspectSafetensors, readSafetensors, writeSafetensors } from "../io/safetensors.js";
import { syncDir } from "../io/atomic.js";
import { resolveWeightFiles } from "../models/files.js";
import { TextEncoder, type ModelDType } from "../models/text_encoder.js";
import { UNet } from "../models/unet.js";
import type { DType, ProgressEvent, SafetensorsDType, Tensor } from "../native.js";
import { applyLoraFile, fuseLora, type LoraModels } from "./adapters.js";

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
  /** The folder to write; must not exist or be empty (unless force). */
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

const WEIGHT_FILE = /\.(safetensors|bin|ckpt|pt|pth|msgpack|h5|onnx)$|\.(safetensors|bin)\.index\.json$/;
const FLOATS: readonly DType[] = ["float32", "float16", "bfloat16", "float64"];
const ST_DTYPE: Partial<Record<SafetensorsDType, DType>> = {
  F64: "float64",
  F32: "float32",
  F16: "float16",
  BF16: "bfloat16",
};

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
  checkFolders(base, out, options.force ?? false);

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

    const temp = join(dirname(out), `.${basename(out)}.tmp-${process.pid}-${randomBytes(4).toString("hex")}`);
    await mkdir(temp, { recursive: true });
    try {
      const weightFiles: string[] = [];
      for (const entry of (await readdir(base)).sort()) {
        const src = join(base, entry);
        const dst = join(temp, entry);
        const model = entry === "unet" ? models.unet : entry === "text_encoder" ? models.textEncoder : undefined;
        if (model) {
          const file = await writeComponent(src, dst, model, options);
          weightFiles.push(join(out, entry, basename(file)));
          progress(`wrote ${entry}`);
        } else {
          await linkTree(src, dst);
        }
      }
      progress("copied the other components");
      await replaceFolder(temp, out);
      return { out, layers: { unet: layers.unet, textEncoder: layers.textEncoder }, weightFiles };
    } catch (error) {
      await rm(temp, { recursive: true, force: true });
      throw error;
    }
  } finally {
    models.unet?.dispose();
    models.textEncoder?.dispose();
  }
}

function checkFolders(base: string, out: string, force: boolean): void {
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

/**
 * One merged component: its non-weight files (config.json, ...) and one safetensors file
 * holding exactly the base checkpoint's keys, with the model's (merged) values where it
 * has them and the base file's own tensors otherwise. Returns the weight file's path.
 */
async function writeComponent(
  src: string,
  dst: string,
  model: UNet | TextEncoder,
  options: MergeLoraOptions,
): Promise<string> {
  await mkdir(dst, { recursive: true });
  for (const entry of await readdir(src)) {
    if (!WEIGHT_FILE.test(entry)) await linkTree(join(src, entry), join(dst, entry));
  }
  const files = resolveWeightFiles(src, { variant: options.variant });
  const stem = basename(files[0]!).startsWith("diffusion_pytorch_model") ? "diffusion_pytorch_model" : "model";
  const target = join(dst, `${stem}${options.variant ? `.${options.variant}` : ""}.safetensors`);

  const state = new Map(await model.handle.stateDict());
  const owned: Tensor[] = [];
  const entries: [string, Tensor][] = [];
  try {
    for (const file of files) {
      const header = await inspectSafetensors(file);
      const fromFile = header.tensors.some((t) => !state.has(t.name))
        ? (await readSafetensors(file)).tensors
        : undefined;
      if (fromFile) owned.push(...fromFile.values());
      for (const info of header.tensors) {
        let tensor = state.get(info.name) ?? fromFile!.get(info.name)!;
        const wanted = options.dtype ?? ST_DTYPE[info.dtype];
        if (wanted && FLOATS.includes(tensor.dtype) && tensor.dtype !== wanted) {
          tensor = await tensor.to({ dtype: wanted });
          owned.push(tensor);
        }
        entries.push([info.name, tensor]);
      }
    }
    await writeSafetensors(target, entries, { format: "pt" });
  } finally {
    for (const t of owned) t.dispose();
    for (const t of state.values()) t.dispose();
  }
  return target;
}

/** Recreates `src` at `dst`: hard links where the filesystem allows, copies otherwise (symlinks followed). */
async function linkTree(src: string, dst: string): Promise<void> {
  const real = await realpath(src);
  if ((await stat(real)).isDirectory()) {
    await mkdir(dst, { recursive: true });
    for (const entry of await readdir(real)) await linkTree(join(real, entry), join(dst, entry));
    return;
  }
  try {
    await link(real, dst);
  } catch {
    await copyFile(real, dst);
  }
}

/** Moves the finished temp folder to `out`, replacing what is there (checked before). */
async function replaceFolder(temp: string, out: string): Promise<void> {
  if (existsSync(out)) {
    const old = join(dirname(out), `.${basename(out)}.old-${process.pid}-${randomBytes(4).toString("hex")}`);
    await rename(out, old);
    try {
      await rename(temp, out);
    } catch (error) {
      await rename(old, out);
      throw error;
    }
    await rm(old, { recursive: true, force: true });
  } else {
    await rename(temp, out);
  }
  await syncDir(dirname(out));
}
