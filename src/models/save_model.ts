// Writing a complete diffusers model folder from a base folder and loaded models
// whose weights changed (a merged LoRA, a full fine-tune): the changed components'
// checkpoints are rewritten with exactly the base checkpoint's keys, every other
// file is hard-linked (or copied) unchanged. Written into a temp folder, then
// renamed into place, so a reader never sees half a model.
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { copyFile, link, mkdir, readdir, realpath, rename, rm, stat } from "node:fs/promises";
import { basename, dirname, join } from "node:path";

import { syncDir } from "../io/atomic.js";
import { assertFinite } from "../io/finite.js";
import { inspectSafetensors, readSafetensors, writeSafetensors } from "../io/safetensors.js";
import type { DType, SafetensorsDType, Tensor } from "../native/index.js";
import { resolveWeightFiles } from "./files.js";
import type { TextEncoder } from "./text_encoder.js";
import type { UNet } from "./unet.js";

export interface SaveDiffusersModelOptions {
  /** The diffusers folder the models were loaded from. */
  base: string;
  out: string;
  models: { unet?: UNet; textEncoder?: TextEncoder };
  /**
   * Tensors to write instead of the model's own, by checkpoint key (e.g. float32 master or
   * EMA weights of a model trained in half precision).
   */
  overrides?: { unet?: Map<string, Tensor>; textEncoder?: Map<string, Tensor> };
  /** Write the changed components' weights in this dtype (default: each tensor's dtype in the base). */
  dtype?: "float32" | "float16" | "bfloat16";
  variant?: string;
  /** Called after each component is written. */
  onFile?: (what: string) => void;
}

const WEIGHT_FILE = /\.(safetensors|bin|ckpt|pt|pth|msgpack|h5|onnx)$|\.(safetensors|bin)\.index\.json$/;
const FLOATS: readonly DType[] = ["float32", "float16", "bfloat16", "float64"];
const ST_DTYPE: Partial<Record<SafetensorsDType, DType>> = {
  F64: "float64",
  F32: "float32",
  F16: "float16",
  BF16: "bfloat16",
};

/** Writes the folder; resolves to the weight files written (paths inside `out`). */
export async function saveDiffusersModel(options: SaveDiffusersModelOptions): Promise<string[]> {
  const { base, out, models } = options;
  const temp = join(dirname(out), `.${basename(out)}.tmp-${process.pid}-${randomBytes(4).toString("hex")}`);
  await mkdir(temp, { recursive: true });
  try {
    const weightFiles: string[] = [];
    for (const entry of (await readdir(base)).sort()) {
      const src = join(base, entry);
      const dst = join(temp, entry);
      const model = entry === "unet" ? models.unet : entry === "text_encoder" ? models.textEncoder : undefined;
      if (model) {
        const overrides = entry === "unet" ? options.overrides?.unet : options.overrides?.textEncoder;
        const file = await writeComponent(src, dst, model, options, overrides);
        weightFiles.push(join(out, entry, basename(file)));
        options.onFile?.(`wrote ${entry}`);
      } else {
        await linkTree(src, dst);
      }
    }
    await replaceFolder(temp, out);
    return weightFiles;
  } catch (error) {
    await rm(temp, { recursive: true, force: true });
    throw error;
  }
}

/**
 * One changed component: its non-weight files (config.json, ...) and one safetensors file
 * holding exactly the base checkpoint's keys, with the model's values where it has them
 * and the base file's own tensors otherwise. Returns the weight file's path.
 */
async function writeComponent(
  src: string,
  dst: string,
  model: UNet | TextEncoder,
  options: SaveDiffusersModelOptions,
  overrides: Map<string, Tensor> | undefined,
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
        let tensor = overrides?.get(info.name) ?? state.get(info.name) ?? fromFile!.get(info.name)!;
        const wanted = options.dtype ?? ST_DTYPE[info.dtype];
        if (wanted && FLOATS.includes(tensor.dtype) && tensor.dtype !== wanted) {
          tensor = await tensor.to({ dtype: wanted });
          owned.push(tensor);
        }
        entries.push([info.name, tensor]);
      }
    }
    assertFinite(entries, `${target}: the model's weights`, "the model file was not written");
    await writeSafetensors(target, entries, { format: "pt" });
  } finally {
    for (const t of owned) t.dispose();
    for (const t of state.values()) t.dispose();
  }
  return target;
}

/** Recreates `src` at `dst`: hard links where the filesystem allows, copies otherwise (symlinks followed). */
export async function linkTree(src: string, dst: string): Promise<void> {
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

/** Moves the finished temp folder to `out`, replacing what is there. */
export async function replaceFolder(temp: string, out: string): Promise<void> {
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
