// A converted single file remembers where it came from (sdtune-source.json in the cache folder):
// so a load error about the converted copy can name the user's file and its LDM key, and so
// `sdtune cache prune` can drop conversions whose file is gone or has changed.
import { existsSync, readFileSync } from "node:fs";
import { stat, utimes } from "node:fs/promises";
import { dirname, join } from "node:path";

import { writeFileAtomic } from "../../io/atomic.js";
import { inspectSingleFile } from "./detect.js";
import { tensorsUnder } from "./shapes.js";
import { TEXT_PREFIX, textToSingleFile } from "./text_keys.js";
import { ldmUnetLayout, mapUnetKey, UNET_PREFIX } from "./unet_keys.js";
import { ldmVaeLevels, VAE_PREFIX, vaeKeyToLdm } from "./vae_keys.js";

export const SOURCE_FILE = "sdtune-source.json";

/** The file a cache folder was converted from, with the size and mtime it had then. */
export interface SingleFileSource {
  file: string;
  size: number;
  mtimeMs: number;
}

export async function writeSource(dir: string, source: SingleFileSource): Promise<void> {
  await writeFileAtomic(join(dir, SOURCE_FILE), `${JSON.stringify(source, null, 2)}\n`);
}

/** Marks a converted folder used now (`sdtune cache prune --unused-days` reads this time). */
export async function touchSource(dir: string): Promise<void> {
  const now = new Date();
  await utimes(join(dir, SOURCE_FILE), now, now).catch(() => undefined);
}

/** The source record of a converted folder, or undefined for any other folder. */
export function readSource(dir: string): SingleFileSource | undefined {
  const path = join(dir, SOURCE_FILE);
  if (!existsSync(path)) return undefined;
  try {
    const value = JSON.parse(readFileSync(path, "utf8")) as Partial<SingleFileSource>;
    if (typeof value.file !== "string" || typeof value.size !== "number" || typeof value.mtimeMs !== "number")
      return undefined;
    return { file: value.file, size: value.size, mtimeMs: value.mtimeMs };
  } catch {
    return undefined;
  }
}

/** True when the source file is gone or is no longer the file that was converted. */
export async function isOutdated(source: SingleFileSource): Promise<boolean> {
  try {
    const info = await stat(source.file);
    return info.size !== source.size || info.mtimeMs !== source.mtimeMs;
  } catch {
    return true;
  }
}

type Component = "unet" | "vae" | "text_encoder";

/**
 * A model load failed in `componentDir`. When that folder is a converted single file, the error
 * is rewritten to name the user's file and the LDM keys it lacks (the converted copy's diffusers
 * names mean nothing to someone who owns an A1111 checkpoint); otherwise it is returned as is.
 */
export async function explainSingleFileLoadError(componentDir: string, error: unknown): Promise<unknown> {
  const source = readSource(dirname(componentDir));
  const component = componentDir.split(/[\\/]/).pop() as Component;
  if (!source || !(error instanceof Error) || !["unet", "vae", "text_encoder"].includes(component)) return error;
  const missing = namesUnder(error.message, "missing from the checkpoint");
  const misshaped = namesUnder(error.message, "shape mismatches").map((line) => line.replace(/:$/, ""));
  if (!missing.length && !misshaped.length) return error;
  let toLdm: (name: string) => string | undefined = () => undefined;
  try {
    toLdm = await ldmNamer(source.file, component);
  } catch {
    // The file itself no longer reads: name the diffusers keys, which is all there is.
  }
  const describe = (names: string[], what: string): string => {
    const ldm = names.map((n) => toLdm(n) ?? n);
    const more = ldm.length > 1 ? ` (and ${ldm.length - 1} more)` : "";
    return `${what} "${ldm[0]}"${more}`;
  };
  const parts = [];
  if (missing.length) parts.push(describe(missing, "missing tensor"));
  if (misshaped.length) parts.push(describe(misshaped, "wrong shape of tensor"));
  return new Error(
    `${source.file}: not a complete Stable Diffusion checkpoint: ${parts.join("; ")}. ` +
      "The file is truncated, damaged or pruned of parts sdtune needs: download or export it again.",
    { cause: error },
  );
}

/** `load` (a model load from `componentDir`) with its error explained as above. */
export async function explainedLoad<T>(componentDir: string, load: Promise<T>): Promise<T> {
  try {
    return await load;
  } catch (error) {
    throw await explainSingleFileLoadError(componentDir, error);
  }
}

/** The names listed under one heading of the native loader's mismatch report. */
function namesUnder(message: string, heading: string): string[] {
  const lines = message.split("\n");
  const start = lines.findIndex((l) => l.trim().startsWith(heading));
  if (start < 0) return [];
  const out: string[] = [];
  for (const line of lines.slice(start + 1)) {
    if (!line.startsWith("    ") || line.trim().startsWith("...")) break;
    out.push(line.trim().split(" ")[0]!);
  }
  return out;
}

/** diffusers name -> the key the single file holds (or would hold) for it, with its prefix. */
async function ldmNamer(file: string, component: Component): Promise<(name: string) => string | undefined> {
  const info = await inspectSingleFile(file);
  if (component === "unet") {
    const layout = ldmUnetLayout(new Set(tensorsUnder(info.header, UNET_PREFIX).keys()), file);
    return (name) => prefixed(UNET_PREFIX, mapUnetKey(name, layout, "diffusers"));
  }
  if (component === "vae") {
    const levels = ldmVaeLevels(tensorsUnder(info.header, VAE_PREFIX).keys());
    return (name) => prefixed(VAE_PREFIX, vaeKeyToLdm(name, levels));
  }
  const prefix = TEXT_PREFIX[info.textLayout];
  return (name) => {
    try {
      return prefixed(prefix, [...textToSingleFile(info.textLayout, [name]).keys()][0]);
    } catch {
      return undefined;
    }
  };
}

function prefixed(prefix: string, key: string | undefined): string | undefined {
  return key === undefined ? undefined : prefix + key;
}
