// `sdtune dataset check`: what a dataset holds and what is wrong with it, as data.
import { makeBuckets, resolveBucketOptions, selectBucket, type BucketOptions, type BucketStat } from "./buckets.js";
import { bucketStats } from "./buckets.js";
import { openDataset } from "./dataset.js";
import type { DatasetIssue, DatasetSpec, DatasetType, OpenOptions } from "./types.js";

export interface CheckOptions extends OpenOptions {
  /** Bucket target side: the histogram uses area resolution² (default 512). */
  resolution?: number;
  buckets?: BucketOptions;
}

export interface Range {
  min: number;
  median: number;
  max: number;
}

export interface CheckReport {
  path: string;
  type: DatasetType;
  split?: string;
  splits: string[];
  /** Usable images (class images included). */
  images: number;
  /** Examples per epoch (images times repeats, class images left out). */
  examples: number;
  classImages: number;
  classImagesNeeded: number;
  totalBytes: number;
  formats: Record<string, number>;
  width: Range;
  height: Range;
  megapixels: Range;
  buckets: { area: number; minSide: number; maxSide: number; step: number; histogram: BucketStat[] };
  /** Images with the same content hash. */
  duplicates: { key: string; files: string[] }[];
  /** Trainable images whose caption is empty. */
  emptyCaptions: number;
  skipped: number;
  warnings: number;
  issues: DatasetIssue[];
}

/** Opens the dataset with every image decoded once and summarises it. Throws DatasetError when nothing is usable. */
export async function checkDataset(spec: DatasetSpec, options: CheckOptions = {}): Promise<CheckReport> {
  const ds = await openDataset({ verify: "decode", ...spec }, options);
  const bucketOptions = resolveBucketOptions(options.resolution ?? 512, options.buckets);
  const buckets = makeBuckets(bucketOptions);
  const trainable = ds.items.filter((i) => i.role !== "class");
  const histogram = bucketStats(
    trainable.map((i) => selectBucket(i.width, i.height, buckets)),
    trainable.map((i) => i.repeats),
    buckets,
  );
  const byKey = new Map<string, string[]>();
  for (const item of ds.items) byKey.set(item.key, [...(byKey.get(item.key) ?? []), item.name]);
  const formats: Record<string, number> = {};
  for (const item of ds.items) formats[item.format] = (formats[item.format] ?? 0) + 1;
  return {
    path: ds.root,
    type: ds.type,
    split: ds.split,
    splits: ds.splits,
    images: ds.items.length,
    examples: trainable.reduce((sum, i) => sum + i.repeats, 0),
    classImages: ds.items.length - trainable.length,
    classImagesNeeded: ds.classImagesNeeded,
    totalBytes: ds.items.reduce((sum, i) => sum + i.byteLength, 0),
    formats,
    width: range(ds.items.map((i) => i.width)),
    height: range(ds.items.map((i) => i.height)),
    megapixels: range(ds.items.map((i) => (i.width * i.height) / 1e6)),
    buckets: { ...bucketOptions, histogram },
    duplicates: [...byKey].filter(([, files]) => files.length > 1).map(([key, files]) => ({ key, files })),
    emptyCaptions: trainable.filter((i) => i.caption.trim() === "").length,
    skipped: ds.report.filter((r) => r.skipped).length,
    warnings: ds.report.filter((r) => !r.skipped).length,
    issues: ds.report,
  };
}

function range(values: number[]): Range {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  const median = sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
  return { min: sorted[0]!, median, max: sorted[sorted.length - 1]! };
}
