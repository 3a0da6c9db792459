// Training caches: VAE latents and text embeddings on disk, keyed by content.
export { LatentCache, checkCacheable } from "./latent_cache.js";
export type { EnsureOptions, EnsureResult, LatentCacheOptions, PlannedLatent } from "./latent_cache.js";
export { createLatentBatchStream, sampleLatents } from "./latent_stream.js";
export type { LatentBatch, LatentStreamSources, SampleLatentsOptions } from "./latent_stream.js";
export { TextEmbeddingCache, trainingCaptions, captionKey } from "./text_cache.js";
export type { TextCacheOptions, TextEnsureOptions } from "./text_cache.js";
export { cacheInfo, pruneCache } from "./prune.js";
export type { CacheNamespaceInfo, PruneOptions, PruneResult } from "./prune.js";
export { resolveCacheDir } from "../io/cache_dir.js";
export { fingerprintModel, fingerprintTokenizer } from "./fingerprint.js";
export type { FingerprintOptions, ModelFingerprint } from "./fingerprint.js";
export { CACHE_FORMAT } from "./store.js";
