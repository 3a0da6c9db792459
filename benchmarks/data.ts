// Data pipeline throughput: JPEG files (mixed sizes, 1-4 MP) -> normalised
// 512x512 float tensors, against a baseline of plain sharp decode-and-resize of
// the same files on one core, one at a time (sharp.concurrency(1)).
// Usage: npm run bench -- data [images=48]
import { cpus } from "node:os";
import { join } from "node:path";

import sharp from "sharp";

import { createBatchStream, openDataset } from "../src/data/index.js";
import { hwcToChw } from "../src/data/image.js";
import { tempDir } from "../test/helpers/fixtures.js";
import { native } from "../src/native/index.js";
import { tensorFrom } from "../src/tensor.js";
import { machine, median } from "./_util.js";
import type { Benchmark } from "./run.js";

const SIZES: [number, number][] = [
  [1200, 900], // 1.1 MP
  [1600, 1200], // 1.9 MP
  [2048, 1536], // 3.1 MP
  [2304, 1728], // 4.0 MP
  [1080, 1440], // portrait 1.6 MP
  [1536, 2048], // portrait 3.1 MP
];

/** A photo-like JPEG: smooth gradients plus noise, so it compresses like a picture, not a flat fill. */
async function writePhoto(path: string, width: number, height: number, seed: number): Promise<number> {
  const small = Buffer.alloc(64 * 48 * 3);
  for (let i = 0; i < small.length; i++) small[i] = (i * 7 + seed * 13 + ((i * 2654435761) >>> 24)) & 255;
  const info = await sharp(small, { raw: { width: 64, height: 48, channels: 3 } })
    .resize(width, height, { kernel: "cubic" })
    .composite([
      {
        input: {
          create: {
            width,
            height,
            channels: 3,
            background: { r: 128, g: 128, b: 128 },
            noise: { type: "gaussian", mean: 0, sigma: 20 },
          },
        },
        blend: "overlay",
      },
    ])
    .jpeg({ quality: 90 })
    .toFile(path);
  return info.size;
}

export const benchmark: Benchmark = {
  description: "images/s from JPEG files (1-4 MP) to normalised 512x512 tensors vs plain sharp on one core",
  async run(args) {
    const count = Number(args[0] ?? 48);
    const dir = await tempDir("sdtune-bench-data-");
    const defaultSharpThreads = sharp.concurrency();
    try {
      let bytes = 0;
      let pixels = 0;
      for (let i = 0; i < count; i++) {
        const [w, h] = SIZES[i % SIZES.length]!;
        bytes += await writePhoto(join(dir.path, `${String(i).padStart(4, "0")}.jpg`), w, h, i);
        pixels += w * h;
      }
      const files = Array.from({ length: count }, (_, i) => join(dir.path, `${String(i).padStart(4, "0")}.jpg`));

      const scanStart = performance.now();
      const dataset = await openDataset({ path: dir.path, type: "imagefolder" });
      const scanMs = performance.now() - scanStart;

      // Baseline: sharp alone, one core, one image at a time, resize shortest side + centre crop.
      const baseline = async (): Promise<number> => {
        sharp.concurrency(1);
        const t0 = performance.now();
        for (const f of files) await sharp(f).resize(512, 512, { fit: "cover" }).raw().toBuffer();
        sharp.concurrency(defaultSharpThreads);
        return performance.now() - t0;
      };

      const pipeline = async (concurrency: number, sharpThreads: number, batchSize = 4): Promise<number> => {
        sharp.concurrency(sharpThreads);
        const t0 = performance.now();
        const stream = createBatchStream(dataset, {
          resolution: 512,
          batchSize,
          epochs: 1,
          concurrency,
          prefetch: 4,
          seed: 0,
        });
        for await (const batch of stream) batch.pixels.dispose();
        sharp.concurrency(defaultSharpThreads);
        return performance.now() - t0;
      };

      const configs: { concurrency: number; sharpThreads: number }[] = [];
      const cores = cpus().length;
      for (const concurrency of [...new Set([1, 2, 4, cores])]) {
        for (const sharpThreads of [...new Set([1, defaultSharpThreads])]) configs.push({ concurrency, sharpThreads });
      }
      await baseline(); // warm the page cache and sharp
      await pipeline(4, defaultSharpThreads); // and load the addon
      // Rounds interleave the baseline and every configuration, so a busy machine slows them alike.
      const rounds = 5;
      const baselineTimes: number[] = [];
      const configTimes = configs.map(() => [] as number[]);
      const defaultTimes: number[] = [];
      for (let r = 0; r < rounds; r++) {
        baselineTimes.push(await baseline());
        defaultTimes.push(await pipeline(4, defaultSharpThreads));
        for (const [i, c] of configs.entries()) configTimes[i]!.push(await pipeline(c.concurrency, c.sharpThreads));
      }
      const baselineMs = median(baselineTimes);
      const defaultRun = median(defaultTimes);
      const ips = (ms: number): number => (count * 1000) / ms;
      const results = configs.map((c, i) => ({
        ...c,
        imagesPerSecond: ips(median(configTimes[i]!)),
        efficiencyVsBaseline: baselineMs / median(configTimes[i]!),
      }));

      // The uint8 HWC -> float CHW pass alone, per 512x512 image: JS (createRawBatchStream) and native (createBatchStream).
      const hwc = Buffer.alloc(4 * 512 * 512 * 3, 7);
      const chw = new Float32Array(512 * 512 * 3);
      const reps = 20;
      const js0 = performance.now();
      for (let i = 0; i < reps * 4; i++) hwcToChw(hwc.subarray(0, 512 * 512 * 3), chw, 0, 512 * 512);
      const jsMs = (performance.now() - js0) / (reps * 4);
      const packed = tensorFrom(hwc, [4, 512, 512, 3], "uint8");
      const n0 = performance.now();
      for (let i = 0; i < reps; i++) (await native().data.pixelsToTensor(packed)).dispose();
      const nativeMs = (performance.now() - n0) / (reps * 4);
      packed.dispose();

      return {
        machine: machine(),
        images: count,
        megapixelsMean: pixels / count / 1e6,
        jpegBytesMean: Math.round(bytes / count),
        sharpDefaultThreads: defaultSharpThreads,
        scanMsPerImage: scanMs / count,
        baseline: {
          description: "sharp resize 512x512 cover, sharp.concurrency(1), sequential",
          imagesPerSecond: ips(baselineMs),
        },
        pipeline: { concurrency: 4, sharpThreads: defaultSharpThreads, batchSize: 4, imagesPerSecond: ips(defaultRun) },
        efficiencyRatio: baselineMs / defaultRun,
        configurations: results,
        floatConversionMsPerImage: { js: jsMs, native: nativeMs },
      };
    } finally {
      sharp.concurrency(defaultSharpThreads);
      await dir.cleanup();
    }
  },
};
