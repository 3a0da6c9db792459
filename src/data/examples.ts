// Planning a batch's examples: where each image lands in its bucket (geometry, crops),
// which examples a batch keeps, and what is reported for those it skips.
import type { BatchInfo, BatchOptions } from "./batches.js";
import { centerOffsetRoundHalfEven, fitShortSide, fitToBucket, type Bucket, type Fit } from "./buckets.js";
import { processCaption } from "./caption-text.js";
import { EpochPlanner, type PlannedBatch, type StreamPosition } from "./plan.js";
import { keyedRng, RNG_PURPOSE, type Rng } from "./rng.js";
import { type DataItem, type Dataset, type DatasetIssue, type ItemRole } from "./types.js";

export interface PlannedExample {
  item: DataItem;
  /** Index into dataset.items. */
  index: number;
  role: ItemRole;
  caption: string;
  fit: Fit;
  left: number;
  top: number;
  flip: boolean;
  /** Its slot in the (global) batch: the key of its randomness, and its row there. */
  slot: number;
}

/** How `item` is resized and cut for `bucket`; without an rng: unflipped, centre crop. */
export function exampleGeometry(
  planner: EpochPlanner,
  options: BatchOptions,
  item: DataItem,
  bucket: Bucket,
  rng?: Rng,
): { fit: Fit; left: number; top: number; flip: boolean } {
  const fit =
    planner.mode === "bucket"
      ? fitToBucket(item.width, item.height, bucket)
      : fitShortSide(item.width, item.height, bucket.width);
  const extraX = fit.resizedWidth - bucket.width;
  const extraY = fit.resizedHeight - bucket.height;
  // Draw order is fixed: flip, then crop x, then crop y.
  const flip = options.flip && rng ? rng.float() < 0.5 : false;
  let left: number;
  let top: number;
  if (options.crop === "random" && rng) {
    left = rng.int(extraX + 1);
    top = rng.int(extraY + 1);
  } else if (planner.mode === "bucket") {
    left = Math.floor(extraX / 2); // kohya
    top = Math.floor(extraY / 2);
  } else {
    left = centerOffsetRoundHalfEven(extraX); // torchvision CenterCrop
    top = centerOffsetRoundHalfEven(extraY);
  }
  return { fit, left, top, flip };
}

/**
 * The examples of a planned batch at `position`: a pure function of the seed and the position.
 * `captions: false` skips caption processing (captions stay unprocessed) for planners that need only the cuts.
 */
export function planExamples(
  dataset: Dataset,
  planner: EpochPlanner,
  options: BatchOptions,
  planned: PlannedBatch,
  position: StreamPosition,
  captions = true,
): PlannedExample[] {
  const bucket = planner.buckets[planned.bucket]!;
  const seed = options.seed ?? 0;
  const slots = [...planned.entries, ...planned.classEntries];
  return slots.map((index, local) => {
    const slot = planned.slots?.[local] ?? local;
    const item = dataset.items[index]!;
    const rng = keyedRng(seed, RNG_PURPOSE.item, position.epoch, position.index, slot);
    const geometry = exampleGeometry(planner, options, item, bucket, rng);
    const caption =
      item.role === "class" || !captions
        ? item.caption
        : processCaption(
            item.caption,
            options,
            keyedRng(seed, RNG_PURPOSE.caption, position.epoch, position.index, slot),
          );
    return { item, index, role: item.role, caption, ...geometry, slot };
  });
}

/** What a batch of `kept` examples carries besides its pixels (or latents). */
export function describeExamples(
  kept: readonly PlannedExample[],
  planned?: PlannedBatch,
): Pick<BatchInfo, "captions" | "keys" | "names" | "roles" | "crops" | "globalRows" | "globalBatch"> {
  return {
    // A rank's share of a global batch (data parallel): where its rows sit there.
    ...(planned?.globalRows ? { globalRows: kept.map((e) => e.slot), globalBatch: planned.globalRows } : {}),
    captions: kept.map((e) => e.caption),
    keys: kept.map((e) => e.item.key),
    names: kept.map((e) => e.item.name),
    roles: kept.map((e) => e.role),
    crops: kept.map((e) => ({
      originalWidth: e.item.width,
      originalHeight: e.item.height,
      resizedWidth: e.fit.resizedWidth,
      resizedHeight: e.fit.resizedHeight,
      left: e.left,
      top: e.top,
      flipped: e.flip,
    })),
  };
}

/** Records an image that cannot be used (once per stream): in dataset.report and through onIssue. */
export function reportSkipped(
  dataset: Dataset,
  options: BatchOptions,
  failed: Set<number>,
  example: PlannedExample,
  reason: string,
): void {
  if (failed.has(example.index)) return;
  failed.add(example.index);
  const issue: DatasetIssue = { file: example.item.name, code: "decode-failed", reason, skipped: true };
  dataset.report.push(issue);
  options.onIssue?.(issue);
}

/** With prior preservation both halves must stay equal: drop surplus from the larger half. */
export function balancePairs(keep: boolean[], instances: number): boolean[] {
  const out = [...keep];
  const first = out.slice(0, instances).filter(Boolean).length;
  const second = out.slice(instances).filter(Boolean).length;
  let surplusFirst = first - Math.min(first, second);
  let surplusSecond = second - Math.min(first, second);
  for (let i = out.length - 1; i >= 0; i--) {
    if (!out[i]) continue;
    if (i >= instances && surplusSecond > 0) {
      out[i] = false;
      surplusSecond--;
    } else if (i < instances && surplusFirst > 0) {
      out[i] = false;
      surplusFirst--;
    }
  }
  return out;
}
