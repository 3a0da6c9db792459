// Aspect-ratio buckets with kohya sd-scripts semantics (make_bucket_resolutions,
// BucketManager.select_bucket): resolutions of about one target area in steps of
// 64 between a min and max side; an image goes to the bucket nearest in aspect
// ratio, is scaled to cover it and cropped to it, so no subject is cut away by
// a square crop.

export interface BucketOptions {
  /** Target pixel area (default resolution²). */
  area?: number;
  /** Smallest bucket side (default 256). */
  minSide?: number;
  /** Largest bucket side (default 1024). */
  maxSide?: number;
  /** Sides are multiples of this (default 64: the VAE's 8 times the UNet's 8). */
  step?: number;
}

export interface Bucket {
  width: number;
  height: number;
}

export function resolveBucketOptions(resolution: number, options: BucketOptions = {}): Required<BucketOptions> {
  const step = options.step ?? 64;
  const resolved = {
    area: options.area ?? resolution * resolution,
    minSide: options.minSide ?? 256,
    maxSide: options.maxSide ?? 1024,
    step,
  };
  const { area, minSide, maxSide } = resolved;
  if (!(Number.isInteger(step) && step >= 8)) throw new RangeError(`buckets.step must be an integer >= 8, got ${step}`);
  if (!(minSide > 0 && minSide <= maxSide)) {
    throw new RangeError(`buckets.minSide (${minSide}) must be positive and at most maxSide (${maxSide})`);
  }
  if (minSide % step !== 0 || maxSide % step !== 0) {
    throw new RangeError(`buckets.minSide (${minSide}) and maxSide (${maxSide}) must be multiples of step (${step})`);
  }
  if (!(area >= step * step)) throw new RangeError(`buckets.area (${area}) must be at least step² (${step * step})`);
  return resolved;
}

/** kohya make_bucket_resolutions: the square bucket plus (w, h) and (h, w) for each w, sorted by (w, h). */
export function makeBuckets(options: Required<BucketOptions>): Bucket[] {
  const { area, minSide, maxSide, step } = options;
  const seen = new Map<string, Bucket>();
  const add = (width: number, height: number): void => {
    seen.set(`${width}x${height}`, { width, height });
  };
  const square = Math.floor(Math.sqrt(area) / step) * step;
  add(square, square);
  for (let width = minSide; width <= maxSide; width += step) {
    const height = Math.min(maxSide, Math.floor(Math.floor(area / width) / step) * step);
    if (height >= minSide) {
      add(width, height);
      add(height, width);
    }
  }
  return [...seen.values()].sort((a, b) => a.width - b.width || a.height - b.height);
}

/** Index of the bucket for an image: its own size if that is a bucket, else the nearest aspect ratio (first on ties). */
export function selectBucket(width: number, height: number, buckets: readonly Bucket[]): number {
  const exact = buckets.findIndex((b) => b.width === width && b.height === height);
  if (exact >= 0) return exact;
  const aspect = width / height;
  let best = 0;
  let bestError = Infinity;
  buckets.forEach((b, i) => {
    const error = Math.abs(b.width / b.height - aspect);
    if (error < bestError) {
      best = i;
      bestError = error;
    }
  });
  return best;
}

export interface Fit {
  /** Size the image is resized to; covers the bucket. */
  resizedWidth: number;
  resizedHeight: number;
}

/** kohya: scale so the bucket is covered, matching the side that is relatively shorter; round half up. */
export function fitToBucket(width: number, height: number, bucket: Bucket): Fit {
  const scale = width / height > bucket.width / bucket.height ? bucket.height / height : bucket.width / width;
  return {
    resizedWidth: Math.max(bucket.width, Math.floor(width * scale + 0.5)),
    resizedHeight: Math.max(bucket.height, Math.floor(height * scale + 0.5)),
  };
}

/** diffusers/torchvision Resize(size): the shorter side becomes `size`, the longer is truncated. */
export function fitShortSide(width: number, height: number, size: number): Fit {
  if (width <= height)
    return { resizedWidth: size, resizedHeight: Math.max(size, Math.trunc((size * height) / width)) };
  return { resizedWidth: Math.max(size, Math.trunc((size * width) / height)), resizedHeight: size };
}

/** torchvision CenterCrop offset: Python's round(), which rounds half to even. */
export function centerOffsetRoundHalfEven(extra: number): number {
  const half = extra / 2;
  const floor = Math.floor(half);
  if (half - floor !== 0.5) return Math.round(half);
  return floor % 2 === 0 ? floor : floor + 1;
}

export interface BucketStat {
  width: number;
  height: number;
  aspect: number;
  /** Distinct images in the bucket. */
  images: number;
  /** Examples per epoch (images times repeats). */
  examples: number;
}

/** Per-bucket counts, in bucket order, empty buckets left out. */
export function bucketStats(
  assignments: readonly number[],
  repeats: readonly number[],
  buckets: readonly Bucket[],
): BucketStat[] {
  const images = new Array<number>(buckets.length).fill(0);
  const examples = new Array<number>(buckets.length).fill(0);
  assignments.forEach((b, i) => {
    images[b]!++;
    examples[b]! += repeats[i] ?? 1;
  });
  return buckets
    .map((b, i) => ({ ...b, aspect: b.width / b.height, images: images[i]!, examples: examples[i]! }))
    .filter((s) => s.images > 0);
}
