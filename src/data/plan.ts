// The epoch plan: which items form which batch, in which bucket, in what order.
// A pure function of (dataset, options, seed, epoch): recomputing it for any
// epoch gives the same batches, so a saved {epoch, index} resumes exactly.
import {
  bucketStats,
  makeBuckets,
  resolveBucketOptions,
  selectBucket,
  type Bucket,
  type BucketOptions,
  type BucketStat,
} from "./buckets.js";
import { keyedRng, RNG_PURPOSE } from "./rng.js";
import type { Dataset } from "./types.js";

export interface PlanOptions {
  /** Square size without buckets; the area (resolution²) with them. Default 512. */
  resolution?: number;
  /** kohya aspect-ratio buckets; off (square resize + crop, as diffusers) unless given. */
  buckets?: boolean | BucketOptions;
  batchSize?: number;
  seed?: number;
  /** Shuffle items within buckets and the batch order each epoch (default true). */
  shuffle?: boolean;
  /** Drop each bucket's last partial batch (default false, as kohya). */
  dropLast?: boolean;
  /** Pair every instance example with a class example (default: on when the dataset has class images). */
  priorPreservation?: boolean;
}

export interface PlannedBatch {
  bucket: number;
  /** Indices into dataset.items of the training examples. */
  entries: number[];
  /** Indices into dataset.items of the class examples paired with them (prior preservation). */
  classEntries: number[];
  /**
   * Data parallel (shardBatch): the slot of each entry, then each class entry, in the global batch
   * (its row there; per-example randomness is keyed on it), and the global batch's row count.
   */
  slots?: number[];
  globalRows?: number;
}

/** Data parallel: which share of every global batch this process takes. */
export interface ShardOptions {
  rank: number;
  worldSize: number;
}

/**
 * This rank's contiguous share of a global batch (sizes differ by at most one row), with its
 * examples' global slots, so that the ranks together see exactly the global batch. A batch with
 * fewer examples than ranks is skipped by every rank alike (undefined): no rank may go without rows.
 */
export function shardBatch(planned: PlannedBatch, shard: ShardOptions): PlannedBatch | undefined {
  const { rank, worldSize } = shard;
  const n = planned.entries.length;
  if (n < worldSize) return undefined;
  const base = Math.floor(n / worldSize);
  const extra = n % worldSize;
  const start = rank * base + Math.min(rank, extra);
  const count = base + (rank < extra ? 1 : 0);
  const own = Array.from({ length: count }, (_, i) => start + i);
  const hasClass = planned.classEntries.length > 0;
  return {
    bucket: planned.bucket,
    entries: planned.entries.slice(start, start + count),
    classEntries: hasClass ? planned.classEntries.slice(start, start + count) : [],
    slots: hasClass ? [...own, ...own.map((i) => n + i)] : own,
    globalRows: n + planned.classEntries.length,
  };
}

export interface StreamPosition {
  epoch: number;
  /** Batch index within the epoch. */
  index: number;
}

export class EpochPlanner {
  readonly buckets: Bucket[];
  readonly mode: "bucket" | "square";
  readonly batchSize: number;
  /** Bucket of each item (class items: -1, they follow their batch's bucket). */
  readonly assignment: number[];
  readonly batchesPerEpoch: number;
  readonly examplesPerEpoch: number;
  private readonly perBucket: number[][];
  private readonly classOrder: number[];
  private readonly cache = new Map<number, { batches: PlannedBatch[] }>();

  constructor(
    private readonly dataset: Dataset,
    private readonly options: PlanOptions,
  ) {
    const resolution = options.resolution ?? 512;
    if (!(Number.isInteger(resolution) && resolution >= 8 && resolution % 8 === 0)) {
      throw new RangeError(`resolution must be a positive multiple of 8, got ${resolution}`);
    }
    this.batchSize = options.batchSize ?? 1;
    if (!(Number.isInteger(this.batchSize) && this.batchSize >= 1)) {
      throw new RangeError(`batchSize must be an integer >= 1, got ${options.batchSize}`);
    }
    const seed = options.seed ?? 0;
    if (!(Number.isSafeInteger(seed) && seed >= 0))
      throw new RangeError(`seed must be a non-negative integer, got ${seed}`);
    if (options.buckets) {
      this.mode = "bucket";
      this.buckets = makeBuckets(resolveBucketOptions(resolution, options.buckets === true ? {} : options.buckets));
    } else {
      this.mode = "square";
      this.buckets = [{ width: resolution, height: resolution }];
    }
    const items = dataset.items;
    this.assignment = items.map((item) =>
      item.role === "class" ? -1 : this.mode === "square" ? 0 : selectBucket(item.width, item.height, this.buckets),
    );
    this.perBucket = this.buckets.map(() => []);
    items.forEach((item, i) => {
      const b = this.assignment[i]!;
      if (b >= 0) for (let r = 0; r < item.repeats; r++) this.perBucket[b]!.push(i);
    });
    const classItems = items.flatMap((item, i) => (item.role === "class" ? [i] : []));
    const prior = options.priorPreservation ?? classItems.length > 0;
    if (prior && classItems.length === 0) {
      throw new RangeError(
        `priorPreservation needs class images; the dataset has none (classImagesNeeded: ${dataset.classImagesNeeded})`,
      );
    }
    // One fixed shuffled order of class images, cycled through across epochs.
    this.classOrder = prior ? keyedRng(seed, RNG_PURPOSE.classOrder).shuffle(classItems) : [];
    const full = (n: number): number =>
      options.dropLast ? Math.floor(n / this.batchSize) : Math.ceil(n / this.batchSize);
    this.batchesPerEpoch = this.perBucket.reduce((sum, list) => sum + full(list.length), 0);
    this.examplesPerEpoch = this.perBucket.reduce(
      (sum, list) => sum + (options.dropLast ? full(list.length) * this.batchSize : list.length),
      0,
    );
    if (this.batchesPerEpoch === 0) {
      throw new RangeError(
        `no batch fits: every bucket holds fewer than batchSize (${this.batchSize}) examples and dropLast is set`,
      );
    }
  }

  /** Non-empty buckets with their image and example counts. */
  stats(): BucketStat[] {
    const trainIdx = this.assignment.flatMap((b, i) => (b >= 0 ? [i] : []));
    return bucketStats(
      trainIdx.map((i) => this.assignment[i]!),
      trainIdx.map((i) => this.dataset.items[i]!.repeats),
      this.buckets,
    );
  }

  /** The batches of `epoch`, in order. */
  epoch(epoch: number): PlannedBatch[] {
    const cached = this.cache.get(epoch);
    if (cached) return cached.batches;
    const seed = this.options.seed ?? 0;
    const shuffle = this.options.shuffle ?? true;
    const rng = keyedRng(seed, RNG_PURPOSE.order, epoch);
    const batches: PlannedBatch[] = [];
    this.perBucket.forEach((list, bucket) => {
      const order = shuffle ? rng.shuffle([...list]) : list;
      for (let start = 0; start < order.length; start += this.batchSize) {
        const entries = order.slice(start, start + this.batchSize);
        if (entries.length < this.batchSize && this.options.dropLast) break;
        batches.push({ bucket, entries, classEntries: [] });
      }
    });
    if (shuffle) rng.shuffle(batches);
    if (this.classOrder.length > 0) {
      // Class examples continue where the previous epoch stopped.
      let cursor = epoch * this.examplesPerEpoch;
      for (const batch of batches) {
        batch.classEntries = batch.entries.map(() => this.classOrder[cursor++ % this.classOrder.length]!);
      }
    }
    if (this.cache.size > 2) this.cache.delete(this.cache.keys().next().value!);
    this.cache.set(epoch, { batches });
    return batches;
  }

  /** A valid position: index past the end of an epoch moves to the next epoch's start. */
  normalise(position: StreamPosition): StreamPosition {
    const { epoch, index } = position;
    if (!(Number.isSafeInteger(epoch) && epoch >= 0 && Number.isSafeInteger(index) && index >= 0)) {
      throw new RangeError(`position must be {epoch, index} of non-negative integers, got ${JSON.stringify(position)}`);
    }
    if (index > this.batchesPerEpoch) {
      throw new RangeError(
        `position.index ${index} is past the ${this.batchesPerEpoch} batches of an epoch: the dataset or the batch options changed since it was saved`,
      );
    }
    return index === this.batchesPerEpoch ? { epoch: epoch + 1, index: 0 } : { epoch, index };
  }
}
