// HF `datasets` imagefolder: images in (nested) folders, captions in
// metadata.jsonl or metadata.csv rows whose `file_name` is relative to the
// metadata file's folder; splits from folder or file names (see splits.ts).
import { readFile } from "node:fs/promises";
import { join } from "node:path";

import { parseCsv } from "./csv.js";
import { compareStrings, decodeCaption, isImageFile, safeJoin, walkFiles } from "./files.js";
import type { Candidate } from "./probe.js";
import { inferSplits } from "./splits.js";
import { DATA_DEFAULTS, DatasetError, type DatasetIssue, type DatasetSpec, type OpenOptions } from "./types.js";

const METADATA_FILES = new Set(["metadata.jsonl", "metadata.csv"]);
const baseName = (rel: string): string => rel.slice(rel.lastIndexOf("/") + 1);
const dirOf = (rel: string): string => (rel.includes("/") ? rel.slice(0, rel.lastIndexOf("/")) : "");

export interface ReaderResult {
  candidates: Candidate[];
  split?: string;
  splits: string[];
  /** What was searched, for the empty-dataset error. */
  searched: string;
}

export async function readImageFolder(
  root: string,
  spec: DatasetSpec,
  options: OpenOptions,
  report: DatasetIssue[],
): Promise<ReaderResult> {
  const captionColumn = spec.captionColumn ?? DATA_DEFAULTS.captionColumn;
  const all = await walkFiles(root, options.signal);
  const dataFiles = all.filter((f) => isImageFile(f) || METADATA_FILES.has(baseName(f)));
  const { splits, rule } = inferSplits(dataFiles);
  const split = spec.split ?? DATA_DEFAULTS.split;
  const files = splits.get(split);
  if (!files) {
    throw new DatasetError(
      `split "${split}" not found in ${root}; splits found (by ${rule}): ${[...splits.keys()].join(", ") || "none"}`,
    );
  }
  const metadataFiles = files.filter((f) => METADATA_FILES.has(baseName(f)));
  const imageFiles = files.filter((f) => isImageFile(f));
  const searched = `${root} (imagefolder, split "${split}": ${imageFiles.length} image files, metadata: ${
    metadataFiles.join(", ") || "none"
  })`;

  if (metadataFiles.length === 0) {
    if (imageFiles.length > 0) {
      report.push({
        file: root,
        code: "missing-caption",
        reason: `no metadata.jsonl or metadata.csv for split "${split}": every image gets an empty caption`,
        skipped: false,
      });
    }
    const candidates = imageFiles.map((rel) => fileCandidate(root, rel, ""));
    return { candidates, split, splits: [...splits.keys()], searched };
  }
  const extensions = new Set(metadataFiles.map((f) => baseName(f)));
  if (extensions.size > 1) {
    throw new DatasetError(
      `${root} mixes metadata.jsonl and metadata.csv (${metadataFiles.join(", ")}); keep one format, as HF datasets requires`,
    );
  }

  const existing = new Set(all);
  const referenced = new Set<string>();
  const candidates: Candidate[] = [];
  let sawCaptionColumn = false;
  const columns = new Set<string>();
  for (const metaRel of [...metadataFiles].sort(compareStrings)) {
    const rows = await readMetadataRows(join(root, metaRel), metaRel, report);
    for (const row of rows) {
      Object.keys(row.values).forEach((k) => columns.add(k));
      const where = `${metaRel}:${row.line}`;
      const fileName = row.values.file_name;
      if (typeof fileName !== "string") {
        report.push({
          file: where,
          code: "bad-metadata-row",
          reason: "the row has no string file_name",
          skipped: true,
        });
        continue;
      }
      const joined = safeJoin(dirOf(metaRel), fileName);
      if ("error" in joined) {
        report.push({ file: where, code: "unsafe-path", reason: joined.error, skipped: true });
        continue;
      }
      if (!existing.has(joined.rel)) {
        report.push({
          file: where,
          code: "missing-file",
          reason: `file_name "${fileName}" names ${joined.rel}, which does not exist`,
          skipped: true,
        });
        continue;
      }
      referenced.add(joined.rel);
      const caption = captionOf(row.values[captionColumn]);
      if (captionColumn in row.values) sawCaptionColumn = true;
      if (caption === undefined) {
        report.push({
          file: joined.rel,
          code: "missing-caption",
          reason: `${where} has no "${captionColumn}" value; the caption is empty`,
          skipped: false,
        });
      }
      if (row.invalidUtf8) {
        if (spec.invalidUtf8 === "skip") {
          report.push({ file: where, code: "invalid-utf8", reason: "the row is not valid UTF-8", skipped: true });
          continue;
        }
        report.push({
          file: where,
          code: "invalid-utf8",
          reason: "the row is not valid UTF-8; invalid bytes became U+FFFD",
          skipped: false,
        });
      }
      const repeats = repeatsOf(row.values.repeats);
      if (repeats === undefined) {
        const reason = `"repeats" must be an integer >= 1 (got ${JSON.stringify(row.values.repeats)})`;
        report.push({ file: where, code: "bad-metadata-row", reason, skipped: true });
        continue;
      }
      candidates.push({ ...fileCandidate(root, joined.rel, caption ?? ""), repeats });
    }
  }
  if (candidates.length > 0 && !sawCaptionColumn) {
    throw new DatasetError(
      `no metadata row in ${metadataFiles.join(", ")} has the caption column "${captionColumn}"; ` +
        `columns found: ${[...columns].join(", ")}. Choose one with captionColumn (--caption-column).`,
      report,
    );
  }
  for (const rel of imageFiles) {
    if (!referenced.has(rel)) {
      report.push({
        file: rel,
        code: "no-metadata-row",
        reason: "no metadata row names this image; add one or remove the file",
        skipped: true,
      });
    }
  }
  return { candidates, split, splits: [...splits.keys()], searched };
}

const fileCandidate = (root: string, rel: string, caption: string): Candidate => ({
  name: rel,
  source: { kind: "file", path: join(root, rel) },
  caption,
  role: "train",
  repeats: 1,
});

/** A row's optional `repeats` column (what `dataset build` writes for kohya folders): 1 when absent. */
function repeatsOf(value: unknown): number | undefined {
  if (value === undefined || value === null) return 1;
  const n = typeof value === "string" && value.trim() !== "" ? Number(value) : value;
  return typeof n === "number" && Number.isSafeInteger(n) && n >= 1 ? n : undefined;
}

/** A caption value as HF datasets would hand it: strings as they are, lists by their first entry. */
function captionOf(value: unknown): string | undefined {
  if (value === undefined || value === null) return undefined;
  if (typeof value === "string") return value;
  if (Array.isArray(value)) return value.length > 0 ? captionOf(value[0]) : undefined;
  return String(value);
}

interface MetadataRow {
  line: number;
  values: Record<string, unknown>;
  invalidUtf8: boolean;
}

/** Rows of metadata.jsonl / metadata.csv; unparsable rows go to the report. */
async function readMetadataRows(path: string, rel: string, report: DatasetIssue[]): Promise<MetadataRow[]> {
  const { text, invalidUtf8 } = decodeCaption(await readFile(path));
  // Rows whose text holds U+FFFD came from invalid bytes when the file was not valid UTF-8.
  const flag = (s: string): boolean => invalidUtf8 && s.includes("\uFFFD");
  if (rel.endsWith(".csv")) {
    const table = parseCsv(text);
    for (const bad of table.malformed) {
      report.push({ file: `${rel}:${bad.line}`, code: "bad-metadata-row", reason: bad.reason, skipped: true });
    }
    return table.rows.map((r) => ({
      line: r.line,
      values: r.values,
      invalidUtf8: Object.values(r.values).some(flag),
    }));
  }
  const rows: MetadataRow[] = [];
  text.split(/\r?\n/).forEach((line, i) => {
    if (line.trim() === "") return;
    let value: unknown;
    try {
      value = JSON.parse(line);
    } catch (error) {
      report.push({
        file: `${rel}:${i + 1}`,
        code: "bad-metadata-row",
        reason: `not valid JSON: ${(error as Error).message}`,
        skipped: true,
      });
      return;
    }
    if (typeof value !== "object" || value === null || Array.isArray(value)) {
      report.push({ file: `${rel}:${i + 1}`, code: "bad-metadata-row", reason: "not a JSON object", skipped: true });
      return;
    }
    rows.push({ line: i + 1, values: value as Record<string, unknown>, invalidUtf8: flag(line) });
  });
  return rows;
}
