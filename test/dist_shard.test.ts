// Data parallel, the data side: every rank plans the same global batch and takes a disjoint,
// contiguous share of it; per-example randomness (crops, flips, captions) is keyed on the
// example's slot in the global batch, so the ranks' shares put together are the global batch.
import { join } from "node:path";

import { afterAll, beforeAll, describe, expect, it } from "vitest";

import {
  createRawBatchStream,
  openDataset,
  type BatchOptions,
  type Dataset,
  type RawBatch,
} from "../src/data/index.js";
import { EpochPlanner, shardBatch } from "../src/data/plan.js";
import { tempDir } from "./helpers/fixtures.js";
import { writeImage, writeText } from "./helpers/images.js";

let dir: { path: string; cleanup(): Promise<void> };
let ds: Dataset;
beforeAll(async () => {
  dir = await tempDir("sdtune-dist-shard-");
  const shapes: [number, number][] = [
    [80, 64],
    [64, 80],
    [96, 96],
    [120, 64],
    [64, 64],
    [70, 100],
    [100, 70],
    [64, 64],
    [80, 80],
  ];
  for (const [i, [w, h]] of shapes.entries()) {
    await writeImage(join(dir.path, "images", `${i}.png`), { width: w, height: h, seed: i });
    await writeText(join(dir.path, "images", `${i}.txt`), `img${i}, red, green, blue, tag${i}`);
  }
  ds = await openDataset({ path: join(dir.path, "images") });
});
afterAll(async () => dir.cleanup());

const GLOBAL: BatchOptions = {
  resolution: 64,
  buckets: { minSide: 32, maxSide: 128, step: 32 },
  batchSize: 4,
  crop: "random",
  flip: true,
  seed: 77,
  captionDropout: 0.3,
  shuffleTags: true,
};

async function collect(options: BatchOptions): Promise<RawBatch[]> {
  const out: RawBatch[] = [];
  for await (const batch of createRawBatchStream(ds, { ...options, epochs: 2 })) out.push(batch);
  return out;
}

/** The examples of a batch, one record each (pixels of the example included). */
function examples(b: RawBatch): string[] {
  const stride = b.data.length / b.shape[0];
  return b.names.map((name, k) =>
    JSON.stringify([name, b.captions[k], b.crops[k], Array.from(b.data.subarray(k * stride, k * stride + 64))]),
  );
}

describe("sharding a global batch across ranks", () => {
  it("splits every global batch into contiguous shares that differ by at most one row", () => {
    const planner = new EpochPlanner(ds, GLOBAL);
    for (const global of planner.epoch(0)) {
      for (const worldSize of [1, 2, 3]) {
        const shares = [...Array(worldSize).keys()].map((rank) => shardBatch(global, { rank, worldSize }));
        if (global.entries.length < worldSize) {
          // Too few examples for every rank to get one: every rank skips the batch alike.
          expect(shares.every((s) => s === undefined)).toBe(true);
          continue;
        }
        expect(shares.flatMap((s) => s!.entries)).toEqual(global.entries);
        expect(shares.flatMap((s) => s!.slots)).toEqual(global.entries.map((_, i) => i));
        const sizes = shares.map((s) => s!.entries.length);
        expect(Math.max(...sizes) - Math.min(...sizes)).toBeLessThanOrEqual(1);
        for (const s of shares) expect(s!.globalRows).toBe(global.entries.length);
      }
    }
  });

  it("gives each rank exactly its rows of the global batch: same images, crops, flips and captions", async () => {
    const whole = await collect(GLOBAL);
    const ranks = await Promise.all([0, 1].map((rank) => collect({ ...GLOBAL, shard: { rank, worldSize: 2 } })));
    // Batches with fewer examples than ranks are skipped by both; the others line up one to one.
    const kept = whole.filter((b) => b.names.length >= 2);
    expect(kept.length).toBeGreaterThan(2);
    expect(ranks[0]!.length).toBe(kept.length);
    expect(ranks[1]!.length).toBe(kept.length);
    kept.forEach((global, i) => {
      const a = ranks[0]![i]!;
      const b = ranks[1]![i]!;
      expect(a.position).toEqual(global.position);
      expect(b.next).toEqual(global.next);
      expect([...examples(a), ...examples(b)]).toEqual(examples(global));
      expect([...a.globalRows!, ...b.globalRows!]).toEqual(global.names.map((_, k) => k));
      expect(a.globalBatch).toBe(global.names.length);
    });
    // The random options did something: both flips occur, so matching them is not trivial.
    expect(new Set(whole.flatMap((b) => b.crops.map((c) => c.flipped)))).toEqual(new Set([true, false]));
  });
});
