// Training caches: latents and text embeddings on disk. Hits, misses and what
// invalidates them; a hit needs neither the image nor the VAE; cached values are
// the models' outputs bit for bit; corrupt files are misses with a warning.
import { createHash } from "node:crypto";
import { cp, mkdir, open, readdir, rm, stat, utimes, writeFile } from "node:fs/promises";
import { join } from "node:path";

import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { main } from "../src/cli/main.js";

import { createBatchStream, openDataset, type BatchOptions, type Dataset } from "../src/data/index.js";
import {
  cacheInfo,
  createLatentBatchStream,
  LatentCache,
  pruneCache,
  sampleLatents,
  TextEmbeddingCache,
  trainingCaptions,
  type LatentBatch,
} from "../src/cache/index.js";
import { latentKey } from "../src/cache/latent_plan.js";
import { jpegRoadFor } from "../src/data/image.js";
import type { DataItem } from "../src/data/types.js";
import { readSafetensors, writeSafetensors } from "../src/io/safetensors.js";
import { TextEncoder } from "../src/models/text_encoder.js";
import { VAE } from "../src/models/vae.js";
import { native, type Tensor } from "../src/native/index.js";
import { createGenerator } from "../src/sched/index.js";
import { ClipTokenizer } from "../src/text/clip_tokenizer.js";
import { tensorFrom } from "../src/tensor.js";
import { fixture, tempDir } from "./helpers/fixtures.js";
import { imageBuffer, writeText } from "./helpers/images.js";
import { captureCli } from "./helpers/capture.js";

const SHAPES: [number, number][] = [
  [40, 32],
  [32, 40],
  [48, 48],
  [64, 32],
  [30, 50],
];

let tmp: { path: string; cleanup(): Promise<void> };
let imagesDir: string;
let ds: Dataset;
let vae: VAE;
const vaeDir = fixture("tiny-sd", "vae");

/** A bucketed, flipped, captioned stream of the tiny model's size. */
const OPTIONS: BatchOptions = {
  resolution: 32,
  buckets: { minSide: 16, maxSide: 64, step: 16 },
  batchSize: 2,
  flip: true,
  seed: 7,
  captionDropout: 0.25,
  epochs: 3,
};

async function writeDataset(dir: string, seeds: number[] = SHAPES.map((_, i) => i)): Promise<void> {
  await mkdir(dir, { recursive: true });
  for (const [i, [width, height]] of SHAPES.entries()) {
    await writeFile(join(dir, `${i}.png`), await imageBuffer({ width, height, seed: seeds[i]!, format: "png" }));
    await writeText(join(dir, `${i}.txt`), `img${i}, red, green`);
  }
}

const bytesOf = (t: Tensor): Buffer => {
  const a = t.toTypedArray();
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength);
};

function fingerprint(b: LatentBatch): string {
  const h = createHash("sha256");
  h.update(bytesOf(b.latentMean)).update(bytesOf(b.latentStd));
  h.update(JSON.stringify([b.shape, b.captions, b.keys, b.names, b.roles, b.crops, b.bucket, b.position, b.next]));
  return h.digest("hex");
}

async function collect(
  dataset: Dataset,
  options: BatchOptions,
  cache: LatentCache,
  extra: { vae?: () => Promise<VAE>; limit?: number } = {},
): Promise<string[]> {
  const out: string[] = [];
  for await (const b of createLatentBatchStream(dataset, options, { latents: cache, vae: extra.vae })) {
    out.push(fingerprint(b));
    b.latentMean.dispose();
    b.latentStd.dispose();
    if (out.length >= (extra.limit ?? Infinity)) break;
  }
  return out;
}

async function freshCache(name: string, extra: Partial<Parameters<typeof LatentCache.open>[0]> = {}) {
  return LatentCache.open({ dir: join(tmp.path, name), vae: vaeDir, ...extra });
}

beforeAll(async () => {
  tmp = await tempDir("sdtune-cache-");
  imagesDir = join(tmp.path, "images");
  await writeDataset(imagesDir);
  ds = await openDataset({ path: imagesDir });
  vae = await VAE.load(vaeDir); // without the fixture set this fails loudly rather than skipping
});
afterAll(async () => {
  vae?.dispose();
  await tmp.cleanup();
});

describe("latent cache", () => {
  it("keys JPEGs rendered on the native road apart from sharp's pixels; other keys stay as they were", () => {
    const example = (format: string): Parameters<typeof latentKey>[0] => ({
      item: { key: "same-content", format } as DataItem,
      bucket: { width: 64, height: 64 },
      fit: { resizedWidth: 64, resizedHeight: 80 },
      left: 0,
      top: 8,
      flip: false,
    });
    expect(native().image.jpegAvailable).toBe(true);
    expect(jpegRoadFor("jpeg", "lanczos3")).toBeDefined();
    expect(jpegRoadFor("png", "lanczos3")).toBeUndefined();
    expect(jpegRoadFor("jpeg", "mitchell")).toBeUndefined(); // a kernel only sharp has
    // The format enters the key only through the road: a PNG's key is the pre-road formula.
    expect(latentKey(example("jpeg"), {})).not.toBe(latentKey(example("png"), {}));
    expect(latentKey(example("jpeg"), { kernel: "mitchell" })).toBe(latentKey(example("png"), { kernel: "mitchell" }));
  });

  it("misses, computes, then hits, also from a new instance (nothing recomputed)", async () => {
    const cache = await freshCache("basic");
    const planned = cache.plan(ds, OPTIONS);
    const missing = await cache.missing(ds, OPTIONS);
    expect(missing.map((m) => m.key).sort()).toEqual(planned.map((p) => p.key).sort());
    const steps: number[] = [];
    const first = await cache.ensure(ds, OPTIONS, { vae, onProgress: (e) => steps.push(e.step) });
    expect(first).toEqual({ computed: planned.length, cached: 0, failed: [] });
    expect(steps.at(-1)).toBe(planned.length);
    expect(await cache.missing(ds, OPTIONS)).toEqual([]);
    await cache.close();

    const again = await freshCache("basic");
    expect(await again.missing(ds, OPTIONS)).toEqual([]);
    expect(await again.ensure(ds, OPTIONS, { vae })).toEqual({ computed: 0, cached: planned.length, failed: [] });
    await again.close();
  });

  it("plans exactly the flips an epoch range uses, and both flips when epochs are unbounded", async () => {
    const cache = await freshCache("plan");
    const one = cache.plan(ds, { ...OPTIONS, epochs: 1 });
    const unbounded = cache.plan(ds, { ...OPTIONS, epochs: undefined });
    expect(unbounded).toHaveLength(2 * ds.items.length);
    // One epoch shows every item once, in the variant its slot drew.
    expect(one).toHaveLength(ds.items.length);
    const drawn = new Set<string>();
    for await (const b of createBatchStream(ds, { ...OPTIONS, epochs: 1 })) {
      b.pixels.dispose();
      b.keys.forEach((k, i) => drawn.add(`${k}:${b.crops[i]!.flipped}`));
    }
    expect(new Set(one.map((p) => `${p.item.key}:${p.flip}`))).toEqual(drawn);
  });

  it("stores what VAE.encode returns for the stream's pixels, bit for bit; sampleLatents equals VAE.sample", async () => {
    const cache = await freshCache("parity");
    await cache.ensure(ds, OPTIONS, { vae });
    const pixels = createBatchStream(ds, OPTIONS)[Symbol.asyncIterator]();
    let batches = 0;
    for await (const cached of createLatentBatchStream(ds, OPTIONS, { latents: cache })) {
      const { value: fresh } = await pixels.next();
      expect(cached.keys).toEqual(fresh.keys);
      expect(cached.crops).toEqual(fresh.crops);
      expect(cached.captions).toEqual(fresh.captions);
      expect(cached.position).toEqual(fresh.position);
      const dist = await vae.encode(fresh.pixels);
      expect(cached.shape).toEqual(dist.mean.shape);
      expect(cached.latentMean.dtype).toBe(dist.mean.dtype);
      expect(bytesOf(cached.latentMean).equals(bytesOf(dist.mean))).toBe(true);
      expect(bytesOf(cached.latentStd).equals(bytesOf(dist.std))).toBe(true);

      const noise = createGenerator(batches).randn(cached.shape);
      const sampled = await sampleLatents(cached, { noise });
      const reference = await vae.sample(fresh.pixels, { noise, scaled: true });
      expect(bytesOf(sampled).equals(bytesOf(reference))).toBe(true);
      // The same draw from a generator seeded alike.
      const drawn = await sampleLatents(cached, { generator: createGenerator(batches) });
      expect(bytesOf(drawn).equals(bytesOf(reference))).toBe(true);
      // The mode: mean * scaling_factor, what VAE.sample gives with zero noise.
      const zeros = tensorFrom(new Float32Array(noise.numel), noise.shape);
      const mode = await sampleLatents(cached, { mode: "mean" });
      expect(native().ops.maxAbsDiff(mode, await vae.sample(fresh.pixels, { noise: zeros, scaled: true }))).toBe(0);
      const unscaled = await sampleLatents(cached, { mode: "mean", scaled: false });
      expect(bytesOf(unscaled).equals(bytesOf(dist.mean))).toBe(true);
      for (const t of [dist.moments, dist.mean, dist.logvar, dist.std, fresh.pixels, noise, sampled, reference])
        t.dispose();
      cached.latentMean.dispose();
      cached.latentStd.dispose();
      batches++;
    }
    expect(batches).toBe(3 * createBatchStream(ds, OPTIONS).batchesPerEpoch);
    expect((await pixels.next()).done).toBe(true);
  });

  it("stores bfloat16 latents of a bfloat16 VAE as they come out of it", async () => {
    const bf16 = await VAE.load(vaeDir, { dtype: "bfloat16" });
    try {
      const options = { ...OPTIONS, epochs: 1 };
      const cache = await freshCache("bf16", { dtype: "bfloat16" });
      await cache.ensure(ds, options, { vae: bf16 });
      const pixels = createBatchStream(ds, options)[Symbol.asyncIterator]();
      for await (const cached of createLatentBatchStream(ds, options, { latents: cache })) {
        const { value: fresh } = await pixels.next();
        const dist = await bf16.encode(fresh.pixels);
        expect(cached.latentMean.dtype).toBe("bfloat16");
        expect(bytesOf(cached.latentMean).equals(bytesOf(dist.mean))).toBe(true);
        expect(bytesOf(cached.latentStd).equals(bytesOf(dist.std))).toBe(true);
        const noise = createGenerator(3).randn(cached.shape);
        const sampled = await sampleLatents(cached, { noise });
        expect(bytesOf(sampled).equals(bytesOf(await bf16.sample(fresh.pixels, { noise, scaled: true })))).toBe(true);
      }
    } finally {
      bf16.dispose();
    }
  });

  it("caches class images for prior preservation, paired as the pixel stream pairs them", async () => {
    const root = join(tmp.path, "dreambooth");
    for (const [i, [width, height]] of SHAPES.slice(0, 3).entries()) {
      await mkdir(join(root, "instance"), { recursive: true });
      await writeFile(join(root, "instance", `${i}.png`), await imageBuffer({ width, height, seed: 20 + i }));
    }
    for (const [i, [width, height]] of SHAPES.entries()) {
      await mkdir(join(root, "class"), { recursive: true });
      await writeFile(join(root, "class", `${i}.png`), await imageBuffer({ width, height, seed: 40 + i }));
    }
    const db = await openDataset({
      path: join(root, "instance"),
      instancePrompt: "a photo of sks dog",
      classDir: join(root, "class"),
      classPrompt: "a photo of a dog",
    });
    const options: BatchOptions = { ...OPTIONS, captionDropout: 0, epochs: 2 };
    const cache = await freshCache("dreambooth");
    expect(cache.plan(db, { ...options, epochs: undefined })).toHaveLength(2 * db.items.length); // one bucket here
    await cache.ensure(db, options, { vae });
    const pixels = createBatchStream(db, options)[Symbol.asyncIterator]();
    let batches = 0;
    for await (const cached of createLatentBatchStream(db, options, { latents: cache })) {
      const { value: fresh } = await pixels.next();
      expect(cached.roles).toEqual(fresh.roles);
      expect(cached.roles).toContain("class");
      expect(cached.keys).toEqual(fresh.keys);
      expect(cached.captions).toEqual(fresh.captions);
      const dist = await vae.encode(fresh.pixels);
      expect(bytesOf(cached.latentMean).equals(bytesOf(dist.mean))).toBe(true);
      batches++;
    }
    expect(batches).toBe(2 * createBatchStream(db, options).batchesPerEpoch);
  });

  it("a hit reads no image and loads no VAE: the stream works with the image files deleted", async () => {
    const dir = join(tmp.path, "deleted-images");
    await cp(imagesDir, dir, { recursive: true });
    const local = await openDataset({ path: dir });
    const cache = await freshCache("deleted");
    await cache.ensure(local, OPTIONS, { vae });
    const reference = await collect(local, OPTIONS, cache);
    for (const name of await readdir(dir)) if (name.endsWith(".png")) await rm(join(dir, name));

    const reopened = await freshCache("deleted");
    expect(await reopened.missing(local, OPTIONS)).toEqual([]);
    let loads = 0;
    const loadVAE = async (): Promise<VAE> => {
      loads++;
      return vae;
    };
    expect(await collect(local, OPTIONS, reopened, { vae: loadVAE })).toEqual(reference);
    expect(loads).toBe(0);
    expect(local.report.filter((r) => r.code === "decode-failed")).toEqual([]);
  });

  it("is byte-identical across runs with the same seed, and resumes from a saved position", async () => {
    const cache = await freshCache("resume");
    await cache.ensure(ds, OPTIONS, { vae });
    const a = await collect(ds, { ...OPTIONS, prefetch: 1 }, cache);
    const b = await collect(ds, { ...OPTIONS, prefetch: 4 }, await freshCache("resume"));
    expect(b).toEqual(a);
    const stream = createLatentBatchStream(ds, OPTIONS, { latents: cache });
    let saved;
    let k = 0;
    for await (const batch of stream) {
      batch.latentMean.dispose();
      batch.latentStd.dispose();
      if (++k === 4) {
        saved = batch.next;
        break;
      }
    }
    expect(await collect(ds, { ...OPTIONS, position: saved }, cache)).toEqual(a.slice(4));
    const other = await collect(ds, { ...OPTIONS, seed: 8 }, cache, { vae: async () => vae });
    expect(other).not.toEqual(a);
  });

  it("misses when the image bytes, the VAE weights, the resolution, the flip, the dtype or the kernel change", async () => {
    const base: BatchOptions = { ...OPTIONS, flip: false, epochs: undefined };
    const cache = await freshCache("invalidate");
    await cache.ensure(ds, base, { vae });
    expect(await cache.missing(ds, base)).toEqual([]);

    // One image rewritten with other pixels: only its latents miss.
    const edited = join(tmp.path, "edited");
    await cp(imagesDir, edited, { recursive: true });
    await writeFile(join(edited, "2.png"), await imageBuffer({ width: 48, height: 48, seed: 99, format: "png" }));
    const editedDs = await openDataset({ path: edited });
    expect((await cache.missing(editedDs, base)).map((m) => m.item.name)).toEqual(["2.png"]);

    // Resolution, kernel: everything misses. Flip on: exactly the flipped variants miss.
    expect(await cache.missing(ds, { ...base, resolution: 48 })).toHaveLength(ds.items.length);
    expect(await cache.missing(ds, { ...base, kernel: "cubic" })).toHaveLength(ds.items.length);
    const flipped = await cache.missing(ds, { ...base, flip: true });
    expect(flipped).toHaveLength(ds.items.length);
    expect(flipped.every((m) => m.flip)).toBe(true);

    // A byte-identical copy of the VAE folder is the same VAE; a changed weight is another.
    const copy = join(tmp.path, "vae-copy");
    await cp(vaeDir, copy, { recursive: true });
    const sameVAE = await LatentCache.open({ dir: join(tmp.path, "invalidate"), vae: copy });
    expect(sameVAE.namespace).toBe(cache.namespace);
    expect(await sameVAE.missing(ds, base)).toEqual([]);
    const modified = join(tmp.path, "vae-modified");
    await cp(vaeDir, modified, { recursive: true });
    const file = join(modified, "diffusion_pytorch_model.safetensors");
    const { tensors } = await readSafetensors(file);
    const entries = [...tensors].map(([name, t]) => [name, t.clone()] as [string, Tensor]);
    const first = entries[0]![1].toTypedArray() as Float32Array;
    first[0] = first[0]! + 0.5;
    await writeSafetensors(file, entries);
    const otherVAE = await LatentCache.open({ dir: join(tmp.path, "invalidate"), vae: modified });
    expect(otherVAE.namespace).not.toBe(cache.namespace);
    expect(await otherVAE.missing(ds, base)).toHaveLength(ds.items.length);
    await expect(otherVAE.ensure(ds, base, { vae })).rejects.toThrow(/not the one the cache was opened for/);

    const bf16 = await LatentCache.open({ dir: join(tmp.path, "invalidate"), vae: vaeDir, dtype: "bfloat16" });
    expect(await bf16.missing(ds, base)).toHaveLength(ds.items.length);
    await expect(bf16.ensure(ds, base, { vae })).rejects.toThrow(
      /runs in float32 but the cache was opened for bfloat16/,
    );
  });

  it("refuses random crops with the reason", async () => {
    const cache = await freshCache("random");
    expect(() => cache.plan(ds, { ...OPTIONS, crop: "random" })).toThrow(/crop "random" cuts a new box every step/);
    expect(() => createLatentBatchStream(ds, { ...OPTIONS, crop: "random" }, { latents: cache })).toThrow(/random/);
  });

  it("treats a shard with a broken header as missing, with a warning, and recomputes it", async () => {
    const warnings: string[] = [];
    const cache = await freshCache("corrupt-header", { limits: { shardEntries: 4 } });
    await cache.ensure(ds, OPTIONS, { vae });
    const reference = await collect(ds, OPTIONS, cache);
    const root = join(tmp.path, "corrupt-header", "latents", cache.namespace);
    const shards = (await readdir(root)).filter((n) => n.endsWith(".safetensors"));
    expect(shards.length).toBeGreaterThan(1);
    const victim = join(root, shards[0]!);
    const handle = await open(victim, "r+");
    await handle.write(Buffer.from("garbage!"), 0, 8, 0);
    await handle.close();

    const reopened = await freshCache("corrupt-header", { onWarning: (m) => warnings.push(m) });
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toContain(victim);
    const missing = await reopened.missing(ds, OPTIONS);
    expect(missing.length).toBeGreaterThan(0);
    expect(missing.length).toBeLessThanOrEqual(4);
    await expect(collect(ds, OPTIONS, reopened)).rejects.toThrow(/not cached.*Run LatentCache.ensure\(\)/);
    expect((await reopened.ensure(ds, OPTIONS, { vae })).computed).toBe(missing.length);
    expect(await collect(ds, OPTIONS, reopened)).toEqual(reference);
    expect(warnings).toHaveLength(1); // the broken shard is named once

    const pruned = await pruneCache(join(tmp.path, "corrupt-header"));
    expect(pruned.removed).toEqual([victim]);
  });

  it("treats an entry whose bytes changed as missing, with a warning; a VAE given to the stream recomputes it", async () => {
    const cache = await freshCache("corrupt-data");
    await cache.ensure(ds, OPTIONS, { vae });
    const reference = await collect(ds, OPTIONS, cache);
    const root = join(tmp.path, "corrupt-data", "latents", cache.namespace);
    const shard = join(
      root,
      (await readdir(root)).find((n) => n.endsWith(".safetensors"))!,
    );
    const size = (await stat(shard)).size;
    const handle = await open(shard, "r+");
    const byte = Buffer.alloc(1);
    await handle.read(byte, 0, 1, size - 1);
    byte[0] = byte[0]! ^ 0x55;
    await handle.write(byte, 0, 1, size - 1);
    await handle.close();

    const warnings: string[] = [];
    const reopened = await freshCache("corrupt-data", { onWarning: (m) => warnings.push(m) });
    expect(warnings).toEqual([]); // the header is intact
    await expect(collect(ds, OPTIONS, reopened)).rejects.toThrow(/not cached/);
    expect(warnings.some((w) => /corrupt and is treated as missing: its bytes do not match/.test(w))).toBe(true);

    let loads = 0;
    const healed = await freshCache("corrupt-data", { onWarning: (m) => warnings.push(m) });
    const result = await collect(ds, OPTIONS, healed, {
      vae: async () => {
        loads++;
        return vae;
      },
    });
    expect(result).toEqual(reference);
    expect(loads).toBe(1);
    // Stored again: a third run reads it without a VAE.
    expect(await collect(ds, OPTIONS, await freshCache("corrupt-data"))).toEqual(reference);
  });

  it("records images that fail to decode, so later runs skip them without the VAE", async () => {
    const dir = join(tmp.path, "truncated");
    await cp(imagesDir, dir, { recursive: true });
    const jpeg = await imageBuffer({ width: 48, height: 40, seed: 5, format: "jpeg" });
    await writeFile(join(dir, "bad.jpg"), jpeg.subarray(0, Math.floor(jpeg.length / 2)));
    await writeText(join(dir, "bad.txt"), "bad, red");
    const local = await openDataset({ path: dir });
    expect(local.items.map((i) => i.name)).toContain("bad.jpg");
    const options = { ...OPTIONS, flip: false, captionDropout: 0 };
    const cache = await freshCache("truncated");
    const result = await cache.ensure(local, options, { vae });
    expect(result.failed.map((f) => [f.file, f.code])).toEqual([["bad.jpg", "decode-failed"]]);

    const again = await openDataset({ path: dir });
    const reopened = await freshCache("truncated");
    expect(await reopened.missing(again, options)).toEqual([]);
    const names = new Set<string>();
    for await (const b of createLatentBatchStream(again, options, { latents: reopened })) {
      b.names.forEach((n) => names.add(n));
      b.latentMean.dispose();
      b.latentStd.dispose();
    }
    expect(names.has("bad.jpg")).toBe(false);
    expect(names.size).toBe(SHAPES.length);
    expect(again.report.filter((r) => r.code === "decode-failed").map((r) => r.file)).toEqual(["bad.jpg"]);
  });

  it("is cancellable and keeps what was computed before the cancel", async () => {
    const cache = await freshCache("cancel");
    const total = cache.plan(ds, OPTIONS).length;
    const controller = new AbortController();
    await expect(
      cache.ensure(ds, OPTIONS, { vae, batchSize: 1, signal: controller.signal, onProgress: () => controller.abort() }),
    ).rejects.toMatchObject({ name: "AbortError" });
    const left = await (await freshCache("cancel")).missing(ds, OPTIONS);
    expect(left.length).toBeLessThan(total);
    expect(left.length).toBeGreaterThan(0);
  });

  it("lets runs fill one cache at the same time", async () => {
    const [a, b] = await Promise.all([freshCache("concurrent"), freshCache("concurrent")]);
    const results = await Promise.all([a!.ensure(ds, OPTIONS, { vae }), b!.ensure(ds, OPTIONS, { vae })]);
    expect(results.map((r) => r.computed)).toEqual([a!.plan(ds, OPTIONS).length, b!.plan(ds, OPTIONS).length]);
    const c = await freshCache("concurrent");
    expect(await c.missing(ds, OPTIONS)).toEqual([]);
    expect(await collect(ds, OPTIONS, c)).toEqual(await collect(ds, OPTIONS, a!));
  });

  it("reports what a cache holds and prunes shards unused for a while", async () => {
    const dir = join(tmp.path, "prune");
    const cache = await freshCache("prune");
    await cache.ensure(ds, { ...OPTIONS, flip: false }, { vae });
    const [info] = await cacheInfo(dir);
    expect(info).toMatchObject({ kind: "latents", namespace: cache.namespace, unreadable: [] });
    expect(info!.entries).toBe(cache.plan(ds, { ...OPTIONS, flip: false }).length);
    const shards = (await readdir(info!.dir)).filter((n) => n.endsWith(".safetensors"));
    const old = new Date(Date.now() - 40 * 86_400_000);
    for (const s of shards) await utimes(join(info!.dir, s), old, old);
    expect((await pruneCache(dir, { unusedDays: 60 })).removed).toEqual([]);
    const dry = await pruneCache(dir, { unusedDays: 30, dryRun: true });
    expect(dry.removed).toHaveLength(shards.length);
    expect(await cacheInfo(dir)).toHaveLength(1);

    // The same through the CLI.
    const cli = (...argv: string[]) => captureCli(() => main(argv));
    const listed = await cli("cache", "info", dir, "--json");
    expect(listed.code).toBe(0);
    expect((JSON.parse(listed.out) as { namespaces: { entries: number }[] }).namespaces[0]!.entries).toBe(
      info!.entries,
    );
    const pruned = await cli("cache", "prune", dir, "--unused-days", "30", "--json");
    expect(pruned.code).toBe(0);
    expect((JSON.parse(pruned.out) as { removed: string[] }).removed).toEqual(dry.removed);
    expect(await cacheInfo(dir)).toEqual([]);
  });
});

describe("text embedding cache", () => {
  let textEncoder: TextEncoder;
  let tokenizer: ClipTokenizer;
  const teDir = fixture("tiny-sd", "text_encoder");
  const tokDir = fixture("tiny-sd", "tokenizer");
  beforeAll(async () => {
    textEncoder = await TextEncoder.load(teDir);
    tokenizer = await ClipTokenizer.fromPretrained(tokDir);
  });
  afterAll(() => textEncoder?.dispose());

  it("stores the text encoder's last_hidden_state per caption, keyed by clip skip too", async () => {
    const dir = join(tmp.path, "text");
    const captions = trainingCaptions(ds, OPTIONS);
    expect(captions).toContain(""); // caption dropout trains the unconditional embedding
    expect(captions).toHaveLength(ds.items.length + 1);
    for (const clipSkip of [0, 1]) {
      const cache = await TextEmbeddingCache.open({ dir, textEncoder: teDir, tokenizer: tokDir, clipSkip });
      expect(await cache.missing(captions)).toEqual(captions);
      expect(await cache.ensure(captions, { textEncoder, tokenizer })).toEqual({
        computed: captions.length,
        cached: 0,
      });
      expect(await cache.missing(captions)).toEqual([]);

      const ids = tokenizer.encode(captions);
      const { lastHiddenState } = await textEncoder.forward(ids, { clipSkip });
      const reopened = await TextEmbeddingCache.open({ dir, textEncoder: teDir, tokenizer: tokDir, clipSkip });
      const got = await reopened.get(captions);
      expect(got.shape).toEqual(lastHiddenState.shape);
      expect(bytesOf(got).equals(bytesOf(lastHiddenState))).toBe(true);
      // Any order, with repeats.
      const row = lastHiddenState.numel / captions.length;
      const picked = await reopened.get([captions[2]!, captions[0]!, captions[2]!]);
      const all = lastHiddenState.toTypedArray() as Float32Array;
      const expected = [2, 0, 2].flatMap((i) => [...all.subarray(i * row, (i + 1) * row)]);
      expect([...(picked.toTypedArray() as Float32Array)]).toEqual(expected);
    }
    const other = await TextEmbeddingCache.open({ dir, textEncoder: teDir, tokenizer: tokDir, clipSkip: 2 });
    expect(await other.missing(captions)).toEqual(captions);
    await expect(other.get(["img0, red, green"])).rejects.toThrow(/not cached/);
  });

  it("refuses shuffled tags, and feeds the latent stream's captions", async () => {
    expect(() => trainingCaptions(ds, { ...OPTIONS, shuffleTags: true })).toThrow(/shuffleTags/);
    const dir = join(tmp.path, "text-stream");
    const latents = await LatentCache.open({ dir, vae: vaeDir });
    await latents.ensure(ds, OPTIONS, { vae });
    const text = await TextEmbeddingCache.open({ dir, textEncoder: teDir, tokenizer: tokDir });
    await text.ensure(trainingCaptions(ds, OPTIONS), { textEncoder, tokenizer });
    let n = 0;
    for await (const b of createLatentBatchStream(ds, OPTIONS, { latents, text })) {
      const ids = tokenizer.encode(b.captions);
      const { lastHiddenState } = await textEncoder.forward(ids);
      expect(native().ops.maxAbsDiff(b.textEmbeddings!, lastHiddenState)).toBeLessThan(1e-5);
      n++;
    }
    expect(n).toBeGreaterThan(0);
  });
});
