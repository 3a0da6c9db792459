// The batch stream: byte-level determinism under a seed, exact resume, epochs,
// caption transforms, DreamBooth pairing, and tensors for the addon.
import { createHash } from "node:crypto";
import { join } from "node:path";

import { afterAll, beforeAll, describe, expect, it } from "vitest";

import {
  createBatchStream,
  createRawBatchStream,
  keyedRng,
  openDataset,
  processCaption,
  type BatchOptions,
  type Dataset,
  type RawBatch,
} from "../src/data/index.js";
import { native } from "../src/native/index.js";
import { tensorFrom } from "../src/tensor.js";
import { tempDir } from "./helpers/fixtures.js";
import { writeImage, writeText } from "./helpers/images.js";

let dir: { path: string; cleanup(): Promise<void> };
let ds: Dataset;
beforeAll(async () => {
  dir = await tempDir("sdtune-data-stream-");
  const shapes: [number, number][] = [
    [80, 64],
    [64, 80],
    [96, 96],
    [120, 64],
    [64, 64],
    [70, 100],
    [100, 70],
  ];
  for (const [i, [w, h]] of shapes.entries()) {
    await writeImage(join(dir.path, "images", `${i}.jpg`), { width: w, height: h, seed: i, format: "jpeg" });
    await writeText(join(dir.path, "images", `${i}.txt`), `img${i}, red, green, blue, tag${i}`);
  }
  ds = await openDataset({ path: join(dir.path, "images") });
});
afterAll(async () => dir.cleanup());

const OPTIONS: BatchOptions = {
  resolution: 64,
  buckets: { minSide: 32, maxSide: 128, step: 32 },
  batchSize: 2,
  crop: "random",
  flip: true,
  seed: 1234,
  captionDropout: 0.3,
  shuffleTags: true,
  keepTags: 1,
};

/** Everything a batch carries, as bytes, for exact comparisons. */
function fingerprint(batch: RawBatch): string {
  const h = createHash("sha256");
  h.update(new Uint8Array(batch.data.buffer, batch.data.byteOffset, batch.data.byteLength));
  h.update(
    JSON.stringify([batch.shape, batch.captions, batch.keys, batch.names, batch.crops, batch.position, batch.next]),
  );
  return h.digest("hex");
}

async function collect(options: BatchOptions, limit = Infinity): Promise<RawBatch[]> {
  const out: RawBatch[] = [];
  for await (const batch of createRawBatchStream(ds, options)) {
    out.push(batch);
    if (out.length >= limit) break;
  }
  return out;
}

describe("batch stream", () => {
  it("is byte-identical across runs with the same seed, whatever the prefetch and concurrency", async () => {
    const a = await collect({ ...OPTIONS, epochs: 2, prefetch: 1, concurrency: 1 });
    const b = await collect({ ...OPTIONS, epochs: 2, prefetch: 4, concurrency: 8 });
    expect(a.length).toBe(2 * createRawBatchStream(ds, OPTIONS).batchesPerEpoch);
    expect(b.map(fingerprint)).toEqual(a.map(fingerprint));
    const other = await collect({ ...OPTIONS, epochs: 2, seed: 99 });
    expect(other.map(fingerprint)).not.toEqual(a.map(fingerprint));
    // The random options did something: both flips, several crops, some dropped captions.
    const crops = a.flatMap((x) => x.crops);
    expect(new Set(crops.map((c) => c.flipped))).toEqual(new Set([true, false]));
    expect(new Set(crops.map((c) => `${c.left},${c.top}`)).size).toBeGreaterThan(2);
    expect(a.flatMap((x) => x.captions)).toContain("");
  });

  it("resumes exactly from a saved position", async () => {
    const full = await collect({ ...OPTIONS, epochs: 3 });
    for (const k of [1, 4, full.length - 2]) {
      const saved = JSON.parse(JSON.stringify(full[k - 1]!.next)); // as a checkpoint stores it
      const resumed = await collect({ ...OPTIONS, epochs: 3, position: saved });
      expect(resumed.map(fingerprint), `resume after batch ${k}`).toEqual(full.slice(k).map(fingerprint));
    }
    const perEpoch = createRawBatchStream(ds, OPTIONS).batchesPerEpoch;
    expect(full[perEpoch - 1]!.next).toEqual({ epoch: 1, index: 0 });
    expect(() => createRawBatchStream(ds, { ...OPTIONS, position: { epoch: 0, index: perEpoch + 1 } })).toThrow(
      /dataset or the batch options changed/,
    );
  });

  it("covers every example once per epoch, in a new order each epoch", async () => {
    const batches = await collect({ ...OPTIONS, epochs: 3, captionDropout: 0 });
    const perEpoch = createRawBatchStream(ds, OPTIONS).batchesPerEpoch;
    const epochs = [0, 1, 2].map((e) => batches.slice(e * perEpoch, (e + 1) * perEpoch).flatMap((b) => b.names));
    for (const names of epochs) expect([...names].sort()).toEqual(ds.items.map((i) => i.name).sort());
    expect(new Set(epochs.map((e) => e.join())).size).toBe(3);
    const ordered = await collect({ ...OPTIONS, epochs: 2, shuffle: false });
    expect(ordered.slice(0, perEpoch).map((b) => b.names)).toEqual(ordered.slice(perEpoch).map((b) => b.names));
  });

  it("applies caption dropout and tag shuffling with kept leading tags", async () => {
    const batches = await collect({ ...OPTIONS, epochs: 4 });
    const byName = new Map(ds.items.map((i) => [i.name, i.caption]));
    let dropped = 0;
    let reordered = 0;
    for (const b of batches) {
      b.names.forEach((name, k) => {
        const caption = b.captions[k]!;
        const original = byName.get(name)!;
        if (caption === "") return void dropped++;
        const tags = caption.split(", ");
        expect(tags[0]).toBe(original.split(", ")[0]); // keepTags: 1
        expect([...tags].sort()).toEqual([...original.split(", ")].sort());
        if (caption !== original) reordered++;
      });
    }
    expect(dropped).toBeGreaterThan(0);
    expect(reordered).toBeGreaterThan(0);
    const none = await collect({ ...OPTIONS, epochs: 1, captionDropout: 1 });
    expect(none.flatMap((b) => b.captions).every((c) => c === "")).toBe(true);
    expect(processCaption("a, b, c", { shuffleTags: true, keepTags: 3 }, keyedRng(1))).toBe("a, b, c");
    expect(() => createRawBatchStream(ds, { captionDropout: 2 })).toThrow(/captionDropout/);
  });

  it("stops with an AbortError when its signal aborts", async () => {
    const controller = new AbortController();
    let taken = 0;
    const run = async (): Promise<void> => {
      for await (const batch of createRawBatchStream(ds, { ...OPTIONS, signal: controller.signal })) {
        expect(batch.shape[0]).toBeGreaterThan(0);
        if (++taken === 2) controller.abort();
      }
    };
    await expect(run()).rejects.toMatchObject({ name: "AbortError" });
    expect(taken).toBe(2);
  });

  it("hands the addon one float32 tensor [B, 3, H, W], equal to the JS conversion byte for byte", async () => {
    const raw = await collect({ ...OPTIONS, epochs: 1 });
    let i = 0;
    for await (const batch of createBatchStream(ds, { ...OPTIONS, epochs: 1 })) {
      const expected = raw[i++]!;
      expect(batch.pixels.shape).toEqual(expected.shape);
      expect(batch.pixels.dtype).toBe("float32");
      expect(Buffer.from(batch.hwc).equals(Buffer.from(expected.hwc))).toBe(true);
      const got = batch.pixels.toTypedArray() as Float32Array;
      expect(Buffer.from(got.buffer, got.byteOffset, got.byteLength).equals(Buffer.from(expected.data.buffer))).toBe(
        true,
      );
      batch.pixels.dispose();
    }
    expect(i).toBe(raw.length);
    // Bad arguments are refused on the JS thread, before any work is queued.
    expect(() => native().data.pixelsToTensor(tensorFrom(new Float32Array(3), [1, 1, 1, 3]))).toThrow(
      /pixels must be a uint8 CPU tensor \[B, H, W, 3\], got float32/,
    );
    // Stopping early frees what was prefetched; the stream can be iterated again from the start.
    for await (const batch of createBatchStream(ds, { ...OPTIONS, prefetch: 3 })) {
      batch.pixels.dispose();
      break;
    }
  });
});

describe("prior preservation", () => {
  it("pairs each instance example with a class example and cycles class images across epochs", async () => {
    const root = join(dir.path, "db");
    for (let i = 0; i < 3; i++)
      await writeImage(join(root, "instance", `${i}.png`), { width: 64, height: 64, seed: 60 + i });
    for (let i = 0; i < 4; i++)
      await writeImage(join(root, "class", `${i}.png`), { width: 48, height: 80, seed: 70 + i });
    const db = await openDataset({
      type: "dreambooth",
      path: join(root, "instance"),
      instancePrompt: "photo of sks toy",
      classDir: join(root, "class"),
      classPrompt: "photo of a toy",
    });
    const batches: RawBatch[] = [];
    for await (const b of createRawBatchStream(db, { resolution: 32, batchSize: 2, epochs: 2, seed: 5 }))
      batches.push(b);
    const classSeen: string[] = [];
    for (const b of batches) {
      const n = b.shape[0] / 2;
      expect(b.roles).toEqual([...Array(n).fill("instance"), ...Array(n).fill("class")]);
      expect(b.captions).toEqual([...Array(n).fill("photo of sks toy"), ...Array(n).fill("photo of a toy")]);
      classSeen.push(...b.names.slice(n));
    }
    // 6 instance examples over two epochs take class images 0..5 of a fixed shuffled cycle of 4.
    expect(classSeen).toHaveLength(6);
    expect(new Set(classSeen).size).toBe(4);
    expect(classSeen.slice(4)).toEqual(classSeen.slice(0, 2));
  });
});
