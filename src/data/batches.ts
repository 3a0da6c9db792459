// The batch stream: an async iterator of ready batches, decoded ahead of the
// consumer with bounded concurrency, byte-identical for a given seed, and
// resumable from a saved {epoch, index}.
import { native, type Tensor } from "../native/index.js";
import { tensorFrom } from "../tensor.js";
import { type Bucket, type BucketStat } from "./buckets.js";
import { type CaptionOptions } from "./caption-text.js";
import { abortError } from "./files.js";
import { hwcToChw, parseBackground, renderImage, type ResizeKernel } from "./image.js";
import { planExamples, describeExamples, reportSkipped, balancePairs } from "./examples.js";
import {
  EpochPlanner,
  shardBatch,
  type PlannedBatch,
  type PlanOptions,
  type ShardOptions,
  type StreamPosition,
} from "./plan.js";
import { DATA_DEFAULTS, type DataItem, type Dataset, type DatasetIssue, type ItemRole } from "./types.js";

export type { StreamPosition } from "./plan.js";

export interface BatchOptions extends PlanOptions, CaptionOptions {
  /** "center" (default) or "random" crop of the resized image. */
  crop?: "center" | "random";
  /** Mirror each example left-right with probability 0.5. */
  flip?: boolean;
  /** Stop before epoch `epochs` (counted from the start, also when resuming). Default: never; training stops the stream. */
  epochs?: number;
  /** Where to start: a batch's `next` saved in a checkpoint (default {epoch: 0, index: 0}). */
  position?: StreamPosition;
  /** Batches decoded ahead of the consumer (default 2). */
  prefetch?: number;
  /** Images decoded at once (default 4: libuv's pool size, which sharp's work runs on). */
  concurrency?: number;
  /** Background for transparent images (default white). */
  background?: string | { r: number; g: number; b: number };
  /** sharp resize kernel (default lanczos3). */
  kernel?: ResizeKernel;
  signal?: AbortSignal;
  /** Called for each image that fails to decode (it is also appended to dataset.report). */
  onIssue?: (issue: DatasetIssue) => void;
  /**
   * Data parallel: batchSize is the global batch; this process gets its rank's share of each
   * (shardBatch), keyed as in the global batch, and `globalRows` / `globalBatch` say where it sits.
   */
  shard?: ShardOptions;
}

/** Where one example came from and how it was cut: enough to key a latent cache. */
export interface ExampleCrop {
  /** Size of the image (after EXIF orientation). */
  originalWidth: number;
  originalHeight: number;
  /** Size it was resized to before the crop. */
  resizedWidth: number;
  resizedHeight: number;
  /** Crop top-left in the resized image (before the flip). */
  left: number;
  top: number;
  flipped: boolean;
}

/** What every batch carries besides its pixels as floats. */
export interface BatchInfo {
  /** The examples' pixels as packed 8-bit RGB, [B, H, W, 3]. Treat as read-only. */
  hwc: Uint8Array;
  /** [B, 3, H, W]: the shape of the float pixels. */
  shape: [number, number, number, number];
  captions: string[];
  /** Content keys (sha256 of the encoded image) of the examples. */
  keys: string[];
  names: string[];
  /** "train"/"instance" examples first, then their paired "class" examples (prior preservation). */
  roles: ItemRole[];
  crops: ExampleCrop[];
  bucket: Bucket;
  /** This batch's place in the stream. */
  position: StreamPosition;
  /** The position after it: save this to resume with the following batch. */
  next: StreamPosition;
  /** With `shard`: each example's row in the global batch, and that batch's row count. */
  globalRows?: number[];
  globalBatch?: number;
}

export interface RawBatch extends BatchInfo {
  /** float32 [B, 3, H, W] in [-1, 1], computed in JS. Treat as read-only. */
  data: Float32Array;
}

export interface Batch extends BatchInfo {
  /** float32 [B, 3, H, W] in [-1, 1], converted natively off the JS thread. The consumer disposes it. */
  pixels: Tensor;
}

export interface BatchStream<T> extends AsyncIterable<T> {
  readonly buckets: readonly Bucket[];
  /** Non-empty buckets with image and example counts. */
  readonly bucketStats: BucketStat[];
  readonly batchesPerEpoch: number;
  readonly examplesPerEpoch: number;
  /** The planned batches of an epoch, without decoding anything (for cache builders). */
  epochPlan(epoch: number): { bucket: Bucket; items: DataItem[]; classItems: DataItem[] }[];
}

/** Batches as tensors for training: the uint8 -> float conversion runs natively, in the prefetch pipeline. */
export function createBatchStream(dataset: Dataset, options: BatchOptions = {}): BatchStream<Batch> {
  return createStream(dataset, options, {
    async finish(info) {
      const { shape } = info;
      const bytes = tensorFrom(info.hwc, [shape[0], shape[2], shape[3], 3], "uint8");
      try {
        return { ...info, pixels: await native().data.pixelsToTensor(bytes) };
      } finally {
        bytes.dispose();
      }
    },
    discard: (batch) => batch.pixels.dispose(),
  });
}

/** Batches as typed arrays, converted in JS (no native addon needed). */
export function createRawBatchStream(dataset: Dataset, options: BatchOptions = {}): BatchStream<RawBatch> {
  return createStream(dataset, options, {
    async finish(info) {
      const [n, , h, w] = info.shape;
      const data = new Float32Array(n * 3 * h * w);
      for (let k = 0; k < n; k++)
        hwcToChw(info.hwc.subarray(k * h * w * 3, (k + 1) * h * w * 3), data, k * 3 * h * w, h * w);
      return { ...info, data };
    },
  });
}

interface Finisher<T> {
  /** Turns decoded bytes into the batch handed out; runs inside the prefetch window. */
  finish(info: BatchInfo): Promise<T>;
  /** Frees a prefetched batch the consumer never took. */
  discard?(batch: T): void;
}

/** Turns planned batches into the batches a stream hands out. One is made per iteration (it may keep state). */
export interface BatchLoader<T> {
  /** Loads one planned batch; undefined when none of its examples could be loaded. */
  load(planned: PlannedBatch, position: StreamPosition, next: StreamPosition): Promise<T | undefined>;
  /** Frees a prefetched batch the consumer never took. */
  discard?(batch: T): void;
}

function createStream<T>(dataset: Dataset, options: BatchOptions, finisher: Finisher<T>): BatchStream<T> {
  return createPlannedStream(dataset, options, (planner) => {
    const limiter = new Limiter(options.concurrency ?? 4);
    const failed = new Set<number>();
    const background = parseBackground(options.background);
    return {
      load: (planned, position, next) =>
        loadBatch(dataset, planner, options, planned, position, next, limiter, failed, background).then((info) =>
          info ? finisher.finish(info) : undefined,
        ),
      discard: finisher.discard,
    };
  });
}

/**
 * A stream over the epoch plan with any loader: the ordering, prefetch, epochs and
 * resumable positions of createBatchStream (the latent cache streams through this).
 */
export function createPlannedStream<T>(
  dataset: Dataset,
  options: BatchOptions,
  makeLoader: (planner: EpochPlanner) => BatchLoader<T>,
): BatchStream<T> {
  const planner = new EpochPlanner(dataset, options);
  validate(options);
  const start = planner.normalise(options.position ?? { epoch: 0, index: 0 });
  return {
    buckets: planner.buckets,
    bucketStats: planner.stats(),
    batchesPerEpoch: planner.batchesPerEpoch,
    examplesPerEpoch: planner.examplesPerEpoch,
    epochPlan: (epoch) =>
      planner.epoch(epoch).map((b) => ({
        bucket: planner.buckets[b.bucket]!,
        items: b.entries.map((i) => dataset.items[i]!),
        classItems: b.classEntries.map((i) => dataset.items[i]!),
      })),
    [Symbol.asyncIterator]: () => run(planner, options, start, makeLoader(planner)),
  };
}

function validate(options: BatchOptions): void {
  const p = options.captionDropout ?? 0;
  if (!(p >= 0 && p <= 1)) throw new RangeError(`captionDropout must be in [0, 1], got ${p}`);
  for (const [name, value] of [
    ["prefetch", options.prefetch],
    ["concurrency", options.concurrency],
  ] as const) {
    if (value !== undefined && !(Number.isInteger(value) && value >= 1)) {
      throw new RangeError(`${name} must be an integer >= 1, got ${value}`);
    }
  }
  if (options.epochs !== undefined && !(Number.isInteger(options.epochs) && options.epochs >= 0)) {
    throw new RangeError(`epochs must be a non-negative integer, got ${options.epochs}`);
  }
  if (options.crop !== undefined && options.crop !== "center" && options.crop !== "random") {
    throw new RangeError(`crop must be "center" or "random", got ${JSON.stringify(options.crop)}`);
  }
  parseBackground(options.background);
}

/** A FIFO semaphore: earlier batches' images are decoded first. */
export class Limiter {
  private active = 0;
  private readonly waiting: (() => void)[] = [];
  constructor(private readonly limit: number) {}
  async run<T>(task: () => Promise<T>): Promise<T> {
    if (this.active >= this.limit) await new Promise<void>((resolve) => this.waiting.push(resolve));
    this.active++;
    try {
      return await task();
    } finally {
      this.active--;
      this.waiting.shift()?.();
    }
  }
}

async function* run<T>(
  planner: EpochPlanner,
  options: BatchOptions,
  start: StreamPosition,
  loader: BatchLoader<T>,
): AsyncGenerator<T> {
  const prefetch = options.prefetch ?? 2;
  const endEpoch = options.epochs ?? Infinity;
  let cursor: StreamPosition = { ...start };
  const pending: Promise<{ batch?: T; error?: unknown }>[] = [];

  const schedule = (): void => {
    while (pending.length < prefetch && cursor.epoch < endEpoch) {
      const position = cursor;
      const next = planner.normalise({ epoch: cursor.epoch, index: cursor.index + 1 });
      const global = planner.epoch(position.epoch)[position.index]!;
      const planned = options.shard ? shardBatch(global, options.shard) : global;
      pending.push(
        (planned ? loader.load(planned, position, next) : Promise.resolve(undefined)).then(
          (batch) => ({ batch }),
          (error: unknown) => ({ error }),
        ),
      );
      cursor = next;
    }
  };

  try {
    schedule();
    while (pending.length > 0) {
      if (options.signal?.aborted) throw abortError();
      const settled = await pending.shift()!;
      if (settled.error !== undefined) throw settled.error;
      schedule(); // keep `prefetch` batches in flight while the consumer works on this one
      if (settled.batch !== undefined) yield settled.batch;
    }
  } finally {
    // The consumer stopped early (or failed): free what was loaded ahead for it.
    for (const p of pending.splice(0)) {
      void p.then((settled) => settled.batch !== undefined && loader.discard?.(settled.batch));
    }
  }
}

/** One example of a planned batch: the item, its caption for this position, and how it is cut. */
/** Decodes one planned batch; images that fail are reported and left out. Undefined when none decoded. */
async function loadBatch(
  dataset: Dataset,
  planner: EpochPlanner,
  options: BatchOptions,
  planned: PlannedBatch,
  position: StreamPosition,
  next: StreamPosition,
  limiter: Limiter,
  failed: Set<number>,
  background: { r: number; g: number; b: number },
): Promise<BatchInfo | undefined> {
  const bucket = planner.buckets[planned.bucket]!;
  const examples = planExamples(dataset, planner, options, planned, position);

  const stride = bucket.width * bucket.height * 3;
  const hwc = new Uint8Array(examples.length * stride);
  const ok = await Promise.all(
    examples.map((example, slot) =>
      failed.has(example.index)
        ? Promise.resolve(false)
        : limiter
            .run(() =>
              renderImage({
                source: example.item.source,
                bucket,
                fit: example.fit,
                left: example.left,
                top: example.top,
                flip: example.flip,
                background,
                kernel: options.kernel ?? "lanczos3",
                maxPixels: dataset.spec.maxPixels ?? DATA_DEFAULTS.maxPixels,
              }),
            )
            .then(
              (bytes) => {
                hwc.set(bytes, slot * stride);
                return true;
              },
              (error: unknown) => {
                reportSkipped(
                  dataset,
                  options,
                  failed,
                  example,
                  `the image failed to decode during training and is skipped: ${(error as Error).message}`,
                );
                return false;
              },
            ),
    ),
  );
  let keep = examples.map((_, slot) => ok[slot]!);
  if (planned.classEntries.length > 0) keep = balancePairs(keep, planned.entries.length);
  const kept = examples.filter((_, slot) => keep[slot]);
  if (kept.length === 0) return undefined;
  let out = hwc;
  if (kept.length < examples.length) {
    out = new Uint8Array(kept.length * stride);
    let k = 0;
    examples.forEach((_, slot) => {
      if (keep[slot]) out.set(hwc.subarray(slot * stride, (slot + 1) * stride), stride * k++);
    });
  }
  return {
    hwc: out,
    shape: [kept.length, 3, bucket.height, bucket.width],
    ...describeExamples(kept, planned),
    bucket,
    position,
    next,
  };
}
