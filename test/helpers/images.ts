// Small test images drawn with sharp, in every format and colour layout the readers must handle.
import { mkdir, writeFile } from "node:fs/promises";
import { dirname } from "node:path";

import sharp from "sharp";

export type Variant = "rgb" | "cmyk" | "gray" | "rgb16" | "gray16" | "palette" | "alpha" | "gray-alpha";
export type Format = "png" | "jpeg" | "webp" | "tiff";

export interface ImageSpec {
  width: number;
  height: number;
  /** Makes the pixels (and so the content hash) distinct. */
  seed?: number;
  format?: Format;
  variant?: Variant;
  /** EXIF orientation tag (1..8) to store. */
  orientation?: number;
}

/** Packed RGB pixels: a smooth pattern that differs with `seed`. */
export function pattern(width: number, height: number, seed = 0): Buffer {
  const data = Buffer.alloc(width * height * 3);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const o = (y * width + x) * 3;
      data[o] = (x * 255) / Math.max(1, width - 1);
      data[o + 1] = (y * 255) / Math.max(1, height - 1);
      data[o + 2] = (seed * 37 + x * 3 + y * 5) % 256;
    }
  }
  return data;
}

export async function imageBuffer(spec: ImageSpec): Promise<Buffer> {
  const { width, height, seed = 0, format = "png", variant = "rgb" } = spec;
  let image = sharp(pattern(width, height, seed), { raw: { width, height, channels: 3 } });
  switch (variant) {
    case "cmyk":
      image = image.toColourspace("cmyk");
      break;
    case "gray":
      image = image.toColourspace("b-w");
      break;
    case "rgb16":
      image = image.toColourspace("rgb16");
      break;
    case "gray16":
      image = image.toColourspace("grey16");
      break;
    case "alpha":
      image = image.ensureAlpha(0.5);
      break;
    case "gray-alpha":
      image = image.toColourspace("b-w").ensureAlpha(0.25);
      break;
    case "palette":
    case "rgb":
      break;
  }
  if (format === "png") image = image.png({ palette: variant === "palette" });
  else if (format === "jpeg") image = image.jpeg({ quality: 95 });
  else if (format === "webp") image = image.webp({ lossless: true });
  else image = image.tiff({ compression: "lzw" }); // sharp's default TIFF compression is lossy JPEG
  if (spec.orientation) image = image.withMetadata({ orientation: spec.orientation });
  return image.toBuffer();
}

export async function writeImage(path: string, spec: ImageSpec): Promise<Buffer> {
  const bytes = await imageBuffer(spec);
  await mkdir(dirname(path), { recursive: true });
  await writeFile(path, bytes);
  return bytes;
}

export async function writeText(path: string, text: string | Uint8Array): Promise<void> {
  await mkdir(dirname(path), { recursive: true });
  await writeFile(path, text);
}
