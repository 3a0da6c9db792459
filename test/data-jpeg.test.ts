// The data pipeline's JPEG road (native/image/jpeg_render.cc): decoded at a reduced DCT scale,
// resized, EXIF-oriented, cropped and flipped natively; what it must not handle goes back to sharp.
// Each case is checked against sharp doing the same job (the road it replaces).
import sharp from "sharp";
import { describe, expect, it } from "vitest";

import { renderImage } from "../src/data/image.js";
import { native, type NativeJpegJob } from "../src/native/index.js";
import { pattern } from "./helpers/images.js";

const image = native().image;

/** A photo-like JPEG (smooth pattern + noise), stored as `width` x `height`, with an EXIF orientation. */
async function photo(width: number, height: number, orientation = 1): Promise<Buffer> {
  return sharp(pattern(width, height, 3), { raw: { width, height, channels: 3 } })
    .composite([
      {
        input: {
          create: { width, height, channels: 3, background: "#808080", noise: { type: "gaussian", mean: 0, sigma: 6 } },
        },
        blend: "soft-light",
      },
    ])
    .jpeg({ quality: 95 })
    .withMetadata({ orientation })
    .toBuffer();
}

/** sharp doing the job: orient, resize to the fit, crop, mirror. */
async function bySharp(bytes: Buffer, job: NativeJpegJob): Promise<Buffer> {
  const { data } = await sharp(bytes, { autoOrient: true })
    .resize(job.resizedWidth, job.resizedHeight, { fit: "fill", kernel: "lanczos3" })
    .toColourspace("srgb") // a greyscale JPEG's one channel becomes three, as in the pipeline
    .raw()
    .toBuffer({ resolveWithObject: true });
  expect(data.length).toBe(job.resizedWidth * job.resizedHeight * 3);
  const out = Buffer.alloc(job.width * job.height * 3);
  for (let y = 0; y < job.height; y++) {
    for (let x = 0; x < job.width; x++) {
      const sx = job.left + (job.flip ? job.width - 1 - x : x);
      data.copy(
        out,
        (y * job.width + x) * 3,
        ((job.top + y) * job.resizedWidth + sx) * 3,
        ((job.top + y) * job.resizedWidth + sx) * 3 + 3,
      );
    }
  }
  return out;
}

/** A lanczos job resizing to width x height, cropped as `part` says (default: all of it), no limit. */
function crop(width: number, height: number, part: Partial<NativeJpegJob> = {}): NativeJpegJob {
  return {
    resizedWidth: width,
    resizedHeight: height,
    left: 0,
    top: 0,
    width,
    height,
    flip: false,
    filter: "lanczos",
    maxPixels: 0,
    ...part,
  };
}

function meanAbsDiff(a: Uint8Array, b: Uint8Array): number {
  expect(a.length).toBe(b.length);
  let sum = 0;
  for (let i = 0; i < a.length; i++) sum += Math.abs(a[i]! - b[i]!);
  return sum / a.length;
}

describe("JPEG road", () => {
  it("is built in (the bootstrap installs libjpeg-dev)", () => {
    expect(image.jpegAvailable).toBe(true);
  });

  it("orients all 8 EXIF orientations, crops and flips as sharp does (no scaling: the same pixels)", async () => {
    const [w, h] = [48, 32];
    for (let orientation = 1; orientation <= 8; orientation++) {
      const bytes = await photo(w, h, orientation);
      const [ow, oh] = orientation >= 5 ? [h, w] : [w, h];
      for (const flip of [false, true]) {
        const job = { resizedWidth: ow, resizedHeight: oh, left: 3, top: 5, width: ow - 7, height: oh - 9, flip };
        const ours = await image.renderJpeg(bytes, { ...job, filter: "lanczos", maxPixels: 0 });
        expect(ours, `orientation ${orientation}`).not.toBeNull();
        const theirs = await bySharp(bytes, { ...job, filter: "lanczos", maxPixels: 0 });
        // Two libjpeg-turbo builds (Debian's, sharp's) on the same file: equal up to IDCT rounding.
        expect(meanAbsDiff(ours!, theirs), `orientation ${orientation} flip ${flip}`).toBeLessThan(0.5);
      }
    }
  });

  it("decodes a photo at reduced scale to within a few levels of sharp's full-size decode and resize", async () => {
    const bytes = await photo(1600, 1200, 6); // shown as 1200x1600
    const job = { resizedWidth: 512, resizedHeight: 683, left: 0, top: 85, width: 512, height: 512, flip: true };
    const ours = (await image.renderJpeg(bytes, { ...job, filter: "lanczos", maxPixels: 0 }))!;
    const theirs = await bySharp(bytes, { ...job, filter: "lanczos", maxPixels: 0 });
    expect(meanAbsDiff(ours, theirs)).toBeLessThan(2);
    // renderImage takes the road for JPEG bytes with a kernel it has, and agrees with the native call.
    const viaPipeline = await renderImage({
      source: { kind: "bytes", data: bytes },
      bucket: { width: 512, height: 512 },
      fit: { resizedWidth: 512, resizedHeight: 683 },
      left: 0,
      top: 85,
      flip: true,
      background: { r: 255, g: 255, b: 255 },
      kernel: "lanczos3",
      maxPixels: 1e8,
    });
    expect(viaPipeline.equals(ours)).toBe(true);
  });

  it("decodes progressive and greyscale JPEGs as sharp does", async () => {
    const job = crop(120, 90, { left: 10, top: 5, width: 100, height: 80 });
    const plain = await photo(480, 360);
    expect((await sharp(await sharp(plain).toColourspace("b-w").jpeg().toBuffer()).metadata()).channels).toBe(1);
    for (const [name, bytes] of [
      ["progressive", await sharp(plain).jpeg({ quality: 95, progressive: true }).toBuffer()],
      ["greyscale", await sharp(plain).toColourspace("b-w").jpeg({ quality: 95 }).toBuffer()],
    ] as const) {
      const ours = await image.renderJpeg(bytes, job);
      expect(ours, name).not.toBeNull();
      expect(meanAbsDiff(ours!, await bySharp(bytes, job)), name).toBeLessThan(2);
    }
  });

  it("declines what sharp must decode: CMYK, a non-sRGB ICC profile, damage, the pixel limit", async () => {
    const job = crop(32, 24);
    const plain = await photo(64, 48);
    expect(await image.renderJpeg(plain, job)).not.toBeNull();
    const srgb = await sharp(plain).withIccProfile("srgb").jpeg().toBuffer();
    expect(await image.renderJpeg(srgb, job), "an sRGB profile needs no transform").not.toBeNull();
    const p3 = await sharp(plain).withIccProfile("p3").jpeg().toBuffer();
    expect(await image.renderJpeg(p3, job), "Display P3").toBeNull();
    const cmyk = await sharp(plain).toColourspace("cmyk").jpeg().toBuffer();
    expect(await image.renderJpeg(cmyk, job), "CMYK").toBeNull();
    expect(await image.renderJpeg(plain.subarray(0, plain.length >> 1), job), "truncated").toBeNull();
    expect(await image.renderJpeg(plain, { ...job, maxPixels: 64 * 48 - 1 }), "over the limit").toBeNull();
    await expect(image.renderJpeg(plain, { ...job, left: 1 })).rejects.toThrow(/outside the resized image/);
  });
});
