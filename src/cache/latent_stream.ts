// The batch stream over cached latents: the same plan, order, captions, prefetch
// and resumable positions as createBatchStream (it runs through the same
// planner), but each example is read from the latent cache instead of decoded
// and encoded. A fully cached stream opens no image and needs no VAE.
import type { Generator, Tensor } from "../native/index.js";
import { native } from "../native/index.js";
import type { VAE } from "../models/vae.js";
import { tensorFrom } from "../tensor.js";
import { createPlannedStream, type BatchInfo, type BatchOptions, type BatchStream } from "../data/batches.js";
import { balancePairs, describeExamples, planExamples, reportSkipped } from "../data/examples.js";
import type { Dataset } from "../data/types.js";
import { checkCacheable, latentOf, type LatentCache, type PlannedLatent } from "./latent_cache.js";
import type { Entry } from "./store.js";
import { typedView } from "./store.js";
import type { TextEmbeddingCache } from "./text_cache.js";

export interface LatentBatch extends Omit<BatchInfo, "hwc" | "shape"> {
  /** The examples' posterior means, [B, C, h, w] in the cache's dtype (unscaled). The consumer disposes it. */
  latentMean: Tensor;
  /** Their standard deviations exp(0.5 * logvar), [B, C, h, w]. The consumer disposes it. */
  latentStd: Tensor;
  /** [B, C, h, w]. */
  shape: [number, number, number, number];
  /** The VAE's scaling_factor: training latents are sample * scalingFactor. */
  scalingFactor: number;
  /** The captions' text-encoder outputs [B, L, D], when a text cache was given. The consumer disposes it. */
  textEmbeddings?: Tensor;
}

export interface LatentStreamSources {
  latents: LatentCache;
  /** Adds textEmbeddings to each batch (every caption must be cached: see trainingCaptions()). */
  text?: TextEmbeddingCache;
  /**
   * Computes latents found missing or corrupt while streaming (stored for next time). A function
   * is called only then, so the VAE is loaded only if needed. Without it such a batch is an error.
   */
  vae?: VAE | (() => Promise<VAE>);
}

/**
 * Batches of cached latents for `dataset` and `options` (the options of the pixel stream;
 * crop "random" is refused). Run `latents.missing()` / `latents.ensure()` first.
 */
export function createLatentBatchStream(
  dataset: Dataset,
  options: BatchOptions,
  sources: LatentStreamSources,
): BatchStream<LatentBatch> {
  checkCacheable(options);
  const cache = sources.latents;
  return createPlannedStream(dataset, options, (planner) => {
    const failed = new Set<number>();
    let refreshed: Promise<void> | undefined;
    let vae: Promise<VAE> | undefined;
    const getVAE = (): Promise<VAE> => {
      const source = sources.vae!;
      vae ??= typeof source === "function" ? source() : Promise.resolve(source);
      return vae;
    };
    return {
      async load(planned, position, next) {
        await (refreshed ??= cache.refresh());
        const bucket = planner.buckets[planned.bucket]!;
        const examples = planExamples(dataset, planner, options, planned, position);
        const latents = examples.map((e) => latentOf(cache, e, bucket, options));
        const usable = examples.map((e) => {
          const reason = cache.failure(e.item.key);
          if (reason) reportSkipped(dataset, options, failed, e, reason);
          return !reason && !failed.has(e.index);
        });
        const entries = await cache.read(latents.map((l, i) => (usable[i] ? l : undefined)));
        const misses = latents.filter((_, i) => usable[i] && !entries[i]);
        if (misses.length > 0) {
          if (!sources.vae) throw notCached(misses, cache);
          const { failed: bad } = await cache.compute(dataset, options, misses, { vae: await getVAE() });
          for (const issue of bad) {
            const i = examples.findIndex((e) => e.item.name === issue.file);
            if (i >= 0) failed.add(examples[i]!.index);
          }
          const again = await cache.read(latents.map((l, i) => (usable[i] && !entries[i] ? l : undefined)));
          again.forEach((entry, i) => {
            if (entry) entries[i] = entry;
            if (usable[i] && !entries[i] && !failed.has(examples[i]!.index)) throw notCached([latents[i]!], cache);
          });
        }
        let keep = entries.map((e) => e !== undefined);
        if (planned.classEntries.length > 0) keep = balancePairs(keep, planned.entries.length);
        const kept = examples.filter((_, i) => keep[i]);
        if (kept.length === 0) return undefined;
        const keptEntries = entries.filter((_, i) => keep[i]) as Entry[];
        const first = keptEntries[0]!.get("mean")!;
        const shape = [kept.length, ...first.shape] as [number, number, number, number];
        const latentMean = stack(keptEntries, "mean", shape);
        const latentStd = stack(keptEntries, "std", shape);
        const batch: LatentBatch = {
          ...describeExamples(kept, planned),
          latentMean,
          latentStd,
          shape,
          scalingFactor: cache.scalingFactor,
          bucket,
          position,
          next,
        };
        if (sources.text) {
          try {
            batch.textEmbeddings = await sources.text.get(batch.captions);
          } catch (error) {
            latentMean.dispose();
            latentStd.dispose();
            throw error;
          }
        }
        return batch;
      },
      discard(batch) {
        batch.latentMean.dispose();
        batch.latentStd.dispose();
        batch.textEmbeddings?.dispose();
      },
    };
  });
}

export interface SampleLatentsOptions {
  /**
   * "sample" (default): mean + std * noise, as diffusers' latent_dist.sample() (fresh noise each
   * step); "mean": the mode, as kohya's cached latents.
   */
  mode?: "sample" | "mean";
  /** Draws the noise (standard normal, float32, then cast to the latents' dtype, as VAE.sample). */
  generator?: Generator;
  /** Or the noise itself, [B, C, h, w]. */
  noise?: Tensor;
  /** Multiply by the batch's scalingFactor (default true: the UNet's latents). */
  scaled?: boolean;
}

/**
 * Training latents from a cached batch: what `VAE.sample(images, {noise, scaled})`
 * returns for the same images and noise, bit for bit, without the VAE.
 */
export async function sampleLatents(
  batch: Pick<LatentBatch, "latentMean" | "latentStd" | "scalingFactor">,
  options: SampleLatentsOptions = {},
): Promise<Tensor> {
  const mode = options.mode ?? "sample";
  const scale = options.scaled === false ? undefined : batch.scalingFactor;
  if (mode === "mean") return native().data.sampleLatents(batch.latentMean, { scale });
  if (mode !== "sample") throw new RangeError(`sampleLatents: mode must be "sample" or "mean", got "${String(mode)}"`);
  if (!options.noise && !options.generator) {
    throw new TypeError('sampleLatents: mode "sample" needs a generator (or the noise)');
  }
  const noise = options.noise ?? options.generator!.randn(batch.latentMean.shape);
  try {
    return await native().data.sampleLatents(batch.latentMean, { std: batch.latentStd, noise, scale });
  } finally {
    if (!options.noise) noise.dispose();
  }
}

/** Entries' `part` bytes side by side as one [B, ...] tensor. */
function stack(entries: Entry[], part: string, shape: number[]): Tensor {
  const parts = entries.map((e) => e.get(part)!);
  const per = parts[0]!.bytes.byteLength;
  const out = new Uint8Array(per * parts.length);
  parts.forEach((p, i) => out.set(p.bytes, i * per));
  return tensorFrom(typedView(out, parts[0]!.dtype), shape, parts[0]!.dtype);
}

function notCached(misses: PlannedLatent[], cache: LatentCache): Error {
  const names = misses
    .slice(0, 3)
    .map((m) => `${m.item.name} (${m.bucket.width}x${m.bucket.height}${m.flip ? ", flipped" : ""})`);
  return new Error(
    `latent cache ${cache.store.root}: ${misses.length} latent(s) of this batch are not cached: ${names.join(", ")}` +
      `${misses.length > 3 ? ", ..." : ""}. Run LatentCache.ensure() with the same dataset and batch options ` +
      "before streaming, or give the stream a VAE to compute them.",
  );
}
