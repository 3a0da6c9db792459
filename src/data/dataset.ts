// openDataset: resolve the path, pick a reader, read every image's header and
// content key once, and report what was skipped.
import { realpath, stat } from "node:fs/promises";
import { dirname, extname, resolve, sep } from "node:path";

import { checkInstanceToken } from "./caption-text.js";
import { kohyaFolder, normaliseExt, readCaptionFolder } from "./captions.js";
import { readDreamBooth } from "./dreambooth.js";
import { isImageFile, walkFiles } from "./files.js";
import { readImageFolder, type ReaderResult } from "./imagefolder.js";
import { readParquet } from "./parquet.js";
import { probeCandidates, type Candidate } from "./probe.js";
import {
  DATA_DEFAULTS,
  DatasetError,
  type DataItem,
  type Dataset,
  type DatasetIssue,
  type DatasetSpec,
  type DatasetType,
  type OpenOptions,
} from "./types.js";
import { resolveDataset as resolveHubDataset } from "../hub/index.js";

/**
 * A local path for `pathOrId`: an existing file or folder as it is; otherwise a
 * Hugging Face dataset id, fetched through the hub cache (src/hub).
 */
export async function resolveDatasetPath(
  pathOrId: string,
  options: { signal?: AbortSignal; revision?: string } = {},
): Promise<string> {
  const local = resolve(pathOrId);
  if (await exists(local)) return local;
  const looksLikeHubId = /^[\w.-]+\/[\w.-]+$/.test(pathOrId) && !pathOrId.startsWith(".");
  if (!looksLikeHubId) throw new DatasetError(`dataset path ${local} does not exist`);
  return resolveHubDataset(pathOrId, { signal: options.signal, revision: options.revision });
}

export async function openDataset(spec: DatasetSpec, options: OpenOptions = {}): Promise<Dataset> {
  const root = await resolveDatasetPath(spec.path, { signal: options.signal, revision: spec.revision });
  const type = spec.type && spec.type !== "auto" ? spec.type : await detectType(root, spec);
  const report: DatasetIssue[] = [];
  let result: ReaderResult;
  let classCandidates: Candidate[] = [];
  switch (type) {
    case "imagefolder":
      result = await readImageFolder(await folderOf(root), spec, options, report);
      break;
    case "parquet":
      result = await readParquet(root, spec, options, report);
      break;
    case "captions":
      result = await readCaptionFolder(await folderOf(root), spec, options, report);
      break;
    case "dreambooth": {
      const db = await readDreamBooth(await folderOf(root), spec, options, report);
      result = db;
      classCandidates = db.classCandidates;
      break;
    }
  }
  const probeIssues: DatasetIssue[] = [];
  const inside = await linksInside(
    [...result.candidates, ...classCandidates],
    await allowedRoots(root, spec),
    probeIssues,
  );
  const items = withRepeats(await probeCandidates(inside, spec, options, probeIssues), type, spec.repeats);
  // A caption warning about an image that turned out unusable is noise: the skip says it all.
  const unusable = new Set(probeIssues.map((i) => i.file));
  report.splice(0, report.length, ...report.filter((i) => i.skipped || !unusable.has(i.file)), ...probeIssues);
  const trainable = items.filter((i) => i.role !== "class");
  if (trainable.length === 0) {
    const skipped = report.filter((r) => r.skipped);
    const counts = new Map<string, number>();
    for (const r of skipped) counts.set(r.code, (counts.get(r.code) ?? 0) + 1);
    const summary = [...counts].map(([code, n]) => `${n} ${code}`).join(", ");
    throw new DatasetError(
      `no usable images in ${result.searched}` + (skipped.length ? `; skipped ${skipped.length}: ${summary}` : ""),
      report,
    );
  }
  const tokenIssues = checkInstanceToken({ ...spec, type }, items);
  if (tokenIssues.length > 0 && spec.tokenCheck === "error") {
    throw new DatasetError(tokenIssues.map((i) => `${i.file}: ${i.reason}`).join("\n"), [...report, ...tokenIssues]);
  }
  report.push(...tokenIssues);
  const classCount = items.length - trainable.length;
  return {
    type,
    root,
    split: result.split,
    splits: result.splits,
    items,
    report,
    classImagesNeeded: Math.max(0, (spec.numClassImages ?? 0) - classCount),
    spec,
  };
}

/**
 * Picks a reader from the folder: parquet shards -> parquet; metadata.jsonl/csv
 * -> imagefolder; an instance prompt -> dreambooth; caption sidecars or kohya
 * "<repeats>_<caption>" folders -> captions; otherwise an imagefolder without captions.
 */
export async function detectType(root: string, spec: DatasetSpec): Promise<DatasetType> {
  if (spec.instancePrompt !== undefined) return "dreambooth";
  const info = await stat(root);
  if (info.isFile()) {
    if (extname(root).toLowerCase() === ".parquet") return "parquet";
    throw new DatasetError(`${root} is a file; a dataset is a folder or a .parquet file`);
  }
  const files = await walkFiles(root);
  const names = new Set(files.map((f) => f.slice(f.lastIndexOf("/") + 1)));
  const images = files.filter(isImageFile);
  if (names.has("metadata.jsonl") || names.has("metadata.csv")) return "imagefolder";
  if (images.length === 0 && files.some((f) => f.endsWith(".parquet"))) return "parquet";
  const ext = normaliseExt(spec.captionExt ?? DATA_DEFAULTS.captionExt);
  const fileSet = new Set(files);
  if (images.some((f) => fileSet.has(f.slice(0, f.length - extname(f).length) + ext))) return "captions";
  // kohya's layout (img/10_sks dog/*.jpg): repeats and caption from the folder name.
  if (images.some((f) => kohyaFolder(f) !== undefined)) return "captions";
  return "imagefolder";
}

/**
 * The folders a dataset's files may live in (after following links): the dataset folder, the
 * class folder, and for a hub dataset its cache storage (snapshot files link into its blobs/).
 */
async function allowedRoots(root: string, spec: DatasetSpec): Promise<{ lexical: string[]; real: string[] }> {
  const roots = [root];
  if (spec.classDir !== undefined) roots.push(resolve(spec.classDir));
  const lexical = roots.map((r) => withSep(resolve(r)));
  if (!(await exists(resolve(spec.path)))) roots.push(dirname(dirname(root)));
  const real = await Promise.all(roots.map((r) => realpath(r).catch(() => resolve(r))));
  return { lexical, real: real.map(withSep) };
}

const withSep = (dir: string): string => (dir.endsWith(sep) ? dir : dir + sep);

/**
 * The candidates whose files (links followed) stay inside the dataset's folders; the others are
 * reported as skipped. Files a reader wrote elsewhere itself (parquet images spilled to disk) are
 * not dataset files and are kept.
 */
async function linksInside(
  candidates: Candidate[],
  roots: { lexical: string[]; real: string[] },
  report: DatasetIssue[],
): Promise<Candidate[]> {
  const kept: Candidate[] = [];
  for (const c of candidates) {
    const path = c.source.kind === "file" ? resolve(c.source.path) : undefined;
    if (path === undefined || !roots.lexical.some((r) => path.startsWith(r))) {
      kept.push(c);
      continue;
    }
    const target = await realpath(path).catch(() => undefined);
    if (target === undefined || roots.real.some((r) => target.startsWith(r))) kept.push(c);
    else {
      report.push({
        file: c.name,
        code: "unsafe-path",
        reason: `a link to ${target}, outside the dataset folder; links out of a dataset are not followed`,
        skipped: true,
      });
    }
  }
  return kept;
}

async function folderOf(root: string): Promise<string> {
  if ((await stat(root)).isDirectory()) return root;
  throw new DatasetError(`${root} is not a folder`);
}

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch {
    return false;
  }
}

/**
 * The config's `repeats` for every reader: DreamBooth folders take it as their repeats (the
 * reader applied it); elsewhere it multiplies each image's own (a kohya "N_name" folder, a
 * `repeats` column), as kohya's subset num_repeats scales a whole folder.
 */
function withRepeats(items: DataItem[], type: string, repeats: number | undefined): DataItem[] {
  if (type === "dreambooth" || repeats === undefined || repeats === 1) return items;
  return items.map((item) => (item.role === "class" ? item : { ...item, repeats: item.repeats * repeats }));
}
