// The latent cache: each example's VAE posterior (mean and std), computed once
// and read back instead of decoding the image and running the encoder.
//
// What is stored: the distribution, not a draw. diffusers' training scripts take
// `latent_dist.sample() * scaling_factor` with fresh noise every step; kohya
// caches the mean (mode). Keeping mean and std serves both: sampleLatents()
// draws mean + std * noise from the trainer's generator (bit for bit what
// VAE.sample computes from the image), or returns the mean. std is stored
// rather than logvar so no exp() is recomputed. Both are kept in the VAE's
// output dtype: exactly what a fresh encode yields, half the size for bf16.
//
// The key of an entry: the image content (the item's sha256), the bucket, the
// resize, the crop box, the flip, the resize kernel and background (and, for a JPEG that
// the native road renders, that road: its pixels differ from sharp's by a level or two). The folder
// it lives in (its namespace) adds the VAE's identity (config + weight content),
// the dtype and the format version. Anything that changes misses; nothing is
// ever overwritten. Random crops make a new box every step, so they cannot be
// cached (kohya refuses them too). Flipped examples are cached as their own
// variant: a flipped latent is not the latent of the flipped image.
//
// Computing the latents lives in latent_encode.ts, planning them in latent_plan.ts.
import { existsSync } from "node:fs";
import { mkdir } from "node:fs/promises";
import { join } from "node:path";

import { writeFileAtomic } from "../io/atomic.js";
import type { DType } from "../native/index.js";
import { readJsonFile } from "../models/files.js";
import { parseVAEConfig } from "../models/config.js";
import type { ModelDType } from "../models/text_encoder.js";
import type { VAE } from "../models/vae.js";
import type { BatchOptions } from "../data/batches.js";
import type { Dataset, DatasetIssue } from "../data/types.js";
import { resolveCacheDir, warner } from "../io/cache_dir.js";
import { fingerprintModel, sha256Hex, type ModelFingerprint } from "./fingerprint.js";
import { computeLatents, type EnsureOptions } from "./latent_encode.js";
import { latentKey, planLatents, type PlannedLatent } from "./latent_plan.js";
import { CACHE_FORMAT, ShardStore, type Entry, type StoreLimits } from "./store.js";

export type { EnsureOptions } from "./latent_encode.js";
export { checkCacheable, latentOf, type PlannedLatent } from "./latent_plan.js";

export interface LatentCacheOptions {
  /** The cache folder (default: resolveCacheDir(): $SDTUNE_CACHE_DIR or ~/.cache/sdtune). */
  dir?: string;
  /** The VAE's folder (a diffusers vae/ with config.json and weights): its identity keys the cache. */
  vae: string;
  /** Weight variant the VAE is loaded with, e.g. "fp16". */
  variant?: string;
  /** The dtype the VAE runs in (default float32); the cache stores its outputs in it. */
  dtype?: ModelDType;
  /** Where warnings go (corrupt files); default: process.emitWarning. */
  onWarning?: (message: string) => void;
  /** Shard size limits (tests use small ones). */
  limits?: StoreLimits;
}

export interface EnsureResult {
  /** Latents computed now. */
  computed: number;
  /** Latents that were already cached. */
  cached: number;
  /** Images that could not be decoded (also appended to dataset.report); recorded, so later runs skip them. */
  failed: DatasetIssue[];
}

export class LatentCache {
  private constructor(
    readonly dir: string,
    /** The namespace folder's name: sha256 of the format, VAE identity and dtype. */
    readonly namespace: string,
    readonly vae: ModelFingerprint,
    readonly dtype: ModelDType,
    /** The VAE's scaling_factor (config.json): training latents are multiplied by it. */
    readonly scalingFactor: number,
    /** Image pixels per latent pixel. */
    readonly scaleFactor: number,
    readonly latentChannels: number,
    private readonly variant: string | undefined,
    /** @internal */
    readonly store: ShardStore,
  ) {}

  /** Opens (or creates) the cache for one VAE. Reads the VAE's config, never loads its weights. */
  static async open(options: LatentCacheOptions): Promise<LatentCache> {
    const dir = resolveCacheDir(options.dir);
    const dtype = options.dtype ?? "float32";
    if (!["float32", "float16", "bfloat16"].includes(dtype)) {
      throw new TypeError(`LatentCache.open: dtype "${dtype}" is not supported (float32, float16 or bfloat16)`);
    }
    await mkdir(dir, { recursive: true });
    const configPath = join(options.vae, "config.json");
    const config = parseVAEConfig(readJsonFile(configPath), configPath);
    const vae = await fingerprintModel(options.vae, { variant: options.variant, memoDir: dir });
    const descriptor = { format: CACHE_FORMAT, kind: "latents", vae: vae.id, dtype };
    const namespace = sha256Hex(JSON.stringify(descriptor)).slice(0, 24);
    const root = join(dir, "latents", namespace);
    await mkdir(root, { recursive: true });
    // For people and `sdtune cache info`: the shards' own metadata is what counts.
    const info = join(root, "namespace.json");
    if (!existsSync(info))
      await writeFileAtomic(
        info,
        JSON.stringify({ ...descriptor, vaeDir: options.vae, variant: options.variant ?? null }, null, 2),
      ).catch(() => undefined); // informational only: a read-only cache still works
    const store = new ShardStore(root, "latents", namespace, descriptor, warner(options.onWarning), options.limits);
    await store.refresh();
    return new LatentCache(
      dir,
      namespace,
      vae,
      dtype,
      config.scaling_factor,
      2 ** (config.block_out_channels.length - 1),
      config.latent_channels,
      options.variant,
      store,
    );
  }

  /**
   * Every latent that streaming `dataset` with `options` will read. With a
   * finite `epochs`, exactly those of epochs [position.epoch, epochs); without,
   * every variant that can occur (both flips when flip is on; class images in
   * every bucket that holds training images). Decodes nothing.
   */
  plan(dataset: Dataset, options: BatchOptions = {}): PlannedLatent[] {
    return planLatents(this, dataset, options);
  }

  /** The planned latents not cached yet (images recorded as undecodable excluded). Loads no model. */
  async missing(dataset: Dataset, options: BatchOptions = {}): Promise<PlannedLatent[]> {
    await this.store.refresh();
    return this.plan(dataset, options).filter((p) => !this.store.has(p.key) && !this.store.failure(p.item.key));
  }

  /**
   * Computes and stores every missing latent of the plan (see plan()). Call it
   * with a loaded VAE only when missing() is not empty: a fully cached run
   * never loads the VAE.
   */
  async ensure(dataset: Dataset, options: BatchOptions, run: EnsureOptions): Promise<EnsureResult> {
    const planned = this.plan(dataset, options);
    await this.store.refresh();
    const cached = planned.filter((p) => this.store.has(p.key)).length;
    const todo = planned.filter((p) => !this.store.has(p.key) && !this.store.failure(p.item.key));
    const result = await this.compute(dataset, options, todo, run);
    return { ...result, cached };
  }

  /** The cache key of an example (see the file comment for what it covers). */
  keyOf(example: Omit<PlannedLatent, "key">, options: BatchOptions): string {
    return latentKey(example, options);
  }

  /** @internal Renders and encodes `todo`, storing each latent; used by ensure() and by the stream on a miss. */
  async compute(
    dataset: Dataset,
    options: BatchOptions,
    todo: readonly PlannedLatent[],
    run: EnsureOptions,
  ): Promise<{ computed: number; failed: DatasetIssue[] }> {
    const failed: DatasetIssue[] = [];
    if (todo.length === 0) return { computed: 0, failed };
    await this.checkVAE(run.vae);
    const batchSize = run.batchSize ?? 4;
    if (!(Number.isInteger(batchSize) && batchSize >= 1)) {
      throw new RangeError(`ensure: batchSize must be an integer >= 1, got ${batchSize}`);
    }
    return computeLatents(this.store, dataset, options, todo, run);
  }

  /**
   * Reads cached latents ({mean, std}); undefined where missing, corrupt or not of the shape
   * `latents` expects (each such copy is warned about and treated as missing).
   */
  async read(latents: readonly (PlannedLatent | undefined)[]): Promise<(Entry | undefined)[]> {
    return Promise.all(latents.map((l) => (l ? this.store.read(l.key, (e) => this.shapeProblem(e, l)) : undefined)));
  }

  /** Why an entry is not a latent of this VAE for `latent`'s bucket, if it is not. */
  private shapeProblem(entry: Entry, latent: PlannedLatent): string | undefined {
    const f = this.scaleFactor;
    const want = [this.latentChannels, latent.bucket.height / f, latent.bucket.width / f];
    for (const name of ["mean", "std"]) {
      const p = entry.get(name);
      if (!p) return `it has no "${name}"`;
      if (p.shape.join(",") !== want.join(",") || p.dtype !== this.dtype) {
        return `"${name}" is ${p.dtype} [${p.shape.join(", ")}], not ${this.dtype} [${want.join(", ")}]`;
      }
    }
    return undefined;
  }

  /** Re-reads the shard index (picks up shards other runs wrote). */
  refresh(): Promise<void> {
    return this.store.refresh();
  }

  /** Why an item has no latents (recorded decode failure), if so. */
  failure(itemKey: string): string | undefined {
    return this.store.failure(itemKey);
  }

  /** Writes anything pending and closes open files (idempotent). */
  close(): Promise<void> {
    return this.store.close();
  }

  private async checkVAE(vae: VAE): Promise<void> {
    if (vae.disposed) throw new Error("LatentCache: the VAE is disposed");
    if (vae.dtype !== (this.dtype as DType)) {
      throw new Error(`LatentCache: the VAE runs in ${vae.dtype} but the cache was opened for ${this.dtype}`);
    }
    if (!vae.path)
      throw new Error("LatentCache: the VAE must be loaded from a folder (VAE.load), so it can be identified");
    const fp = await fingerprintModel(vae.path, { variant: this.variant, memoDir: this.dir });
    if (fp.id !== this.vae.id) {
      throw new Error(
        `LatentCache: the VAE loaded from ${vae.path} is not the one the cache was opened for (${this.vae.dir}); ` +
          "their configs or weights differ",
      );
    }
  }
}
