// `sdtune dataset build`: a folder of images plus captions (sidecar files or one
// captions file) -> an HF imagefolder with metadata.jsonl that `datasets`,
// diffusers' scripts and sdtune all read. kohya "<repeats>_<caption>" folders keep their
// caption (for images without one) and their repeats (a `repeats` column). Every file is
// written atomically.
import { readFile } from "node:fs/promises";
import { basename, extname, join, relative, resolve, sep } from "node:path";

import { copyFileAtomic, writeFileAtomic } from "../io/atomic.js";
import { kohyaFolder, normaliseExt } from "./captions.js";
import { parseCsv } from "./csv.js";
import { compareStrings, decodeCaption, firstLine, isImageFile, walkFiles } from "./files.js";
import { probeCandidates, type Candidate } from "./probe.js";
import { DATA_DEFAULTS, DatasetError, type DatasetIssue, type OpenOptions } from "./types.js";

export interface BuildOptions extends OpenOptions {
  /** A captions file: .jsonl or .csv rows with file_name and a caption column, or a .json {file: caption} object. */
  captionsFile?: string;
  /** Sidecar caption extension when there is no captions file (default ".txt"). */
  captionExt?: string;
  /** Output folder (default: DIR itself, which then only gains metadata.jsonl). */
  out?: string;
  /** Caption column to write, and to read from a captions file (default "text"). */
  captionColumn?: string;
  maxPixels?: number;
}

export interface BuildResult {
  out: string;
  metadataPath: string;
  images: number;
  copied: number;
  issues: DatasetIssue[];
}

export async function buildImageFolder(dir: string, options: BuildOptions = {}): Promise<BuildResult> {
  const source = resolve(dir);
  const out = resolve(options.out ?? source);
  if (out !== source && (out + sep).startsWith(source + sep)) {
    throw new DatasetError(
      `--out ${out} is inside ${source}; choose a folder outside it (or leave --out off to write in place)`,
    );
  }
  const column = options.captionColumn ?? DATA_DEFAULTS.captionColumn;
  const files = await walkFiles(source, options.signal);
  const images = files.filter(isImageFile);
  const issues: DatasetIssue[] = [];
  const captions = options.captionsFile
    ? await captionsFromFile(options.captionsFile, column, images, issues)
    : await captionsFromSidecars(
        source,
        images,
        new Set(files),
        normaliseExt(options.captionExt ?? DATA_DEFAULTS.captionExt),
        issues,
      );
  const candidates = buildCandidates(source, images, captions, options.captionsFile === undefined, issues);
  const items = await probeCandidates(
    candidates,
    { path: source, verify: "decode", maxPixels: options.maxPixels },
    options,
    issues,
  );
  for (const item of items) {
    if (!captions.has(item.name)) {
      issues.push({
        file: item.name,
        code: "missing-caption",
        reason: "no caption; written with an empty one",
        skipped: false,
      });
    }
  }
  if (items.length === 0) {
    throw new DatasetError(`no usable images in ${source} (${images.length} image files)`, issues);
  }
  let copied = 0;
  if (out !== source) {
    for (const item of items) {
      await copyFileAtomic(join(source, item.name), join(out, item.name));
      copied++;
      options.onProgress?.({ phase: "copy", step: copied, total: items.length });
    }
  }
  const lines = [...items]
    .sort((a, b) => compareStrings(a.name, b.name))
    .map((item) =>
      JSON.stringify({
        file_name: item.name,
        [column]: item.caption,
        ...(kohyaFolder(item.name) ? { repeats: item.repeats } : {}),
      }),
    );
  const metadataPath = join(out, "metadata.jsonl");
  await writeFileAtomic(metadataPath, lines.join("\n") + "\n");
  return { out, metadataPath, images: items.length, copied, issues };
}

/**
 * One candidate per image. kohya "<repeats>_<caption>" folders lend their caption where an
 * image has none (unless a captions file is the source) and their repeats, which the metadata
 * keeps as a `repeats` column (sdtune's imagefolder reader honours it; HF datasets keeps it).
 */
function buildCandidates(
  source: string,
  images: string[],
  captions: Map<string, string>,
  folderCaptions: boolean,
  issues: DatasetIssue[],
): Candidate[] {
  const candidates: Candidate[] = [];
  for (const rel of images) {
    const folder = kohyaFolder(rel);
    if (folder && folder.repeats < 1) {
      const reason = `folder "${folder.folder}" repeats its images 0 times (kohya skips it); rename it to 1_...`;
      issues.push({ file: rel, code: "zero-repeats", reason, skipped: true });
      continue;
    }
    if (folder && folderCaptions && !captions.has(rel)) captions.set(rel, folder.caption);
    candidates.push({
      name: rel,
      source: { kind: "file", path: join(source, rel) },
      caption: captions.get(rel) ?? "",
      role: "train",
      repeats: folder?.repeats ?? 1,
    });
  }
  return candidates;
}

async function captionsFromSidecars(
  root: string,
  images: string[],
  existing: Set<string>,
  ext: string,
  issues: DatasetIssue[],
): Promise<Map<string, string>> {
  const captions = new Map<string, string>();
  for (const rel of images) {
    const captionRel = rel.slice(0, rel.length - extname(rel).length) + ext;
    if (!existing.has(captionRel)) continue;
    const { text, invalidUtf8 } = decodeCaption(await readFile(join(root, captionRel)));
    if (invalidUtf8) {
      issues.push({
        file: captionRel,
        code: "invalid-utf8",
        reason: "not valid UTF-8; invalid bytes became U+FFFD",
        skipped: false,
      });
    }
    captions.set(rel, firstLine(text));
  }
  return captions;
}

/** Captions keyed by image path; a key may also be a bare file name when that name is unique. */
async function captionsFromFile(
  path: string,
  column: string,
  images: string[],
  issues: DatasetIssue[],
): Promise<Map<string, string>> {
  const { text, invalidUtf8 } = decodeCaption(await readFile(path));
  if (invalidUtf8)
    issues.push({
      file: path,
      code: "invalid-utf8",
      reason: "not valid UTF-8; invalid bytes became U+FFFD",
      skipped: false,
    });
  const entries: [string, string][] = [];
  const ext = extname(path).toLowerCase();
  if (ext === ".json") {
    const value = JSON.parse(text) as unknown;
    if (Array.isArray(value)) {
      for (const row of value as Record<string, unknown>[])
        entries.push([String(row.file_name), String(row[column] ?? "")]);
    } else if (value && typeof value === "object") {
      for (const [file, caption] of Object.entries(value)) entries.push([file, String(caption)]);
    } else throw new DatasetError(`${path} must hold an object {file: caption} or an array of rows`);
  } else if (ext === ".csv") {
    const table = parseCsv(text);
    if (!table.header.includes("file_name") || !table.header.includes(column)) {
      throw new DatasetError(`${path} needs columns file_name and ${column}; it has ${table.header.join(", ")}`);
    }
    for (const row of table.rows) entries.push([row.values.file_name!, row.values[column]!]);
  } else if (ext === ".jsonl") {
    text.split(/\r?\n/).forEach((line, i) => {
      if (!line.trim()) return;
      try {
        const row = JSON.parse(line) as Record<string, unknown>;
        entries.push([String(row.file_name), String(row[column] ?? "")]);
      } catch {
        issues.push({ file: `${path}:${i + 1}`, code: "bad-metadata-row", reason: "not valid JSON", skipped: true });
      }
    });
  } else {
    throw new DatasetError(`--captions ${path}: use a .jsonl, .csv or .json file`);
  }
  const byRel = new Set(images);
  const byBase = new Map<string, string | null>();
  for (const rel of images) byBase.set(basename(rel), byBase.has(basename(rel)) ? null : rel);
  const captions = new Map<string, string>();
  for (const [file, caption] of entries) {
    const key = file.split("\\").join("/").replace(/^\.\//, "");
    const rel = byRel.has(key) ? key : byBase.get(key);
    if (!rel) {
      issues.push({
        file: `${relative(process.cwd(), path)}: ${file}`,
        code: "missing-file",
        reason: "names no image in the folder",
        skipped: true,
      });
      continue;
    }
    captions.set(rel, caption);
  }
  return captions;
}
