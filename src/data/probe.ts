// Turns reader candidates into items: reads each image once for its content key
// (sha256) and its header (size, format), and skips what cannot be trained on.
import { readFile } from "node:fs/promises";
import { extname } from "node:path";
import sharp, { type Metadata } from "sharp";

import { mapLimit, sha256 } from "./files.js";
import {
  DATA_DEFAULTS,
  type DataItem,
  type DatasetIssue,
  type DatasetSpec,
  type ImageSource,
  type ItemRole,
  type OpenOptions,
} from "./types.js";

/** An image a reader found, before it is read. */
export interface Candidate {
  name: string;
  source: ImageSource;
  caption: string;
  role: ItemRole;
  repeats: number;
}

/** Decoders that give photos; vector and document formats are refused. */
const RASTER_FORMATS = new Set(["jpeg", "png", "webp", "tiff", "gif", "heif", "jp2", "jxl"]);
const UNDECODABLE_EXTENSIONS = new Set([".bmp", ".heic", ".heif"]);

export async function probeCandidates(
  candidates: readonly Candidate[],
  spec: DatasetSpec,
  options: OpenOptions,
  report: DatasetIssue[],
): Promise<DataItem[]> {
  const maxPixels = spec.maxPixels ?? DATA_DEFAULTS.maxPixels;
  let done = 0;
  const probed = await mapLimit(
    candidates,
    options.concurrency ?? DATA_DEFAULTS.concurrency,
    async (candidate) => {
      const result = await probeOne(candidate, maxPixels, spec.verify === "decode");
      done++;
      options.onProgress?.({ phase: "scan", step: done, total: candidates.length });
      return result;
    },
    options.signal,
  );
  const items: DataItem[] = [];
  for (const result of probed) {
    if ("issue" in result) report.push(result.issue);
    else items.push(result.item);
  }
  return items;
}

type ProbeResult = { item: DataItem } | { issue: DatasetIssue };

async function probeOne(candidate: Candidate, maxPixels: number, decode: boolean): Promise<ProbeResult> {
  const skip = (code: DatasetIssue["code"], reason: string): ProbeResult => ({
    issue: { file: candidate.name, code, reason, skipped: true },
  });
  let bytes: Uint8Array;
  try {
    bytes = await readSource(candidate.source);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === "ENOENT") return skip("missing-file", "the file does not exist");
    return skip("unreadable", `cannot read the file: ${(error as Error).message}`);
  }
  if (bytes.length === 0) return skip("empty-file", "the file is empty (0 bytes)");

  let meta: Metadata;
  try {
    meta = await sharp(bytes, { limitInputPixels: false }).metadata();
  } catch (error) {
    const message = (error as Error).message;
    const ext = candidate.source.kind === "file" ? extname(candidate.source.path).toLowerCase() : "";
    if (/unsupported image format/i.test(message)) {
      return UNDECODABLE_EXTENSIONS.has(ext)
        ? skip("unsupported-format", `${ext} images cannot be decoded here; convert them to PNG or JPEG`)
        : skip("not-an-image", "the file is not an image in a format sharp reads (JPEG, PNG, WebP, TIFF, GIF, AVIF)");
    }
    return skip("unreadable", `corrupt image header: ${message}`);
  }
  if (!RASTER_FORMATS.has(meta.format)) {
    return skip("unsupported-format", `${meta.format} is not a raster photo format; convert it to PNG or JPEG`);
  }
  const width = meta.autoOrient?.width ?? meta.width;
  const height = meta.autoOrient?.height ?? meta.height;
  if (!(width > 0 && height > 0)) return skip("unreadable", "the image header gives no size");
  if (width * height > maxPixels) {
    return skip(
      "too-many-pixels",
      `${width}x${height} is ${width * height} pixels, over the limit of ${maxPixels} ` +
        "(a possible decompression bomb; raise maxPixels to allow it)",
    );
  }
  if (decode) {
    try {
      await sharp(bytes, { failOn: "error", limitInputPixels: maxPixels })
        .resize(64, 64, { fit: "inside" })
        .raw()
        .toBuffer();
    } catch (error) {
      return skip("decode-failed", `the image does not decode (truncated or corrupt): ${(error as Error).message}`);
    }
  }
  return {
    item: {
      key: sha256(bytes),
      name: candidate.name,
      source: candidate.source,
      caption: candidate.caption,
      width,
      height,
      format: meta.format,
      byteLength: bytes.length,
      role: candidate.role,
      repeats: candidate.repeats,
    },
  };
}

export async function readSource(source: ImageSource): Promise<Uint8Array> {
  return source.kind === "bytes" ? source.data : await readFile(source.path);
}
