// Aspect-ratio buckets (kohya semantics) and their use in the batch stream.
import { join } from "node:path";

import { afterAll, beforeAll, describe, expect, it } from "vitest";

import {
  centerOffsetRoundHalfEven,
  fitShortSide,
  fitToBucket,
  makeBuckets,
  resolveBucketOptions,
  selectBucket,
} from "../src/data/buckets.js";
import { createRawBatchStream, openDataset } from "../src/data/index.js";
import { tempDir } from "./helpers/fixtures.js";
import { writeImage, writeText } from "./helpers/images.js";

const sizes = (list: { width: number; height: number }[]): string[] => list.map((b) => `${b.width}x${b.height}`);

describe("bucket resolutions", () => {
  it("follows kohya make_bucket_resolutions for 512² in steps of 64 between 256 and 1024", () => {
    // Worked by hand from the algorithm: for each width w, h = min(1024, floor(floor(512² / w) / 64) * 64),
    // kept when h >= 256, plus the square floor(sqrt(512²) / 64) * 64, sorted by (w, h).
    const buckets = makeBuckets(resolveBucketOptions(512));
    expect(sizes(buckets)).toEqual([
      "256x832",
      "256x896",
      "256x960",
      "256x1024",
      "320x704",
      "320x768",
      "384x640",
      "448x576",
      "512x512",
      "576x448",
      "640x384",
      "704x320",
      "768x320",
      "832x256",
      "896x256",
      "960x256",
      "1024x256",
    ]);
    for (const b of buckets) {
      expect((b.width % 64) + (b.height % 64)).toBe(0);
      expect(b.width * b.height).toBeLessThanOrEqual(512 * 512);
    }
    expect(sizes(makeBuckets(resolveBucketOptions(64, { minSide: 64, maxSide: 128, step: 64 })))).toEqual(["64x64"]);
  });

  it("validates options", () => {
    expect(() => resolveBucketOptions(512, { minSide: 100 })).toThrow(/multiples of step/);
    expect(() => resolveBucketOptions(512, { minSide: 1024, maxSide: 512 })).toThrow(/at most maxSide/);
    expect(() => resolveBucketOptions(512, { step: 3 })).toThrow(/step must be/);
  });

  it("assigns the nearest aspect ratio, preferring an exact size", () => {
    const buckets = makeBuckets(resolveBucketOptions(512));
    const pick = (w: number, h: number): string => sizes([buckets[selectBucket(w, h, buckets)]!])[0]!;
    expect(pick(1000, 1000)).toBe("512x512");
    expect(pick(1920, 1080)).toBe("640x384"); // 16:9 = 1.78; 640/384 = 1.67 is nearest
    expect(pick(1080, 1920)).toBe("384x640");
    expect(pick(4000, 500)).toBe("1024x256");
    expect(pick(704, 320)).toBe("704x320"); // exact size wins
  });

  it("scales to cover the bucket and centres crops as kohya and torchvision do", () => {
    expect(fitToBucket(1920, 1080, { width: 640, height: 384 })).toEqual({ resizedWidth: 683, resizedHeight: 384 });
    expect(fitToBucket(1080, 1920, { width: 384, height: 640 })).toEqual({ resizedWidth: 384, resizedHeight: 683 });
    expect(fitToBucket(500, 500, { width: 512, height: 512 })).toEqual({ resizedWidth: 512, resizedHeight: 512 });
    expect(fitShortSide(600, 400, 512)).toEqual({ resizedWidth: 768, resizedHeight: 512 });
    expect(fitShortSide(400, 601, 512)).toEqual({ resizedWidth: 512, resizedHeight: 769 }); // truncated, as torchvision
    expect([1, 2, 3, 5, 7].map(centerOffsetRoundHalfEven)).toEqual([0, 1, 2, 2, 4]); // Python round(): half to even
  });
});

describe("bucketed batches", () => {
  let dir: { path: string; cleanup(): Promise<void> };
  beforeAll(async () => {
    dir = await tempDir("sdtune-data-buckets-");
    const shapes: [number, number][] = [
      [96, 96],
      [100, 100],
      [90, 92],
      [200, 60],
      [190, 62],
      [260, 60],
      [90, 160],
      [60, 200],
    ];
    for (const [i, [w, h]] of shapes.entries()) {
      await writeImage(join(dir.path, `${i}.png`), { width: w, height: h, seed: i });
      await writeText(join(dir.path, `${i}.txt`), `image ${i}`);
    }
  });
  afterAll(async () => dir.cleanup());

  it("draws every batch from one bucket and reports bucket statistics", async () => {
    const ds = await openDataset({ path: dir.path });
    const stream = createRawBatchStream(ds, {
      resolution: 64,
      buckets: { minSide: 32, maxSide: 128, step: 32 },
      batchSize: 2,
      epochs: 1,
      seed: 1,
    });
    // 64² in steps of 32 between 32 and 128 (worked by hand as above).
    expect(sizes([...stream.buckets])).toEqual(["32x96", "32x128", "64x64", "96x32", "128x32"]);
    expect(stream.bucketStats.map((s) => [`${s.width}x${s.height}`, s.images, s.examples])).toEqual([
      ["32x96", 2, 2], // 90x160 (0.56) and 60x200 (0.3): nearer 1/3 than 1/4 or 1
      ["64x64", 3, 3],
      ["96x32", 2, 2], // 200x60 (3.33) and 190x62 (3.06)
      ["128x32", 1, 1], // 260x60 (4.33)
    ]);
    expect(stream.batchesPerEpoch).toBe(1 + 2 + 1 + 1);
    const seen: string[] = [];
    for await (const batch of stream) {
      const { width, height } = batch.bucket;
      expect(batch.shape.slice(1)).toEqual([3, height, width]);
      for (const [k, name] of batch.names.entries()) {
        const item = ds.items.find((i) => i.name === name)!;
        const fit = fitToBucket(item.width, item.height, batch.bucket);
        const crop = batch.crops[k]!;
        expect([crop.resizedWidth, crop.resizedHeight]).toEqual([fit.resizedWidth, fit.resizedHeight]);
        expect([crop.originalWidth, crop.originalHeight]).toEqual([item.width, item.height]);
        expect(crop.left).toBe(Math.floor((fit.resizedWidth - width) / 2));
        seen.push(name);
      }
    }
    expect(seen.sort()).toEqual(ds.items.map((i) => i.name).sort());
  });
});
