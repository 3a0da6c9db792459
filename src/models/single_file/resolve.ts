// A single-file checkpoint where a diffusers folder is expected (loadPipeline, train, eval, lora
// merge, a stage's base): converted once into the sdtune cache (<cache>/single-file/<name>-<key>/),
// keyed by the file's path, size and modification time, the .yaml beside it and the options, then
// read as any diffusers folder. The conversion streams tensor by tensor from the mapped file, so
// it holds no model in memory; later uses find the folder and load at folder speed.
import { createHash, randomBytes } from "node:crypto";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { realpath, rename, rm, stat } from "node:fs/promises";
import { basename, dirname, join, resolve } from "node:path";

import { resolveCacheDir } from "../../io/cache_dir.js";
import { checkSingleFilePath } from "./detect.js";
import { planSingleFile, type SingleFileOptions } from "./plan.js";
import { isOutdated, readSource, touchSource, writeSource } from "./source.js";
import { writePlan } from "./to_diffusers.js";

/** Bump when the conversion's output changes, so old cache folders are not reused. */
const FORMAT = 1;

export interface ResolveSingleFileOptions extends SingleFileOptions {
  /** The sdtune cache folder (default $SDTUNE_CACHE_DIR, else ~/.cache/sdtune). */
  cacheDir?: string;
}

/** The diffusers folder for `file`, converting it on first use. */
export async function resolveSingleFile(file: string, options: ResolveSingleFileOptions = {}): Promise<string> {
  checkSingleFilePath(file);
  const real = await realpath(file);
  const dir = join(resolveCacheDir(options.cacheDir), "single-file", await cacheName(real, options));
  if (existsSync(join(dir, "model_index.json"))) {
    await touchSource(dir);
    return dir;
  }
  const plan = await planSingleFile(real, options);
  const temp = `${dir}.tmp-${process.pid}-${randomBytes(4).toString("hex")}`;
  const info = await stat(real);
  try {
    await writePlan(plan, temp);
    await writeSource(temp, { file: real, size: info.size, mtimeMs: info.mtimeMs });
    await rename(temp, dir);
    await removeOutdated(dirname(dir), real, dir);
  } catch (error) {
    await rm(temp, { recursive: true, force: true });
    // Another process finished the same conversion first: use its folder.
    if (!existsSync(join(dir, "model_index.json"))) throw error;
  }
  return dir;
}

async function cacheName(real: string, options: SingleFileOptions): Promise<string> {
  const info = await stat(real);
  const yamlPath = [".yaml", ".yml"].map((e) => real.replace(/\.safetensors$/i, e)).find((p) => existsSync(p));
  const key = JSON.stringify({
    format: FORMAT,
    path: real,
    size: info.size,
    mtime: info.mtimeMs,
    yaml: yamlPath ? readFileSync(yamlPath, "utf8") : null,
    predictionType: options.predictionType ?? null,
    config: options.config ? resolve(options.config) : null,
    ema: options.ema ?? false,
  });
  const hash = createHash("sha256").update(key).digest("hex").slice(0, 16);
  const stem = basename(real)
    .replace(/\.safetensors$/i, "")
    .replace(/[^\w.-]/g, "_")
    .slice(0, 64);
  return `${stem}-${hash}`;
}

/**
 * Conversions of an older version of the same file (another size or mtime) can never be used
 * again: removed as soon as the new one is in place. Other options of the same version (EMA,
 * prediction type) stay.
 */
async function removeOutdated(root: string, file: string, keep: string): Promise<void> {
  for (const name of readdirSync(root)) {
    const dir = join(root, name);
    if (dir === keep) continue;
    const source = readSource(dir);
    if (source?.file === file && (await isOutdated(source))) await rm(dir, { recursive: true, force: true });
  }
}
