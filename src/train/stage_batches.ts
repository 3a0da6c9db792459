// A stage's micro-batches, ready for the trainer: decoded pixels (encoded by the VAE
// inside the trainer), or, with cache_latents, cached VAE posteriors (the VAE is
// loaded only to fill the cache) and optionally cached text embeddings.
import { join } from "node:path";

import { createBatchStream, type BatchInfo, type BatchOptions, type Dataset } from "../data/index.js";
import { tensorFrom } from "../tensor.js";
import {
  captionKey,
  createLatentBatchStream,
  LatentCache,
  TextEmbeddingCache,
  trainingCaptions,
  type EnsureOptions,
} from "../cache/index.js";
import type { StageContext } from "./stage.js";
import type { StageModels } from "./stage_models.js";
import type { TrainBatch } from "./trainer.js";

/** One micro-batch ready for the trainer, whatever stream it came from. */
export interface ReadyBatch {
  input: TrainBatch;
  examples: number;
  next: { epoch: number; index: number };
  dispose(): void;
}

export type BatchSource = (() => Promise<ReadyBatch>) & { close(): Promise<void> };

const priorRows = (roles: readonly string[]): number => roles.filter((r) => r === "class").length;

/**
 * Data parallel: where this rank's rows sit in the global batch (the trainer draws noise for the
 * global batch and keeps them), and the weight that makes the ranks' average the global mean.
 */
function shardFields(
  b: Pick<BatchInfo, "globalRows" | "globalBatch">,
  worldSize: number,
): Pick<TrainBatch, "globalRows" | "globalBatch" | "lossWeight"> {
  if (!b.globalRows || !b.globalBatch) return {};
  return {
    globalRows: tensorFrom(
      BigInt64Array.from(b.globalRows, (r) => BigInt(r)),
      [b.globalRows.length],
      "int64",
    ),
    globalBatch: b.globalBatch,
    lossWeight: (b.globalRows.length * worldSize) / b.globalBatch,
  };
}

/** The stage's batches: pixels, or cached latents (see the file comment). */
export async function openBatches(
  dataset: Dataset,
  options: BatchOptions,
  models: StageModels,
  ctx: StageContext,
): Promise<BatchSource> {
  const iterator = ctx.stage.cache_latents
    ? await latentBatches(dataset, options, models, ctx)
    : pixelBatches(dataset, options, models, ctx.dp?.worldSize ?? 1);
  const next = async (): Promise<ReadyBatch> => {
    const r = await iterator.next();
    if (r.done) throw new Error(`stage "${ctx.stage.name}": the data stream ended early`);
    return r.value;
  };
  return Object.assign(next, { close: async () => void (await iterator.return?.()) });
}

/** Decoded images plus token ids. */
function pixelBatches(
  dataset: Dataset,
  options: BatchOptions,
  models: StageModels,
  worldSize: number,
): AsyncIterator<ReadyBatch> {
  const stream = createBatchStream(dataset, options)[Symbol.asyncIterator]();
  return {
    next: async () => {
      const r = await stream.next();
      if (r.done) return r;
      const b = r.value;
      const ids = models.tokenizer.encode(b.captions);
      const shard = shardFields(b, worldSize);
      return {
        done: false,
        value: {
          input: { pixels: b.pixels, inputIds: ids, priorRows: priorRows(b.roles), ...shard },
          examples: b.captions.length,
          next: b.next,
          dispose: () => {
            b.pixels.dispose();
            ids.dispose();
            shard.globalRows?.dispose();
          },
        },
      };
    },
    return: async () => {
      await stream.return?.(undefined);
      return { done: true, value: undefined };
    },
  };
}

/** Cached posteriors plus token ids or cached text embeddings; fills the caches first. */
async function latentBatches(
  dataset: Dataset,
  options: BatchOptions,
  models: StageModels,
  ctx: StageContext,
): Promise<AsyncIterator<ReadyBatch>> {
  const latents = await fillLatentCache(dataset, options, models, ctx);
  const text = ctx.stage.cache_text_embeddings ? await fillTextCache(dataset, options, models, ctx) : undefined;
  const stream = createLatentBatchStream(dataset, options, { latents, text, vae: () => models.ensureVae() })[
    Symbol.asyncIterator
  ]();
  return {
    next: async () => {
      const r = await stream.next();
      if (r.done) return r;
      const b = r.value;
      const ids = b.textEmbeddings ? undefined : models.tokenizer.encode(b.captions);
      const shard = shardFields(b, ctx.dp?.worldSize ?? 1);
      return {
        done: false,
        value: {
          input: {
            latentMean: b.latentMean,
            latentStd: b.latentStd,
            ...(b.textEmbeddings ? { encoderHiddenStates: b.textEmbeddings } : { inputIds: ids }),
            priorRows: priorRows(b.roles),
            ...shard,
          },
          examples: b.captions.length,
          next: b.next,
          dispose: () => {
            b.latentMean.dispose();
            b.latentStd.dispose();
            b.textEmbeddings?.dispose();
            ids?.dispose();
            shard.globalRows?.dispose();
          },
        },
      };
    },
    return: async () => {
      await stream.return?.(undefined);
      await latents.close();
      await text?.close();
      return { done: true, value: undefined };
    },
  };
}

async function fillLatentCache(
  dataset: Dataset,
  options: BatchOptions,
  models: StageModels,
  ctx: StageContext,
): Promise<LatentCache> {
  const latents = await LatentCache.open({
    dir: ctx.cacheDir,
    vae: join(ctx.base.modelDir, "vae"),
    variant: ctx.variant,
    dtype: ctx.placement.weightDtype,
  });
  if (ctx.dp) {
    // Data parallel: each rank encodes its share of the missing latents (split by key, so the
    // shares never depend on when a rank looked), then all wait until every share is written.
    const dp = ctx.dp;
    const mine = (await latents.missing(dataset, options)).filter((p) => dp.owns(p.key));
    if (mine.length > 0) await latents.compute(dataset, options, mine, await encodeOptions(models, ctx));
    await ctx.dp.barrier();
  } else if ((await latents.missing(dataset, options)).length > 0) {
    await latents.ensure(dataset, options, await encodeOptions(models, ctx));
  }
  return latents;
}

async function encodeOptions(models: StageModels, ctx: StageContext): Promise<EnsureOptions> {
  return {
    vae: await models.ensureVae(),
    signal: ctx.signal,
    onProgress: (e) => ctx.onProgress?.({ phase: "cache", stage: ctx.stage.name, step: e.step, total: e.total }),
  };
}

async function fillTextCache(
  dataset: Dataset,
  options: BatchOptions,
  models: StageModels,
  ctx: StageContext,
): Promise<TextEmbeddingCache> {
  if (ctx.base.loras.length) {
    throw new Error(
      `stage "${ctx.stage.name}": cache_text_embeddings cannot be used on top of an earlier stage's LoRA ` +
        "(the cache keys on the text encoder's files, which the fused LoRA changes); turn it off for this stage",
    );
  }
  const text = await TextEmbeddingCache.open({
    dir: ctx.cacheDir,
    textEncoder: join(ctx.base.modelDir, "text_encoder"),
    tokenizer: join(ctx.base.modelDir, "tokenizer"),
    dtype: ctx.placement.weightDtype,
  });
  const run = { textEncoder: models.textEncoder, tokenizer: models.tokenizer, signal: ctx.signal };
  if (ctx.dp) {
    // Data parallel: each rank encodes its share of the missing captions (by key, as latents).
    const dp = ctx.dp;
    const mine = (await text.missing(trainingCaptions(dataset, options))).filter((c) => dp.owns(captionKey(c)));
    if (mine.length > 0) await text.ensure(mine, run);
    await dp.barrier();
    await text.refresh();
  } else {
    await text.ensure(trainingCaptions(dataset, options), run);
  }
  return text;
}
