// CLIP score as torchmetrics 1.3.2 defines it, and the DreamBooth similarity metrics.
//
// - CLIP score (torchmetrics clip_score / CLIPScore): per pair 100 * cos(image_i, text_i);
//   the metric is max(mean over all pairs, 0): the clamp comes after averaging, so single
//   pairs can be negative. CLIPScore.update adds sum(scores) and n; compute() = max(sum/n, 0).
// - CLIP-T (DreamBooth, Ruiz et al. 2023): mean cosine of prompt and image embeddings,
//   i.e. the unclamped CLIP score / 100.
// - CLIP-I (DreamBooth): mean cosine over every (generated, real instance image) pair.
//
// Images go through CLIPImageProcessor (PIL-exact, clip_image_processor.ts); captions through
// the slow CLIPTokenizer with padding to the longest caption and the attention mask passed,
// as CLIPProcessor(text=..., padding=True) does.
import { existsSync, statSync } from "node:fs";
import { resolve } from "node:path";

import { CLIP_FILES, resolveFiles } from "../hub/index.js";
import { ClipModel } from "../models/clip.js";
import type { ModelLoadOptions } from "../models/options.js";
import { native, type ProgressEvent, type Tensor } from "../native/index.js";
import { tensorFrom } from "../tensor.js";
import { ClipTokenizer } from "../text/clip_tokenizer.js";
import { ClipImageProcessor, type ImageInput } from "./clip_image_processor.js";

/** torchmetrics' default model for CLIPScore. */
export const DEFAULT_CLIP_MODEL = "openai/clip-vit-large-patch14";

/** Turns a hub id into a local folder (config.json, model.safetensors, tokenizer and preprocessor files). */
export type ClipModelResolver = (pathOrId: string, options: { signal?: AbortSignal }) => Promise<string>;

/** The Hugging Face cache (src/hub): only the files a CLIP checkpoint needs, safetensors only. */
const hubResolver: ClipModelResolver = (id, options) =>
  resolveFiles(id, CLIP_FILES.patterns, { optional: CLIP_FILES.optional, ...options });

let resolver: ClipModelResolver = hubResolver;

/** Replaces how hub ids become local CLIP folders (default: the Hugging Face cache); undefined restores it. */
export function setClipModelResolver(next: ClipModelResolver | undefined): void {
  resolver = next ?? hubResolver;
}

/** A local folder for `pathOrId`: an existing folder as it is, else a hub id ("org/name") through the hub cache. */
export async function resolveClipModel(pathOrId: string, options: { signal?: AbortSignal } = {}): Promise<string> {
  const local = resolve(pathOrId);
  if (existsSync(local)) {
    if (!statSync(local).isDirectory()) throw new Error(`CLIP model ${local} is a file; pass the model's folder`);
    return local;
  }
  const looksLikeHubId = /^[\w.-]+\/[\w.-]+$/.test(pathOrId) && !pathOrId.startsWith(".");
  if (!looksLikeHubId) throw new Error(`CLIP model folder ${local} does not exist`);
  return resolver(pathOrId, options);
}

export interface EmbedOptions {
  /** Images or captions per forward pass (default 32). */
  batchSize?: number;
  signal?: AbortSignal;
  onProgress?: (event: ProgressEvent) => void;
}

export interface TextEmbeddings {
  /** float32 CPU [n, projection_dim], not normalized. */
  embeddings: Tensor;
  /** Indices of captions longer than the text model's positions, cut to fit (BOS and EOS kept). */
  truncated: number[];
}

export interface PairScores {
  /** 100 * cos(image_i, caption_i) per pair, unclamped (torchmetrics' per-sample score). */
  scores: number[];
  truncated: number[];
}

/** A CLIP model with its tokenizer and image processor: embeddings and pair scores. */
export class ClipScorer {
  constructor(
    readonly model: ClipModel,
    readonly tokenizer: ClipTokenizer,
    readonly processor: ClipImageProcessor,
    /** What was asked for (hub id or folder), for reports. */
    readonly source: string = model.path,
  ) {}

  /** A transformers CLIP folder or hub id (resolved through setClipModelResolver). */
  static async load(
    pathOrId: string = DEFAULT_CLIP_MODEL,
    options: ModelLoadOptions & { signal?: AbortSignal } = {},
  ): Promise<ClipScorer> {
    const dir = await resolveClipModel(pathOrId, options.signal ? { signal: options.signal } : {});
    const { signal: _signal, ...load } = options;
    const [model, tokenizer, processor] = await Promise.all([
      ClipModel.load(dir, load),
      ClipTokenizer.fromPretrained(dir),
      ClipImageProcessor.fromPretrained(dir),
    ]);
    return new ClipScorer(model, tokenizer, processor, pathOrId);
  }

  /** Image embeddings (get_image_features): float32 CPU [n, projection_dim], not normalized. */
  async embedImages(images: readonly ImageInput[], options: EmbedOptions = {}): Promise<Tensor> {
    return this.batched(images, options, "clip-images", async (batch) => {
      const pixels = await this.processor.preprocess(batch);
      try {
        return await this.model.getImageFeatures(pixels);
      } finally {
        pixels.dispose();
      }
    });
  }

  /** Caption embeddings (get_text_features with the attention mask). */
  async embedTexts(captions: readonly string[], options: EmbedOptions = {}): Promise<TextEmbeddings> {
    const maxLength = this.model.config.text_config.max_position_embeddings;
    const truncated: number[] = [];
    let offset = 0;
    const embeddings = await this.batched(captions, options, "clip-texts", async (batch) => {
      // torchmetrics 1.3.2 tokenizes with padding=True and no truncation (captions past the
      // model's positions make the model fail); we cut them as the tokenizer's truncation
      // does, keeping EOS, and report which.
      const counts = this.tokenizer.encodeIds(batch, { padding: false, truncation: false }).untruncatedLengths;
      counts.forEach((n, i) => n > maxLength && truncated.push(offset + i));
      offset += batch.length;
      const { ids, attentionMask } = this.tokenizer.encodeWithMask(batch, {
        padding: "longest",
        truncation: true,
        maxLength,
      });
      try {
        return await this.model.getTextFeatures(ids, attentionMask);
      } finally {
        ids.dispose();
        attentionMask.dispose();
      }
    });
    return { embeddings, truncated };
  }

  /** Per-pair CLIP scores, 100 * cos, unclamped. Repeated captions are embedded once. */
  async pairScores(
    images: readonly ImageInput[],
    captions: readonly string[],
    options: EmbedOptions = {},
  ): Promise<PairScores> {
    checkPairs(images.length, captions.length);
    const imageEmbeds = await this.embedImages(images, options);
    try {
      return await this.pairScoresFromImageEmbeddings(imageEmbeds, captions, options);
    } finally {
      imageEmbeds.dispose();
    }
  }

  /** Per-pair scores for images already embedded (rows of `imageEmbeds` pair with `captions`). */
  async pairScoresFromImageEmbeddings(
    imageEmbeds: Tensor,
    captions: readonly string[],
    options: EmbedOptions = {},
  ): Promise<PairScores> {
    checkPairs(imageEmbeds.shape[0]!, captions.length);
    const unique = [...new Set(captions)];
    const text = await this.embedTexts(unique, options);
    const row = new Map(unique.map((c, i) => [c, i]));
    const textEmbeds = gatherRows(
      text.embeddings,
      captions.map((c) => row.get(c)!),
    );
    text.embeddings.dispose();
    try {
      const scores = await native().metrics.rowCosine(imageEmbeds, textEmbeds, 100);
      const out = Array.from(scores.toTypedArray() as Float32Array);
      scores.dispose();
      const truncatedCaptions = new Set(text.truncated.map((i) => unique[i]));
      const truncated = captions.flatMap((c, i) => (truncatedCaptions.has(c) ? [i] : []));
      return { scores: out, truncated };
    } finally {
      textEmbeds.dispose();
    }
  }

  dispose(): void {
    this.model.dispose();
  }

  private async batched<T>(
    items: readonly T[],
    options: EmbedOptions,
    phase: string,
    run: (batch: T[]) => Promise<Tensor>,
  ): Promise<Tensor> {
    const batchSize = options.batchSize ?? 32;
    if (!Number.isInteger(batchSize) || batchSize < 1) {
      throw new RangeError(`batchSize must be a positive integer, got ${batchSize}`);
    }
    if (items.length === 0) throw new RangeError(`ClipScorer: nothing to embed (${phase})`);
    const parts: Tensor[] = [];
    try {
      for (let start = 0; start < items.length; start += batchSize) {
        options.signal?.throwIfAborted();
        const out = await run(items.slice(start, start + batchSize));
        parts.push(out.dtype === "float32" && out.device === "cpu" ? out : await toCpuFloat(out));
        const done = Math.min(items.length, start + batchSize);
        options.onProgress?.({ phase, step: done, total: items.length });
      }
      return concatRows(parts);
    } finally {
      for (const p of parts) p.dispose();
    }
  }
}

async function toCpuFloat(t: Tensor): Promise<Tensor> {
  const out = await t.to({ dtype: "float32", device: "cpu" });
  t.dispose();
  return out;
}

function checkPairs(images: number, captions: number): void {
  if (images !== captions) {
    throw new RangeError(
      `Expected the number of images and text examples to be the same but got ${images} and ${captions}`,
    );
  }
  if (images === 0) throw new RangeError("CLIP score needs at least one image-caption pair");
}

/** Rows of float32 CPU [n_i, d] tensors stacked into a new [sum n_i, d] tensor (a copy). */
export function concatRows(parts: readonly Tensor[]): Tensor {
  const width = parts[0]!.shape[1]!;
  const rows = parts.reduce((n, p) => n + p.shape[0]!, 0);
  const out = new Float32Array(rows * width);
  let offset = 0;
  for (const p of parts) {
    const data = p.toTypedArray() as Float32Array;
    out.set(data, offset);
    offset += data.length;
  }
  return tensorFrom(out, [rows, width]);
}

/** out[i] = t[index[i]] for a float32 CPU [n, d] tensor. */
function gatherRows(t: Tensor, index: readonly number[]): Tensor {
  const width = t.shape[1]!;
  const src = t.toTypedArray() as Float32Array;
  const out = new Float32Array(index.length * width);
  index.forEach((r, i) => out.set(src.subarray(r * width, (r + 1) * width), i * width));
  return tensorFrom(out, [index.length, width]);
}

/** torchmetrics' reduction: max(mean(scores), 0). */
export function aggregateClipScore(scores: readonly number[]): number {
  if (scores.length === 0) throw new RangeError("CLIP score of zero pairs is undefined");
  const mean = scores.reduce((a, b) => a + b, 0) / scores.length;
  return Math.max(mean, 0);
}

/** torchmetrics.functional.multimodal.clip_score: max(mean_i 100 cos(image_i, caption_i), 0). */
export async function clipScore(
  scorer: ClipScorer,
  images: readonly ImageInput[],
  captions: readonly string[],
  options: EmbedOptions = {},
): Promise<number> {
  return aggregateClipScore((await scorer.pairScores(images, captions, options)).scores);
}

/** torchmetrics.multimodal.CLIPScore: accumulates sum and count over updates; compute() = max(sum / n, 0). */
export class ClipScore {
  private sum = 0;
  private n = 0;

  constructor(readonly scorer: ClipScorer) {}

  /** Scores one batch of pairs and adds them; resolves to the batch's per-pair scores. */
  async update(images: readonly ImageInput[], captions: readonly string[], options?: EmbedOptions): Promise<number[]> {
    const { scores } = await this.scorer.pairScores(images, captions, options);
    for (const s of scores) this.sum += s;
    this.n += scores.length;
    return scores;
  }

  get count(): number {
    return this.n;
  }

  compute(): number {
    if (this.n === 0) throw new RangeError("ClipScore.compute: no pairs yet (call update first)");
    return Math.max(this.sum / this.n, 0);
  }

  reset(): void {
    this.sum = 0;
    this.n = 0;
  }
}

export interface ImageSimilarity {
  /** Mean cosine over every (generated, reference) pair. */
  mean: number;
  /** Per generated image: mean cosine to the reference images. */
  perImage: number[];
}

/** CLIP-I: mean cosine between generated-image and real-image embeddings, over all pairs. */
export async function clipImageSimilarity(generated: Tensor, reference: Tensor): Promise<ImageSimilarity> {
  const matrix = await native().metrics.cosineMatrix(generated, reference); // [n_gen, n_ref]
  try {
    const [n, m] = matrix.shape as [number, number];
    const values = matrix.toTypedArray() as Float32Array;
    const perImage: number[] = [];
    let total = 0;
    for (let i = 0; i < n; i++) {
      let row = 0;
      for (let j = 0; j < m; j++) row += values[i * m + j]!;
      perImage.push(row / m);
      total += row;
    }
    return { mean: total / (n * m), perImage };
  } finally {
    matrix.dispose();
  }
}

/** CLIP-T: mean cosine of each image with its own prompt (the unclamped CLIP score / 100). */
export function clipTextSimilarity(pairScores: readonly number[]): number {
  if (pairScores.length === 0) throw new RangeError("CLIP-T of zero pairs is undefined");
  return pairScores.reduce((a, b) => a + b, 0) / pairScores.length / 100;
}
