// The per-image pipeline. sharp (libvips, off the JS thread) does the pixel
// work: EXIF orientation, colour conversion to 8-bit sRGB (CMYK, grey, 16-bit,
// palette), alpha flattened onto a background, resize, crop, flip. JS then does
// one pass from uint8 HWC to float32 CHW in [-1, 1] straight into the batch.
// JPEGs take a faster road when the addon has libjpeg (native/image/jpeg_render.cc):
// decoded at a reduced DCT scale (1/2, 1/4 ... of a 1-4 MP photo), not at full size
// and then shrunk; whatever that road declines (CMYK, a non-sRGB ICC profile, a
// damaged file) goes to sharp as before. SDTUNE_JPEG=sharp sends every image to sharp.
import { readFile } from "node:fs/promises";

import sharp from "sharp";

import { native, type NativeAddon, type ResampleFilter } from "../native/index.js";
import type { Bucket, Fit } from "./buckets.js";
import type { ImageSource } from "./types.js";

export type ResizeKernel =
  "nearest" | "linear" | "cubic" | "mitchell" | "lanczos2" | "lanczos3" | "mks2013" | "mks2021";

export interface RenderJob {
  source: ImageSource;
  /** Output size. */
  bucket: Bucket;
  /** Size the oriented image is resized to before the crop. */
  fit: Fit;
  /** Crop offset in the resized image, before any flip. */
  left: number;
  top: number;
  /** Mirror left-right after the crop. */
  flip: boolean;
  background: { r: number; g: number; b: number };
  kernel: ResizeKernel;
  maxPixels: number;
}

/** sharp's kernels that PIL-exact resampling computes alike (Catmull-Rom is PIL's bicubic). */
const JPEG_FILTERS: Partial<Record<ResizeKernel, ResampleFilter>> = {
  lanczos3: "lanczos",
  linear: "bilinear",
  cubic: "bicubic",
};

let jpegOps: NativeAddon["image"] | null | undefined;

/** The addon's JPEG road, or null (no addon, built without libjpeg, or SDTUNE_JPEG=sharp). */
function jpegRoad(): NativeAddon["image"] | null {
  if (jpegOps === undefined) {
    try {
      const ops = native().image;
      jpegOps = ops.jpegAvailable && process.env.SDTUNE_JPEG !== "sharp" ? ops : null;
    } catch {
      jpegOps = null; // the raw stream works without the addon
    }
  }
  return jpegOps;
}

/**
 * The native road's name when it renders images of this format with this kernel in this process,
 * else undefined (sharp, as always). Part of the latent cache key: the two roads agree only to within
 * a few levels (a DCT-scaled decode is a slightly different downscale).
 */
export function jpegRoadFor(format: string, kernel: ResizeKernel): string | undefined {
  return format === "jpeg" && JPEG_FILTERS[kernel] !== undefined && jpegRoad() ? "jpeg-dct-scaled-1" : undefined;
}

const isJpeg = (b: Uint8Array): boolean => b.length > 3 && b[0] === 0xff && b[1] === 0xd8 && b[2] === 0xff;

/** Renders one image to packed RGB bytes (HWC, bucket.height x bucket.width x 3). */
export async function renderImage(job: RenderJob): Promise<Buffer> {
  const { bucket, fit } = job;
  if (
    job.left < 0 ||
    job.top < 0 ||
    job.left + bucket.width > fit.resizedWidth ||
    job.top + bucket.height > fit.resizedHeight
  ) {
    throw new RangeError(
      `crop ${bucket.width}x${bucket.height}+${job.left}+${job.top} is outside the resized ${fit.resizedWidth}x${fit.resizedHeight} image`,
    );
  }
  const road = JPEG_FILTERS[job.kernel] !== undefined ? jpegRoad() : null;
  let input: string | Buffer =
    job.source.kind === "file"
      ? job.source.path
      : Buffer.from(job.source.data.buffer, job.source.data.byteOffset, job.source.data.byteLength);
  if (road) {
    if (typeof input === "string") input = await readFile(input);
    if (isJpeg(input)) {
      const bytes = await road.renderJpeg(input, {
        resizedWidth: fit.resizedWidth,
        resizedHeight: fit.resizedHeight,
        left: job.left,
        top: job.top,
        width: bucket.width,
        height: bucket.height,
        flip: job.flip,
        filter: JPEG_FILTERS[job.kernel]!,
        maxPixels: job.maxPixels,
      });
      if (bytes) return bytes;
    }
  }
  // sharp mirrors before it extracts after a resize, so a flipped crop is taken from the mirrored side.
  const left = job.flip ? fit.resizedWidth - job.left - bucket.width : job.left;
  let image = sharp(input, { failOn: "error", limitInputPixels: job.maxPixels, autoOrient: true })
    .flatten({ background: job.background })
    .resize(fit.resizedWidth, fit.resizedHeight, { fit: "fill", kernel: job.kernel })
    .extract({ left, top: job.top, width: bucket.width, height: bucket.height });
  if (job.flip) image = image.flop();
  const { data, info } = await image.removeAlpha().toColourspace("srgb").raw().toBuffer({ resolveWithObject: true });
  if (
    info.channels !== 3 ||
    info.width !== bucket.width ||
    info.height !== bucket.height ||
    data.length !== bucket.width * bucket.height * 3
  ) {
    throw new Error(
      `decoded to ${info.width}x${info.height}x${info.channels} instead of ${bucket.width}x${bucket.height}x3 (the file may have changed since the dataset was opened)`,
    );
  }
  return data;
}

/**
 * uint8 -> float32 as torchvision computes ToTensor() then Normalize([0.5], [0.5]):
 * (fround(x / 255) - 0.5) / 0.5, in float32. A table, so the hot loop is a lookup.
 */
const TO_UNIT = new Float32Array(256).map((_, x) => Math.fround(Math.fround(x / 255) - 0.5) / 0.5);

/** Packed RGB (HWC) into planar float (CHW) at dst[offset ...], one pass. */
export function hwcToChw(src: Uint8Array, dst: Float32Array, offset: number, pixels: number): void {
  const lut = TO_UNIT;
  let r = offset;
  let g = offset + pixels;
  let b = offset + 2 * pixels;
  for (let s = 0, end = pixels * 3; s < end; s += 3) {
    dst[r++] = lut[src[s]!]!;
    dst[g++] = lut[src[s + 1]!]!;
    dst[b++] = lut[src[s + 2]!]!;
  }
}

/** "#rrggbb", "white"/"black" or {r, g, b} -> {r, g, b}. */
export function parseBackground(value: string | { r: number; g: number; b: number } | undefined): {
  r: number;
  g: number;
  b: number;
} {
  if (value === undefined || value === "white") return { r: 255, g: 255, b: 255 };
  if (value === "black") return { r: 0, g: 0, b: 0 };
  if (typeof value === "object") {
    for (const c of [value.r, value.g, value.b]) {
      if (!(Number.isInteger(c) && c >= 0 && c <= 255))
        throw new RangeError(`background channels must be 0..255, got ${JSON.stringify(value)}`);
    }
    return { r: value.r, g: value.g, b: value.b };
  }
  const m = /^#?([0-9a-f]{2})([0-9a-f]{2})([0-9a-f]{2})$/i.exec(value);
  if (!m) throw new RangeError(`background must be "white", "black", "#rrggbb" or {r, g, b}, got "${value}"`);
  return { r: parseInt(m[1]!, 16), g: parseInt(m[2]!, 16), b: parseInt(m[3]!, 16) };
}
