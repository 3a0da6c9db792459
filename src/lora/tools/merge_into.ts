// Merging several LoRA files into one LoRA (sd-scripts' merge_lora.py --save_to without a
// model): for each layer, sum_i scale_i * (alpha_i / rank_i) * up_i @ down_i. Exactly, as
// one adapter whose rank is the sum of the ranks (downs stacked, scaled ups side by side,
// alpha = rank); or re-decomposed by a truncated SVD to `rank` / an `energy` target.
import { checkPlainLora } from "./block_weights.js";
import { native, type ProgressEvent, type Tensor } from "../../native/index.js";
import { loadLoraFile } from "../formats/load.js";
import { disposeLora, type LoraAdapter, type LoraWeights } from "../formats/types.js";
import { checkRankOptions } from "./resize.js";

export interface MergeLorasSpec {
  /** A LoRA file or folder in any supported format. */
  path: string;
  /** Default 1. */
  scale?: number;
}

export interface MergeLorasOptions {
  /** Re-decompose each merged layer to at most this rank (default: exact, rank = sum of ranks). */
  rank?: number;
  /** With re-decomposition: keep the fewest singular values holding this share of sum(sigma^2). */
  energy?: number;
  signal?: AbortSignal;
  onProgress?: (event: ProgressEvent) => void;
}

export interface MergeLorasResult {
  /** The merged LoRA (alpha = rank); free with disposeLora. */
  weights: LoraWeights;
  /** Per layer: its rank and, when re-decomposed, the kept energy share. */
  layers: { key: string; rank: number; energy?: number }[];
}

// kohya entries that say which base a LoRA is for (kept from the first file that has them).
const BASE_KEYS = ["ss_base_model_version", "ss_sd_model_name", "ss_v2", "ss_sd_model_hash", "ss_new_sd_model_hash"];

/** Merges `loras` (each at its scale) into one LoRA. */
export async function mergeLoras(loras: MergeLorasSpec[], options: MergeLorasOptions = {}): Promise<MergeLorasResult> {
  if (!Array.isArray(loras) || loras.length === 0) throw new TypeError("mergeLoras: give at least one LoRA");
  for (const [i, l] of loras.entries()) {
    if (typeof l?.path !== "string" || !l.path) throw new TypeError(`mergeLoras: loras[${i}].path is missing`);
    if (l.scale !== undefined && !Number.isFinite(l.scale))
      throw new TypeError(`mergeLoras: loras[${i}].scale must be a finite number`);
  }
  checkRankOptions(options, "mergeLoras");
  const loaded: LoraWeights[] = [];
  const adapters = new Map<string, LoraAdapter>();
  try {
    for (const l of loras) {
      loaded.push(await loadLoraFile(l.path, { signal: options.signal }));
      checkPlainLora(loaded[loaded.length - 1]!, "mergeLoras", l.path);
    }
    const keys = [...new Set(loaded.flatMap((w) => [...w.adapters.keys()]))].sort();
    const layers: MergeLorasResult["layers"] = [];
    for (const [i, key] of keys.entries()) {
      options.signal?.throwIfAborted();
      const parts = partsOf(key, loras, loaded);
      const merged = await native().loraTools.concat(parts);
      const adapter = await redecompose(merged, options);
      adapters.set(key, adapter.adapter);
      layers.push({
        key,
        rank: adapter.adapter.rank,
        ...(adapter.energy !== undefined ? { energy: adapter.energy } : {}),
      });
      options.onProgress?.({ phase: "lora.merge_loras", step: i + 1, total: keys.length, what: key });
    }
    const metadata = mergedMetadata(loras, loaded);
    return { weights: { format: "kohya", adapters, metadata, warnings: [] }, layers };
  } catch (error) {
    for (const a of adapters.values()) {
      a.up.dispose();
      a.down.dispose();
    }
    throw error;
  } finally {
    for (const w of loaded) disposeLora(w);
  }
}

interface Part {
  up: Tensor;
  down: Tensor;
  scale: number;
}

function partsOf(key: string, loras: MergeLorasSpec[], loaded: LoraWeights[]): Part[] {
  const parts: Part[] = [];
  let first: { shape: number[]; file: string } | undefined;
  for (const [i, w] of loaded.entries()) {
    const a = w.adapters.get(key);
    if (!a) continue;
    const inShape = a.down.shape.slice(1);
    const outDim = a.up.shape[0]!;
    const shape = [outDim, ...inShape];
    if (first && shape.join() !== first.shape.join()) {
      throw new Error(
        `mergeLoras: module "${key}" is [${shape.join(", ")}] in ${loras[i]!.path} but [${first.shape.join(", ")}] ` +
          `in ${first.file}: these LoRAs were made for different base models`,
      );
    }
    first ??= { shape, file: loras[i]!.path };
    parts.push({ up: a.up, down: a.down, scale: (loras[i]!.scale ?? 1) * (a.alpha / a.rank) });
  }
  return parts;
}

async function redecompose(
  merged: { up: Tensor; down: Tensor },
  options: MergeLorasOptions,
): Promise<{ adapter: LoraAdapter; energy?: number }> {
  const rank = merged.down.shape[0]!;
  if (options.rank === undefined && options.energy === undefined) {
    return { adapter: { up: merged.up, down: merged.down, rank, alpha: rank } };
  }
  try {
    const r = await native().loraTools.lowRankOfProduct(merged.up, merged.down, 1, {
      rank: options.rank ?? rank,
      ...(options.energy !== undefined ? { energy: options.energy } : {}),
    });
    r.singular.dispose();
    if (!r.up || !r.down) return { adapter: { up: merged.up, down: merged.down, rank, alpha: rank }, energy: 1 };
    merged.up.dispose();
    merged.down.dispose();
    return { adapter: { up: r.up, down: r.down, rank: r.rank, alpha: r.rank }, energy: r.energy };
  } catch (error) {
    merged.up.dispose();
    merged.down.dispose();
    throw error;
  }
}

function mergedMetadata(loras: MergeLorasSpec[], loaded: LoraWeights[]): Record<string, string> {
  const metadata: Record<string, string> = { ss_network_module: "networks.lora" };
  for (const key of BASE_KEYS) {
    const from = loaded.find((w) => w.metadata[key] !== undefined);
    if (from) metadata[key] = from.metadata[key]!;
  }
  metadata.sdtune_merged = JSON.stringify(loras.map((l) => ({ file: l.path, scale: l.scale ?? 1 })));
  return metadata;
}
