// Model identity for cache keys: a sha256 over a component's config.json and
// the content of its weight files. Hashing runs at ~1.7 GB/s here, but a cached
// run should not have to read a 300 MB VAE it never loads, so each file's hash
// is memoised under its (device, inode, size, mtime in ns), as git's index does:
// a file that was not rewritten is not read again. Files in a Hugging Face cache
// snapshot are symlinks to blobs named by their sha256, which is used as is.
import { createHash } from "node:crypto";
import { readFile, realpath, stat } from "node:fs/promises";
import { basename, join } from "node:path";

import { writeFileAtomic } from "../io/atomic.js";
import { sha256File } from "../io/hash.js";
import { resolveWeightFiles } from "../models/files.js";

export interface ModelFingerprint {
  /** sha256 (hex) over the config and every weight file's content hash. */
  id: string;
  /** The folder fingerprinted. */
  dir: string;
  /** The weight files, in load order, with their content hashes. */
  files: { path: string; sha256: string; bytes: number }[];
}

export interface FingerprintOptions {
  /** Weight variant, e.g. "fp16" (as the loaders take it). */
  variant?: string;
  /** Where the per-file hash memo lives (a cache folder); none: every file is hashed. */
  memoDir?: string;
  signal?: AbortSignal;
}

const MEMO_FILE = "fingerprints.json";
const HF_BLOB = /\/blobs\/([0-9a-f]{64})$/;

/** The identity of a diffusers / transformers component folder (config.json + safetensors weights). */
export async function fingerprintModel(dir: string, options: FingerprintOptions = {}): Promise<ModelFingerprint> {
  const weights = resolveWeightFiles(dir, { variant: options.variant });
  const memo = options.memoDir ? await readMemo(options.memoDir) : undefined;
  let memoChanged = false;
  const files: ModelFingerprint["files"] = [];
  for (const path of weights) {
    const real = await realpath(path);
    const info = await stat(real, { bigint: true });
    const blob = HF_BLOB.exec(real);
    const stamp = `${info.dev}:${info.ino}:${info.size}:${info.mtimeNs}`;
    let sha256 = blob?.[1] ?? (memo?.[real]?.stamp === stamp ? memo[real].sha256 : undefined);
    if (!sha256) {
      sha256 = await sha256File(real, options.signal ? { signal: options.signal } : {});
      if (memo) {
        memo[real] = { stamp, sha256 };
        memoChanged = true;
      }
    }
    files.push({ path, sha256, bytes: Number(info.size) });
  }
  if (memo && memoChanged && options.memoDir) await writeMemo(options.memoDir, memo);
  const config = await readFile(join(dir, "config.json")).catch(() => {
    throw new Error(`${join(dir, "config.json")}: file not found (a model component folder needs its config.json)`);
  });
  const h = createHash("sha256");
  h.update(`config ${sha256Hex(config)}\n`);
  for (const f of files) h.update(`weights ${basename(f.path)} ${f.sha256}\n`);
  return { id: h.digest("hex"), dir, files };
}

/**
 * The identity of a tokenizer folder: its files' content (vocab, merges, configs,
 * tokenizer.json, added tokens). They are small, so they are simply hashed.
 */
export async function fingerprintTokenizer(dir: string): Promise<string> {
  const names = [
    "vocab.json",
    "merges.txt",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
  ];
  const h = createHash("sha256");
  let found = 0;
  for (const name of names) {
    const bytes = await readFile(join(dir, name)).catch(() => undefined);
    if (!bytes) continue;
    found++;
    h.update(`${name} ${sha256Hex(bytes)}\n`);
  }
  if (found === 0) throw new Error(`${dir}: no tokenizer files (expected vocab.json + merges.txt or tokenizer.json)`);
  return h.digest("hex");
}

export function sha256Hex(data: string | Uint8Array): string {
  return createHash("sha256").update(data).digest("hex");
}

type Memo = Record<string, { stamp: string; sha256: string }>;

async function readMemo(dir: string): Promise<Memo> {
  try {
    const parsed = JSON.parse(await readFile(join(dir, MEMO_FILE), "utf8")) as unknown;
    return parsed && typeof parsed === "object" && !Array.isArray(parsed) ? (parsed as Memo) : {};
  } catch {
    return {}; // absent or unreadable: a memo is only a shortcut
  }
}

async function writeMemo(dir: string, memo: Memo): Promise<void> {
  // Concurrent runs may overwrite each other's additions: a lost entry only costs one more hash.
  await writeFileAtomic(join(dir, MEMO_FILE), JSON.stringify(memo, null, 1)).catch(() => undefined);
}
