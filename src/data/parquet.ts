// Parquet datasets as HF `datasets` writes them: an image column of
// {bytes, path} structs (feature type Image) and a caption column, in one or
// several shards ("data/train-00000-of-00003.parquet"). Shards are read one row
// group at a time; image bytes stay in memory up to a budget, then spill to
// files named by content hash.
import { stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { basename, dirname, join } from "node:path";

import { asyncBufferFromFile, parquetMetadataAsync, parquetReadObjects, parquetSchema } from "hyparquet";
import { compressors } from "hyparquet-compressors";

import { writeFileAtomic } from "../io/atomic.js";
import { decodeCaption, safeJoin, sha256, throwIfAborted, walkFiles } from "./files.js";
import type { ReaderResult } from "./imagefolder.js";
import type { Candidate } from "./probe.js";
import { inferSplits } from "./splits.js";
import { DATA_DEFAULTS, DatasetError, type DatasetIssue, type DatasetSpec, type OpenOptions } from "./types.js";

export async function readParquet(
  root: string,
  spec: DatasetSpec,
  options: OpenOptions,
  report: DatasetIssue[],
): Promise<ReaderResult> {
  const split = spec.split ?? DATA_DEFAULTS.split;
  let folder: string;
  let shards: string[];
  let splitNames: string[];
  if ((await stat(root)).isFile()) {
    folder = dirname(root);
    shards = [basename(root)];
    splitNames = [split];
  } else {
    folder = root;
    const files = (await walkFiles(root, options.signal)).filter((f) => f.endsWith(".parquet"));
    const { splits, rule } = inferSplits(files);
    splitNames = [...splits.keys()];
    const found = splits.get(split);
    if (!found) {
      throw new DatasetError(
        `split "${split}" not found in ${root}; splits found (by ${rule}): ${splitNames.join(", ") || "none"}`,
      );
    }
    shards = found;
  }
  const budget = { left: spec.maxInMemoryBytes ?? DATA_DEFAULTS.maxInMemoryBytes };
  const spillDir = spec.spillDir ?? join(tmpdir(), "sdtune-parquet-images");
  const candidates: Candidate[] = [];
  for (const shard of shards) {
    await readShard(folder, shard, spec, options, report, candidates, budget, spillDir);
  }
  const searched = `${root} (parquet, split "${split}": ${shards.length} shard(s): ${shards.slice(0, 5).join(", ")}${
    shards.length > 5 ? ", ..." : ""
  })`;
  return { candidates, split, splits: splitNames, searched };
}

async function readShard(
  folder: string,
  shard: string,
  spec: DatasetSpec,
  options: OpenOptions,
  report: DatasetIssue[],
  out: Candidate[],
  budget: { left: number },
  spillDir: string,
): Promise<void> {
  const path = join(folder, shard);
  let file;
  let metadata;
  try {
    file = await asyncBufferFromFile(path);
    metadata = await parquetMetadataAsync(file);
  } catch (error) {
    throw new DatasetError(`${path} is not a readable parquet file: ${(error as Error).message}`);
  }
  const columns = parquetSchema(metadata).children.map((c) => c.element.name);
  const imageColumn = spec.imageColumn ?? imageColumnFromFeatures(metadata.key_value_metadata) ?? "image";
  const captionColumn = spec.captionColumn ?? DATA_DEFAULTS.captionColumn;
  for (const [what, name] of [
    ["image", imageColumn],
    ["caption", captionColumn],
  ] as const) {
    if (!columns.includes(name)) {
      throw new DatasetError(
        `${path} has no ${what} column "${name}"; columns: ${columns.join(", ")}. ` +
          `Choose one with ${what === "image" ? "imageColumn" : "captionColumn (--caption-column)"}.`,
      );
    }
  }
  const total = Number(metadata.num_rows);
  let rowStart = 0;
  for (const group of metadata.row_groups) {
    throwIfAborted(options.signal);
    const rowEnd = rowStart + Number(group.num_rows);
    const rows = await parquetReadObjects({
      file,
      metadata,
      columns: [imageColumn, captionColumn],
      rowStart,
      rowEnd,
      compressors,
      utf8: false, // keep unannotated binary (the image bytes) as bytes
    });
    for (let i = 0; i < rows.length; i++) {
      const row = rows[i]!;
      const name = `${shard}#${rowStart + i}`;
      const candidate = await rowCandidate(folder, shard, name, row[imageColumn], row[captionColumn], spec, report);
      if (candidate) out.push(await keepOrSpill(candidate, budget, spillDir));
    }
    rowStart = rowEnd;
    options.onProgress?.({ phase: "read-parquet", step: rowStart, total, shard });
  }
}

async function rowCandidate(
  folder: string,
  shard: string,
  name: string,
  image: unknown,
  captionValue: unknown,
  spec: DatasetSpec,
  report: DatasetIssue[],
): Promise<Candidate | undefined> {
  let caption = "";
  if (captionValue instanceof Uint8Array) {
    const decoded = decodeCaption(captionValue);
    if (decoded.invalidUtf8) {
      const skip = spec.invalidUtf8 === "skip";
      report.push({
        file: name,
        code: "invalid-utf8",
        reason: skip ? "the caption is not valid UTF-8" : "the caption is not valid UTF-8; invalid bytes became U+FFFD",
        skipped: skip,
      });
      if (skip) return undefined;
    }
    caption = decoded.text;
  } else if (typeof captionValue === "string") caption = captionValue;
  else if (captionValue === null || captionValue === undefined) {
    report.push({ file: name, code: "missing-caption", reason: "the caption is null; it is empty", skipped: false });
  } else caption = String(captionValue);

  const base = { name, caption, role: "train" as const, repeats: 1 };
  const struct = image as { bytes?: unknown; path?: unknown } | Uint8Array | null | undefined;
  const bytes = struct instanceof Uint8Array ? struct : struct?.bytes;
  if (bytes instanceof Uint8Array) {
    // Own the bytes: a view would keep the whole decoded page alive.
    return { ...base, source: { kind: "bytes", data: bytes.slice() } };
  }
  const relPath = struct && !(struct instanceof Uint8Array) ? struct.path : undefined;
  if (typeof relPath === "string" && relPath) {
    const shardDir = shard.includes("/") ? shard.slice(0, shard.lastIndexOf("/")) : "";
    const joined = safeJoin(shardDir, relPath);
    if ("error" in joined) {
      report.push({ file: name, code: "unsafe-path", reason: `image path: ${joined.error}`, skipped: true });
      return undefined;
    }
    return { ...base, source: { kind: "file", path: join(folder, joined.rel) } };
  }
  report.push({ file: name, code: "missing-file", reason: "the image is null (no bytes and no path)", skipped: true });
  return undefined;
}

/** Keeps bytes in memory while the budget lasts; after that writes them to spillDir/<sha256>. */
async function keepOrSpill(candidate: Candidate, budget: { left: number }, spillDir: string): Promise<Candidate> {
  if (candidate.source.kind !== "bytes") return candidate;
  const data = candidate.source.data;
  if (data.length <= budget.left) {
    budget.left -= data.length;
    return candidate;
  }
  const path = join(spillDir, sha256(data));
  await writeFileAtomic(path, data);
  return { ...candidate, source: { kind: "file", path } };
}

/** The column whose HF feature type is Image, from the "huggingface" key-value metadata. */
function imageColumnFromFeatures(kv: { key: string; value?: string }[] | undefined): string | undefined {
  const value = kv?.find((e) => e.key === "huggingface")?.value;
  if (!value) return undefined;
  try {
    const features = (JSON.parse(value) as { info?: { features?: Record<string, { _type?: string }> } }).info?.features;
    return Object.entries(features ?? {}).find(([, f]) => f?._type === "Image")?.[0];
  } catch {
    return undefined;
  }
}
