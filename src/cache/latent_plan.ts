// Planning the latent cache: which latents (item, bucket, resize, crop, flip) a run
// reads, and the cache key of each (see latent_cache.ts for what the key covers).
// Random crops cannot be cached: checkCacheable refuses them.
import type { BatchOptions } from "../data/batches.js";
import type { Bucket, Fit } from "../data/buckets.js";
import { exampleGeometry, planExamples, type PlannedExample } from "../data/examples.js";
import { jpegRoadFor, parseBackground } from "../data/image.js";
import { EpochPlanner } from "../data/plan.js";
import type { DataItem, Dataset } from "../data/types.js";
import { sha256Hex } from "./fingerprint.js";
import type { LatentCache } from "./latent_cache.js";

/** One latent an epoch plan needs: an item cut one way. */
export interface PlannedLatent {
  /** The cache key. */
  key: string;
  item: DataItem;
  bucket: Bucket;
  fit: Fit;
  left: number;
  top: number;
  flip: boolean;
}

/** The planned latents of LatentCache.plan() (see there), each key once. */
export function planLatents(cache: LatentCache, dataset: Dataset, options: BatchOptions): PlannedLatent[] {
  checkCacheable(options);
  const planner = new EpochPlanner(dataset, options);
  const out = new Map<string, PlannedLatent>();
  const add = (latent: PlannedLatent): void => {
    if (!out.has(latent.key)) out.set(latent.key, latent);
  };
  if (options.epochs !== undefined) {
    const start = planner.normalise(options.position ?? { epoch: 0, index: 0 });
    for (let epoch = start.epoch; epoch < options.epochs; epoch++) {
      const batches = planner.epoch(epoch);
      for (let index = epoch === start.epoch ? start.index : 0; index < batches.length; index++) {
        const planned = batches[index]!;
        const bucket = planner.buckets[planned.bucket]!;
        for (const e of planExamples(dataset, planner, options, planned, { epoch, index }, false)) {
          add(latentOf(cache, e, bucket, options));
        }
      }
    }
  } else {
    const flips = options.flip ? [false, true] : [false];
    const used = [...new Set(planner.assignment.filter((b) => b >= 0))].sort((a, b) => a - b);
    dataset.items.forEach((item, i) => {
      if (item.role === "class" && options.priorPreservation === false) return;
      const buckets = item.role === "class" ? used : [planner.assignment[i]!];
      for (const b of buckets) {
        const bucket = planner.buckets[b]!;
        const geometry = exampleGeometry(planner, options, item, bucket);
        for (const flip of flips) {
          const p = { item, bucket, ...geometry, flip };
          add({ key: cache.keyOf(p, options), ...p });
        }
      }
    });
  }
  return [...out.values()];
}

/** The cache key of an example (see latent_cache.ts for what it covers). */
export function latentKey(example: Omit<PlannedLatent, "key">, options: BatchOptions): string {
  const background = parseBackground(options.background);
  const kernel = options.kernel ?? "lanczos3";
  // Only where the native JPEG road renders it: keys of sharp-rendered images stay as they were.
  const road = jpegRoadFor(example.item.format, kernel);
  return sha256Hex(
    JSON.stringify([
      "latent",
      example.item.key,
      [example.bucket.width, example.bucket.height],
      [example.fit.resizedWidth, example.fit.resizedHeight],
      [example.left, example.top],
      example.flip,
      kernel,
      [background.r, background.g, background.b],
      ...(road ? [road] : []),
    ]),
  ).slice(0, 32);
}

/** Random crops change every step: refuse them with the reason. */
export function checkCacheable(options: BatchOptions): void {
  if (options.crop === "random") {
    throw new RangeError(
      'cached latents need a fixed crop: crop "random" cuts a new box every step, so its latents cannot be cached ' +
        '(as in kohya sd-scripts). Use crop "center", or turn latent caching off.',
    );
  }
}

/** @internal The planned latent of a stream example cut for `bucket`. */
export function latentOf(cache: LatentCache, e: PlannedExample, bucket: Bucket, options: BatchOptions): PlannedLatent {
  const p = { item: e.item, bucket, fit: e.fit, left: e.left, top: e.top, flip: e.flip };
  return { key: cache.keyOf(p, options), ...p };
}
