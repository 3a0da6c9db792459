// The text-embedding cache: the text encoder's last_hidden_state for each
// distinct training caption, so a frozen text encoder is run once per caption
// instead of once per step (and need not be loaded at all when all are cached).
//
// Keyed by the caption text after caption processing, in a namespace of the
// format version, the text encoder's identity (config + weight content), the
// tokenizer's files, the dtype and clip skip. Caption dropout only adds the
// empty caption, so it is cached; tag shuffling makes a new caption every step,
// so it is refused (as kohya refuses cache_text_encoder_outputs with
// shuffle_caption). Only valid while the text encoder is frozen.
import { existsSync } from "node:fs";
import { mkdir } from "node:fs/promises";
import { join } from "node:path";

import { writeFileAtomic } from "../io/atomic.js";
import type { ProgressEvent, Tensor } from "../native/index.js";
import { readJsonFile } from "../models/files.js";
import { parseClipTextEncoderConfig } from "../models/clip_config.js";
import type { ModelDType, TextEncoder } from "../models/text_encoder.js";
import type { ClipTokenizer } from "../text/clip_tokenizer.js";
import { tensorFrom } from "../tensor.js";
import type { BatchOptions } from "../data/batches.js";
import { abortError } from "../data/files.js";
import type { Dataset } from "../data/types.js";
import { resolveCacheDir, warner } from "../io/cache_dir.js";
import { fingerprintModel, fingerprintTokenizer, sha256Hex, type ModelFingerprint } from "./fingerprint.js";
import { CACHE_FORMAT, ShardStore, tensorBytes, typedView, type Entry, type StoreLimits } from "./store.js";

export interface TextCacheOptions {
  /** The cache folder (default: resolveCacheDir()). */
  dir?: string;
  /** The text encoder's folder (transformers CLIPTextModel: config.json + weights). */
  textEncoder: string;
  /** The tokenizer's folder. */
  tokenizer: string;
  /** Weight variant the text encoder is loaded with. */
  variant?: string;
  /** The dtype the text encoder runs in (default float32). */
  dtype?: ModelDType;
  /** Use the output of an earlier layer (TextEncoder.forward's clipSkip; default 0). */
  clipSkip?: number;
  onWarning?: (message: string) => void;
  limits?: StoreLimits;
}

export interface TextEnsureOptions {
  /** The text encoder the cache was opened for. */
  textEncoder: TextEncoder;
  /** The tokenizer the cache was opened for. */
  tokenizer: ClipTokenizer;
  /** Captions encoded per call (default 16). */
  batchSize?: number;
  /** Called after each group ("cache.text", step = captions done). */
  onProgress?: (event: ProgressEvent) => void;
  signal?: AbortSignal;
}

export class TextEmbeddingCache {
  private constructor(
    readonly dir: string,
    readonly namespace: string,
    readonly textEncoder: ModelFingerprint,
    readonly tokenizer: string,
    readonly dtype: ModelDType,
    readonly clipSkip: number,
    private readonly variant: string | undefined,
    private readonly tokenizerDir: string,
    /** @internal */
    readonly store: ShardStore,
  ) {}

  /** Opens (or creates) the cache for one text encoder + tokenizer + clip skip. Loads no model. */
  static async open(options: TextCacheOptions): Promise<TextEmbeddingCache> {
    const dir = resolveCacheDir(options.dir);
    const dtype = options.dtype ?? "float32";
    const clipSkip = options.clipSkip ?? 0;
    const configPath = join(options.textEncoder, "config.json");
    const { config } = parseClipTextEncoderConfig(readJsonFile(configPath), configPath);
    if (!(Number.isInteger(clipSkip) && clipSkip >= 0 && clipSkip <= config.num_hidden_layers)) {
      throw new RangeError(
        `TextEmbeddingCache.open: clipSkip ${clipSkip} must be an integer in [0, ${config.num_hidden_layers}]`,
      );
    }
    await mkdir(dir, { recursive: true });
    const textEncoder = await fingerprintModel(options.textEncoder, { variant: options.variant, memoDir: dir });
    const tokenizer = await fingerprintTokenizer(options.tokenizer);
    const descriptor = {
      format: CACHE_FORMAT,
      kind: "text",
      output: "last_hidden_state",
      textEncoder: textEncoder.id,
      tokenizer,
      dtype,
      clipSkip,
    };
    const namespace = sha256Hex(JSON.stringify(descriptor)).slice(0, 24);
    const root = join(dir, "text", namespace);
    await mkdir(root, { recursive: true });
    const info = join(root, "namespace.json");
    if (!existsSync(info))
      await writeFileAtomic(
        info,
        JSON.stringify(
          { ...descriptor, textEncoderDir: options.textEncoder, tokenizerDir: options.tokenizer },
          null,
          2,
        ),
      ).catch(() => undefined); // informational only: a read-only cache still works
    const store = new ShardStore(root, "text", namespace, descriptor, warner(options.onWarning), options.limits);
    await store.refresh();
    return new TextEmbeddingCache(
      dir,
      namespace,
      textEncoder,
      tokenizer,
      dtype,
      clipSkip,
      options.variant,
      options.tokenizer,
      store,
    );
  }

  /** The distinct captions of `captions` that are not cached. */
  async missing(captions: Iterable<string>): Promise<string[]> {
    await this.store.refresh();
    return [...new Set(captions)].filter((c) => !this.store.has(captionKey(c)));
  }

  /** Encodes and stores every caption not cached yet. */
  async ensure(captions: Iterable<string>, run: TextEnsureOptions): Promise<{ computed: number; cached: number }> {
    const distinct = [...new Set(captions)];
    const todo = await this.missing(distinct);
    if (todo.length > 0) await this.checkModels(run);
    const batchSize = run.batchSize ?? 16;
    if (!(Number.isInteger(batchSize) && batchSize >= 1)) {
      throw new RangeError(`ensure: batchSize must be an integer >= 1, got ${batchSize}`);
    }
    try {
      for (let start = 0; start < todo.length; start += batchSize) {
        if (run.signal?.aborted) throw abortError();
        const chunk = todo.slice(start, start + batchSize);
        const ids = run.tokenizer.encode(chunk); // int64 [n, 77]
        let out;
        try {
          out = await run.textEncoder.forward(ids, { clipSkip: this.clipSkip });
        } finally {
          ids.dispose();
        }
        try {
          const hidden = out.lastHiddenState; // [n, L, D]
          const bytes = tensorBytes(hidden);
          const per = bytes.byteLength / chunk.length;
          for (let i = 0; i < chunk.length; i++) {
            const entry: Entry = new Map([
              [
                "hidden",
                { dtype: hidden.dtype, shape: hidden.shape.slice(1), bytes: bytes.slice(i * per, (i + 1) * per) },
              ],
            ]);
            await this.store.put(captionKey(chunk[i]!), entry, { caption: chunk[i] });
          }
        } finally {
          out.lastHiddenState.dispose();
          out.pooledOutput.dispose();
          for (const t of out.hiddenStates ?? []) t.dispose();
        }
        run.onProgress?.({ phase: "cache.text", step: Math.min(start + batchSize, todo.length), total: todo.length });
      }
    } finally {
      await this.store.flush();
    }
    return { computed: todo.length, cached: distinct.length - todo.length };
  }

  /** The cached embeddings of `captions` (in order, repeats allowed) as one [B, L, D] tensor. */
  async get(captions: readonly string[]): Promise<Tensor> {
    if (captions.length === 0) throw new RangeError("TextEmbeddingCache.get: no captions");
    const entries = await Promise.all(captions.map((c) => this.store.read(captionKey(c))));
    const missing = captions.filter((_, i) => !entries[i]);
    if (missing.length > 0) {
      throw new Error(
        `text cache ${this.store.root}: ${missing.length} caption(s) are not cached (first: ${JSON.stringify(missing[0])}). ` +
          "Run TextEmbeddingCache.ensure(trainingCaptions(dataset, options), ...) first.",
      );
    }
    const parts = entries.map((e) => e!.get("hidden")!);
    const { shape, dtype } = parts[0]!;
    const per = parts[0]!.bytes.byteLength;
    const out = new Uint8Array(per * parts.length);
    parts.forEach((p, i) => {
      if (p.shape.join(",") !== shape.join(",") || p.dtype !== dtype) {
        throw new Error(`text cache ${this.store.root}: cached embeddings of different shapes or dtypes`);
      }
      out.set(p.bytes, i * per);
    });
    return tensorFrom(typedView(out, dtype), [parts.length, ...shape], dtype);
  }

  refresh(): Promise<void> {
    return this.store.refresh();
  }

  close(): Promise<void> {
    return this.store.close();
  }

  private async checkModels(run: TextEnsureOptions): Promise<void> {
    const te = run.textEncoder;
    if (te.dtype !== this.dtype) {
      throw new Error(
        `TextEmbeddingCache: the text encoder runs in ${te.dtype} but the cache was opened for ${this.dtype}`,
      );
    }
    if (!te.path) {
      throw new Error(
        "TextEmbeddingCache: the text encoder was built in memory (no folder), so the cache cannot tell which model it is",
      );
    }
    const fp = await fingerprintModel(te.path, { variant: this.variant, memoDir: this.dir });
    if (fp.id !== this.textEncoder.id) {
      throw new Error(
        `TextEmbeddingCache: the text encoder loaded from ${te.path} is not the one the cache was opened for (${this.textEncoder.dir})`,
      );
    }
    if ((await fingerprintTokenizer(run.tokenizer.dir)) !== this.tokenizer) {
      throw new Error(
        `TextEmbeddingCache: the tokenizer from ${run.tokenizer.dir} is not the one the cache was opened for (${this.tokenizerDir})`,
      );
    }
  }
}

/** The entry key of a caption. */
export function captionKey(caption: string): string {
  return sha256Hex(`caption\0${caption}`).slice(0, 32);
}

/**
 * Every caption streaming `dataset` with `options` can produce: each item's
 * caption, plus "" when caption dropout is on. Tag shuffling is refused: it
 * makes a new caption for nearly every example of every epoch.
 */
export function trainingCaptions(dataset: Dataset, options: BatchOptions = {}): string[] {
  if (options.shuffleTags) {
    throw new RangeError(
      "text embeddings cannot be cached with shuffleTags: shuffled tags make a new caption almost every step " +
        "(kohya refuses cache_text_encoder_outputs with shuffle_caption too). Turn one of them off.",
    );
  }
  const out = new Set(dataset.items.map((i) => i.caption));
  if ((options.captionDropout ?? 0) > 0) out.add("");
  return [...out];
}
