// Where caches live. Every key is content-based (image bytes, model weights,
// transform), so one cache per user serves every run and every dataset safely,
// like the Hugging Face hub cache: runs with different output folders share it.
import { homedir } from "node:os";
import { join, resolve } from "node:path";

/**
 * The cache folder: `dir` when given, else $SDTUNE_CACHE_DIR, else
 * $XDG_CACHE_HOME/sdtune (default ~/.cache/sdtune).
 */
export function resolveCacheDir(dir?: string): string {
  if (dir !== undefined && dir !== "") return resolve(dir);
  const env = process.env.SDTUNE_CACHE_DIR;
  if (env) return resolve(env);
  const base = process.env.XDG_CACHE_HOME || join(homedir(), ".cache");
  return resolve(base, "sdtune");
}

/** A warning sink: the given callback, or a process warning (printed once per message by Node). */
export function warner(onWarning?: (message: string) => void): (message: string) => void {
  return onWarning ?? ((message) => process.emitWarning(message, { code: "SDTUNE_CACHE" }));
}
