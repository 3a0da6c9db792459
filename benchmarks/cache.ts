// Latent cache throughput on the tiny model: images/s of the cached latent stream
// against the uncached path (decode + resize JPEGs, then VAE.encode), same run,
// rounds interleaved so a busy machine slows both alike; plus the one-off cost
// of filling the cache and its size on disk.
// The tiny VAE's mid-block attends over every latent pixel, so its cost grows with
// the square of the latent area: the default 64 px keeps it at the order of the
// image decoding; pass a larger resolution to weigh the VAE more.
// Usage: npm run bench -- cache [images=32] [resolution=64] [batchSize=4]
import { mkdir, readdir, stat } from "node:fs/promises";
import { join } from "node:path";

import sharp from "sharp";

import { createLatentBatchStream, LatentCache, sampleLatents } from "../src/cache/index.js";
import { createBatchStream, openDataset } from "../src/data/index.js";
import { VAE } from "../src/models/vae.js";
import { createGenerator } from "../src/sched/index.js";
import { fixture, tempDir } from "../test/helpers/fixtures.js";
import { machine, median } from "./_util.js";
import type { Benchmark } from "./run.js";

/** A photo-like JPEG (gradients + noise) of about the given size. */
async function writePhoto(path: string, width: number, height: number, seed: number): Promise<void> {
  const small = Buffer.alloc(32 * 24 * 3);
  for (let i = 0; i < small.length; i++) small[i] = (i * 7 + seed * 13 + ((i * 2654435761) >>> 24)) & 255;
  await sharp(small, { raw: { width: 32, height: 24, channels: 3 } })
    .resize(width, height, { kernel: "cubic" })
    .jpeg({ quality: 90 })
    .toFile(path);
}

export const benchmark: Benchmark = {
  description:
    "images/s: cached latent stream vs JPEG decode + VAE.encode (tiny VAE), and the cost of filling the cache",
  async run(args) {
    const count = Number(args[0] ?? 32);
    const resolution = Number(args[1] ?? 64);
    const batchSize = Number(args[2] ?? 4);
    const dir = await tempDir("sdtune-bench-cache-");
    const vae = await VAE.load(fixture("tiny-sd", "vae"));
    try {
      const images = join(dir.path, "images");
      const sizes: [number, number][] = [
        [1024, 768],
        [768, 1024],
        [1200, 900],
        [800, 800],
      ];
      await mkdir(images, { recursive: true });
      for (let i = 0; i < count; i++) {
        const [w, h] = sizes[i % sizes.length]!;
        await writePhoto(join(images, `${String(i).padStart(4, "0")}.jpg`), w, h, i);
      }
      const dataset = await openDataset({ path: images, type: "imagefolder" });
      const options = { resolution, batchSize, epochs: 1, seed: 0, flip: false };
      const cacheDir = join(dir.path, "cache");
      const cache = await LatentCache.open({ dir: cacheDir, vae: fixture("tiny-sd", "vae") });

      // Warm-up (first VAE call, page cache) before anything is timed.
      const warm = createBatchStream(dataset, { ...options, batchSize: 1 })[Symbol.asyncIterator]();
      const first = (await warm.next()).value!;
      (await vae.encode(first.pixels)).mean.dispose();
      first.pixels.dispose();
      await warm.return?.();

      const t0 = performance.now();
      const filled = await cache.ensure(dataset, options, { vae, batchSize });
      const ensureMs = performance.now() - t0;

      const generator = createGenerator(0);
      const uncached = async (): Promise<number> => {
        const start = performance.now();
        for await (const batch of createBatchStream(dataset, options)) {
          const latents = await vae.sample(batch.pixels, {
            noise: generator.randn([batch.shape[0], 4, resolution / 2, resolution / 2]),
            scaled: true,
          });
          latents.dispose();
          batch.pixels.dispose();
        }
        return performance.now() - start;
      };
      const pixelsOnly = async (): Promise<number> => {
        const start = performance.now();
        for await (const batch of createBatchStream(dataset, options)) batch.pixels.dispose();
        return performance.now() - start;
      };
      const cached = async (): Promise<number> => {
        const start = performance.now();
        for await (const batch of createLatentBatchStream(dataset, options, { latents: cache })) {
          const latents = await sampleLatents(batch, { generator });
          latents.dispose();
          batch.latentMean.dispose();
          batch.latentStd.dispose();
        }
        return performance.now() - start;
      };
      await uncached();
      await cached();
      const rounds = 3;
      const u: number[] = [];
      const c: number[] = [];
      const p: number[] = [];
      for (let r = 0; r < rounds; r++) {
        u.push(await uncached());
        c.push(await cached());
        p.push(await pixelsOnly());
      }
      const ips = (ms: number): number => (count * 1000) / ms;
      const root = join(cacheDir, "latents", cache.namespace);
      const shards = (await readdir(root)).filter((n) => n.endsWith(".safetensors"));
      let bytes = 0;
      for (const s of shards) bytes += (await stat(join(root, s))).size;
      await cache.close();
      return {
        machine: machine(),
        images: count,
        resolution,
        batchSize,
        vae: "tiny-sd fixture (blocks [32, 64], spatial factor 2), float32, CPU",
        uncached: {
          description: "createBatchStream (JPEG ~1 MP decode + resize + crop) then VAE.sample(scaled)",
          imagesPerSecond: ips(median(u)),
        },
        cached: {
          description: "createLatentBatchStream then sampleLatents (same noise source)",
          imagesPerSecond: ips(median(c)),
        },
        pixelsOnly: {
          description: "createBatchStream alone (decode + resize + crop, no VAE): the decoding share of uncached",
          imagesPerSecond: ips(median(p)),
        },
        speedup: median(u) / median(c),
        fill: { imagesPerSecond: (filled.computed * 1000) / ensureMs, computed: filled.computed },
        disk: { shards: shards.length, bytes, bytesPerImage: bytes / count },
      };
    } finally {
      vae.dispose();
      await dir.cleanup();
    }
  },
};
