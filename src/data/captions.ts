// kohya-style folders: each image has a same-name caption file beside it
// ("cat.png" + "cat.txt"); a first-level folder named "N_tokens" repeats its
// images N times per epoch and lends "tokens" as the caption of images without one.
import { readFile } from "node:fs/promises";
import { join } from "node:path";

import { decodeCaption, firstLine, isImageFile, mapLimit, walkFiles } from "./files.js";
import type { ReaderResult } from "./imagefolder.js";
import type { Candidate } from "./probe.js";
import { DATA_DEFAULTS, type DatasetIssue, type DatasetSpec, type ItemRole, type OpenOptions } from "./types.js";

const KOHYA_FOLDER = /^(\d+)_(.*)$/;

/**
 * kohya's folder rule (sd-scripts config_util, extract_dreambooth_params): a first-level
 * folder "<repeats>_<caption or class>" repeats its images that many times per epoch and
 * lends its caption to images without a caption file ("10_sks dog" -> 10, "sks dog").
 */
export function kohyaFolder(rel: string): { folder: string; repeats: number; caption: string } | undefined {
  if (!rel.includes("/")) return undefined;
  const folder = rel.slice(0, rel.indexOf("/"));
  const m = KOHYA_FOLDER.exec(folder);
  return m ? { folder, repeats: Number(m[1]), caption: m[2]!.trim() } : undefined;
}

export async function readCaptionFolder(
  root: string,
  spec: DatasetSpec,
  options: OpenOptions,
  report: DatasetIssue[],
): Promise<ReaderResult> {
  const ext = normaliseExt(spec.captionExt ?? DATA_DEFAULTS.captionExt);
  const files = await walkFiles(root, options.signal);
  const images = files.filter(isImageFile);
  const candidates = await captionCandidates(root, images, new Set(files), ext, spec, options, report, "train");
  const searched = `${root} (caption files "*${ext}": ${images.length} image files)`;
  return { candidates: candidates.filter((c): c is Candidate => c !== undefined), splits: [], searched };
}

/** Candidates for `images` (relative paths) with their sidecar captions; undefined where skipped. */
export async function captionCandidates(
  root: string,
  images: readonly string[],
  existing: ReadonlySet<string>,
  ext: string,
  spec: DatasetSpec,
  options: OpenOptions,
  report: DatasetIssue[],
  role: ItemRole,
  fallbackCaption?: string,
): Promise<(Candidate | undefined)[]> {
  return mapLimit(
    images,
    options.concurrency ?? DATA_DEFAULTS.concurrency,
    async (rel) => {
      const folder = kohyaFolder(rel);
      if (folder && folder.repeats < 1) {
        const reason = `folder "${folder.folder}" repeats its images 0 times (kohya skips it); rename it to 1_...`;
        report.push({ file: rel, code: "zero-repeats", reason, skipped: true });
        return undefined;
      }
      const repeats = folder?.repeats ?? 1;
      const captionRel = rel.slice(0, rel.length - extOf(rel).length) + ext;
      const candidate = (caption: string): Candidate => ({
        name: rel,
        source: { kind: "file", path: join(root, rel) },
        caption,
        role,
        repeats,
      });
      if (!existing.has(captionRel)) {
        const fallback = fallbackCaption ?? folder?.caption;
        if (fallback !== undefined) return candidate(fallback);
        if (spec.missingCaption === "skip") {
          report.push({ file: rel, code: "missing-caption", reason: `no caption file ${captionRel}`, skipped: true });
          return undefined;
        }
        report.push({
          file: rel,
          code: "missing-caption",
          reason: `no caption file ${captionRel}; the caption is empty`,
          skipped: false,
        });
        return candidate("");
      }
      const { text, invalidUtf8 } = decodeCaption(await readFile(join(root, captionRel)));
      if (invalidUtf8) {
        const skip = spec.invalidUtf8 === "skip";
        report.push({
          file: captionRel,
          code: "invalid-utf8",
          reason: skip
            ? "the caption is not valid UTF-8"
            : "the caption is not valid UTF-8; invalid bytes became U+FFFD",
          skipped: skip,
        });
        if (skip) return undefined;
      }
      return candidate(firstLine(text));
    },
    options.signal,
  );
}

const extOf = (rel: string): string => {
  const dot = rel.lastIndexOf(".");
  return dot > rel.lastIndexOf("/") ? rel.slice(dot) : "";
};

export const normaliseExt = (ext: string): string => (ext.startsWith(".") ? ext : `.${ext}`);
