// The per-image pipeline: colour conversion, EXIF orientation, alpha, crop, flip, normalisation.
import sharp from "sharp";
import { describe, expect, it } from "vitest";

import type { Bucket, Fit } from "../src/data/buckets.js";
import { hwcToChw, parseBackground, renderImage } from "../src/data/image.js";
import { imageBuffer, pattern, type Format, type Variant } from "./helpers/images.js";

const W = 40;
const H = 32;
const white = { r: 255, g: 255, b: 255 };

async function render(
  bytes: Uint8Array,
  options: { bucket?: Bucket; fit?: Fit; left?: number; top?: number; flip?: boolean; background?: typeof white } = {},
): Promise<Buffer> {
  const bucket = options.bucket ?? { width: W, height: H };
  return renderImage({
    source: { kind: "bytes", data: bytes },
    bucket,
    fit: options.fit ?? { resizedWidth: bucket.width, resizedHeight: bucket.height },
    left: options.left ?? 0,
    top: options.top ?? 0,
    flip: options.flip ?? false,
    background: options.background ?? white,
    kernel: "lanczos3",
    maxPixels: 1e8,
  });
}

function meanAbsDiff(a: Uint8Array, b: Uint8Array): number {
  expect(a.length).toBe(b.length);
  let sum = 0;
  for (let i = 0; i < a.length; i++) sum += Math.abs(a[i]! - b[i]!);
  return sum / a.length;
}

/** The region [left, left+w) x [top, top+h) of a packed RGB image of width `stride`. */
function region(src: Uint8Array, stride: number, left: number, top: number, w: number, h: number): Buffer {
  const out = Buffer.alloc(w * h * 3);
  for (let y = 0; y < h; y++) {
    out.set(src.subarray(((top + y) * stride + left) * 3, ((top + y) * stride + left + w) * 3), y * w * 3);
  }
  return out;
}

function mirror(src: Uint8Array, w: number, h: number): Buffer {
  const out = Buffer.alloc(src.length);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) out.set(src.subarray((y * w + x) * 3, (y * w + x) * 3 + 3), (y * w + (w - 1 - x)) * 3);
  }
  return out;
}

describe("image pipeline", () => {
  const reference = pattern(W, H, 0);

  it("decodes lossless RGB, 16-bit and palette images to 8-bit sRGB", async () => {
    for (const [variant, format] of [
      ["rgb", "png"],
      ["rgb", "webp"],
      ["rgb", "tiff"],
      ["rgb16", "png"],
    ] as [Variant, Format][]) {
      const out = await render(await imageBuffer({ width: W, height: H, variant, format }));
      expect(out.equals(reference), `${variant} ${format}`).toBe(true);
    }
    // Palette PNGs are quantised to 256 colours: close, not equal.
    expect(
      meanAbsDiff(await render(await imageBuffer({ width: W, height: H, variant: "palette" })), reference),
    ).toBeLessThan(6);
  });

  it("converts CMYK to sRGB", async () => {
    for (const format of ["jpeg", "tiff"] as Format[]) {
      const bytes = await imageBuffer({ width: W, height: H, variant: "cmyk", format });
      expect((await sharp(bytes).metadata()).space).toBe("cmyk");
      // CMYK's gamut is smaller than sRGB's, so the round trip is close on average only.
      expect(meanAbsDiff(await render(bytes), reference), format).toBeLessThan(16);
    }
  });

  it("turns grey (8 and 16-bit) into three equal channels", async () => {
    const { data: grey } = await sharp(reference, { raw: { width: W, height: H, channels: 3 } })
      .toColourspace("b-w")
      .raw()
      .toBuffer({ resolveWithObject: true });
    for (const variant of ["gray", "gray16"] as Variant[]) {
      const out = await render(await imageBuffer({ width: W, height: H, variant }));
      for (let p = 0; p < W * H; p++) {
        expect(out[p * 3]).toBe(out[p * 3 + 1]);
        expect(out[p * 3]).toBe(out[p * 3 + 2]);
        expect(Math.abs(out[p * 3]! - grey[p]!)).toBeLessThanOrEqual(1);
      }
    }
  });

  it("flattens alpha onto the chosen background", async () => {
    const bytes = await imageBuffer({ width: W, height: H, variant: "alpha" });
    const { data: rgba } = await sharp(bytes).raw().toBuffer({ resolveWithObject: true });
    for (const background of [white, { r: 0, g: 0, b: 0 }, { r: 10, g: 200, b: 30 }]) {
      const out = await render(bytes, { background });
      const bg = [background.r, background.g, background.b];
      for (let p = 0; p < W * H; p++) {
        const a = rgba[p * 4 + 3]! / 255;
        for (let c = 0; c < 3; c++) {
          const expected = rgba[p * 4 + c]! * a + bg[c]! * (1 - a);
          expect(Math.abs(out[p * 3 + c]! - expected)).toBeLessThanOrEqual(1.5);
        }
      }
    }
  });

  it("applies EXIF orientation", async () => {
    // Orientation 6: the stored image is shown rotated 90° clockwise.
    const bytes = await imageBuffer({ width: W, height: H, orientation: 6 });
    const out = await render(bytes, { bucket: { width: H, height: W } });
    const rotated = Buffer.alloc(reference.length);
    for (let y = 0; y < W; y++) {
      for (let x = 0; x < H; x++) {
        const sx = y;
        const sy = H - 1 - x;
        rotated.set(reference.subarray((sy * W + sx) * 3, (sy * W + sx) * 3 + 3), (y * H + x) * 3);
      }
    }
    expect(out.equals(rotated)).toBe(true);
  });

  it("crops at the recorded offset and flips after the crop", async () => {
    const bytes = await imageBuffer({ width: W, height: H });
    const bucket = { width: 16, height: 12 };
    const fit = { resizedWidth: W, resizedHeight: H }; // no scaling: the crop must be the exact region
    const crop = await render(bytes, { bucket, fit, left: 5, top: 7 });
    expect(crop.equals(region(reference, W, 5, 7, 16, 12))).toBe(true);
    const flipped = await render(bytes, { bucket, fit, left: 5, top: 7, flip: true });
    expect(flipped.equals(mirror(crop, 16, 12))).toBe(true);
    await expect(render(bytes, { bucket, fit, left: 30, top: 0 })).rejects.toThrow(/outside the resized/);
  });

  it("normalises uint8 HWC to float32 CHW in [-1, 1] as torchvision does", () => {
    const hwc = Uint8Array.from([0, 128, 255, 1, 2, 3]); // two pixels
    const out = new Float32Array(2 + 6).fill(9);
    hwcToChw(hwc, out, 2, 2);
    // ToTensor (x / 255 in float32) then Normalize(0.5, 0.5), step by step in float32.
    const torch = (x: number): number => Math.fround(Math.fround(Math.fround(x / 255) - 0.5) / 0.5);
    expect([...out]).toEqual([9, 9, torch(0), torch(1), torch(128), torch(2), torch(255), torch(3)]);
    expect(torch(0)).toBe(-1);
    expect(torch(255)).toBe(1);
  });

  it("parses backgrounds and rejects bad ones", () => {
    expect(parseBackground(undefined)).toEqual(white);
    expect(parseBackground("#0a0B0c")).toEqual({ r: 10, g: 11, b: 12 });
    expect(parseBackground("black")).toEqual({ r: 0, g: 0, b: 0 });
    expect(() => parseBackground("red")).toThrow(/background must be/);
    expect(() => parseBackground({ r: 300, g: 0, b: 0 })).toThrow(/0..255/);
  });
});
