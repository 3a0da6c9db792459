// Looking into a cache folder and pruning it. Nothing in a cache is ever
// overwritten, so stale entries (an old VAE, edited images, other resolutions)
// only take space: prune removes shards not read for a while (a shard's mtime
// is refreshed when a run reads it), unreadable shards, and temp files left by
// runs that died mid-write; converted single files whose file is gone or changed.
import { readdir, readFile, rm, rmdir, stat } from "node:fs/promises";
import { join } from "node:path";

import { isTempFile } from "../io/atomic.js";
import { inspectSafetensors } from "../io/safetensors.js";
import { resolveCacheDir } from "../io/cache_dir.js";
import { isOutdated, readSource, SOURCE_FILE } from "../models/single_file/source.js";

export interface CacheNamespaceInfo {
  kind: "latents" | "text";
  namespace: string;
  /** The namespace folder. */
  dir: string;
  /** namespace.json: the format, model identity, dtype (and clip skip) it holds, and the folders it came from. */
  descriptor: Record<string, unknown> | undefined;
  shards: number;
  entries: number;
  bytes: number;
  /** The latest time a run wrote or read one of its shards. */
  lastUsed: Date | undefined;
  /** Shards whose header does not parse. */
  unreadable: string[];
}

export interface PruneOptions {
  /** Remove shards no run has read or written for this many days. */
  unusedDays?: number;
  /** Report what would go, remove nothing. */
  dryRun?: boolean;
}

export interface PruneResult {
  removed: string[];
  freedBytes: number;
}

const KINDS = ["latents", "text"] as const;
const TEMP_AGE_MS = 60 * 60 * 1000;

/** What a cache folder holds, per namespace. */
export async function cacheInfo(dir?: string): Promise<CacheNamespaceInfo[]> {
  const root = resolveCacheDir(dir);
  const out: CacheNamespaceInfo[] = [];
  for (const kind of KINDS) {
    for (const namespace of await list(join(root, kind))) {
      const nsDir = join(root, kind, namespace);
      if (!(await stat(nsDir)).isDirectory()) continue;
      const info: CacheNamespaceInfo = {
        kind,
        namespace,
        dir: nsDir,
        descriptor: await readDescriptor(nsDir),
        shards: 0,
        entries: 0,
        bytes: 0,
        lastUsed: undefined,
        unreadable: [],
      };
      for (const name of (await list(nsDir)).filter((n) => n.endsWith(".safetensors"))) {
        const path = join(nsDir, name);
        const s = await stat(path);
        info.bytes += s.size;
        if (!info.lastUsed || s.mtime > info.lastUsed) info.lastUsed = s.mtime;
        try {
          const header = await inspectSafetensors(path);
          info.entries += Object.keys(JSON.parse(header.metadata["sdtune.entries"] ?? "{}") as object).length;
          info.shards++;
        } catch {
          info.unreadable.push(path);
        }
      }
      out.push(info);
    }
  }
  return out;
}

/** Removes unreadable shards, stale temp files and (with unusedDays) shards unused for that long. */
export async function pruneCache(dir?: string, options: PruneOptions = {}): Promise<PruneResult> {
  const { unusedDays, dryRun = false } = options;
  if (unusedDays !== undefined && !(Number.isFinite(unusedDays) && unusedDays >= 0)) {
    throw new RangeError(`pruneCache: unusedDays must be a non-negative number, got ${unusedDays}`);
  }
  const root = resolveCacheDir(dir);
  const now = Date.now();
  const result: PruneResult = { removed: [], freedBytes: 0 };
  const remove = async (path: string, bytes: number): Promise<void> => {
    result.removed.push(path);
    result.freedBytes += bytes;
    if (!dryRun) await rm(path, { force: true });
  };
  for (const ns of await cacheInfo(root)) {
    let kept = 0;
    for (const name of await list(ns.dir)) {
      const path = join(ns.dir, name);
      const s = await stat(path).catch(() => undefined);
      if (!s?.isFile()) continue;
      if (isTempFile(name)) {
        if (now - s.mtimeMs > TEMP_AGE_MS) await remove(path, s.size);
        else kept++;
      } else if (name.endsWith(".safetensors")) {
        const stale = unusedDays !== undefined && now - s.mtimeMs > unusedDays * 86_400_000;
        if (stale || ns.unreadable.includes(path)) await remove(path, s.size);
        else kept++;
      }
    }
    if (kept === 0 && !dryRun) {
      // An emptied namespace goes too (its namespace.json only described the shards).
      await rm(join(ns.dir, "namespace.json"), { force: true });
      await rmdir(ns.dir).catch(() => undefined);
    }
  }
  await pruneConversions(root, now, unusedDays, result, dryRun);
  return result;
}

/**
 * Converted single files (<cache>/single-file/*): a conversion whose file is gone or changed can
 * never be used again; with unusedDays also those no load has used for that long; temp folders
 * of conversions that died mid-write after an hour.
 */
async function pruneConversions(
  root: string,
  now: number,
  unusedDays: number | undefined,
  result: PruneResult,
  dryRun: boolean,
): Promise<void> {
  const base = join(root, "single-file");
  for (const name of await list(base)) {
    const dir = join(base, name);
    const source = readSource(dir);
    // The source record's mtime is the last use (a load touches it); older folders have only their own.
    const marker = source ? join(dir, SOURCE_FILE) : dir;
    const used = (await stat(marker).catch(() => undefined))?.mtimeMs ?? 0;
    const temp = /\.tmp-\d+-[0-9a-f]+$/.test(name) && now - used > TEMP_AGE_MS;
    const unused = unusedDays !== undefined && now - used > unusedDays * 86_400_000;
    if (!temp && !unused && !(source && (await isOutdated(source)))) continue;
    result.removed.push(dir);
    result.freedBytes += await folderBytes(dir);
    if (!dryRun) await rm(dir, { recursive: true, force: true });
  }
}

async function folderBytes(dir: string): Promise<number> {
  let total = 0;
  for (const entry of await readdir(dir, { withFileTypes: true }).catch(() => [])) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) total += await folderBytes(path);
    else if (entry.isFile()) total += (await stat(path)).size;
  }
  return total;
}

async function list(dir: string): Promise<string[]> {
  try {
    return (await readdir(dir)).sort();
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return [];
    throw error;
  }
}

async function readDescriptor(dir: string): Promise<Record<string, unknown> | undefined> {
  try {
    return JSON.parse(await readFile(join(dir, "namespace.json"), "utf8")) as Record<string, unknown>;
  } catch {
    return undefined;
  }
}
