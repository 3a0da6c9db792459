// A LoRA from the difference of two models (kohya sd-scripts' extract_lora_from_models):
// for each LoRA-targetable layer, the truncated SVD of tuned - base (native, float32,
// one layer at a time, so memory stays at the two models plus one layer). sigma goes
// into up and alpha = rank (scale 1), as sd-scripts writes it; a conv weight is
// decomposed as [out, in*kh*kw], giving a kxk down and a 1x1 up. Layers whose
// difference is ~0 are skipped. Unlike sd-scripts, factors are not clamped unless
// asked (clampQuantile: 0.99 is its choice): unclamped, a difference of rank <= R is
// recovered to float32 precision.
import { existsSync } from "node:fs";
import { basename, join, resolve } from "node:path";

import { resolveModel } from "../../hub/index.js";
import { TextEncoder } from "../../models/text_encoder.js";
import { UNet } from "../../models/unet.js";
import { native, type LowRankResult, type ProgressEvent, type Tensor } from "../../native/index.js";
import { readJsonFile } from "../../models/files.js";
import { kohyaModelVersion } from "../formats/kohya_metadata.js";
import { isKnownModulePath } from "../formats/names.js";
import type { LoraAdapter, LoraComponent, LoraWeights } from "../formats/types.js";

export interface ExtractLoraOptions {
  /** The model fine-tuned from: a diffusers folder, a hub id or a single-file checkpoint. */
  base: string;
  /** The fine-tuned model (same kinds of source). */
  tuned: string;
  /** Rank of Linear and 1x1 conv layers. */
  rank: number;
  /** Rank of kxk conv layers (ResNet / down / upsampler convs); none extracted without it (as sd-scripts). */
  convRank?: number;
  /** Keep the fewest singular values holding this share of sum(sigma^2), at most the rank. */
  energy?: number;
  /** sd-scripts' clamp of the factors at this quantile (0.99 there); default: none (exact). */
  clampQuantile?: number;
  /** Skip a layer whose ||tuned - base|| <= minDiff * ||base|| (default 1e-6: only unchanged layers). */
  minDiff?: number;
  /** Read `variant` weight files (e.g. fp16) of diffusers folders. */
  variant?: string;
  signal?: AbortSignal;
  onProgress?: (event: ProgressEvent) => void;
}

export interface ExtractedLayer {
  /** "unet.<module path>" / "text_encoder.<module path>". */
  key: string;
  rank: number;
  /** Kept sigma^2 / total sigma^2 of the layer's difference. */
  energy: number;
  /** ||tuned - base|| / ||base||. */
  relativeNorm: number;
}

export interface ExtractLoraResult {
  /** The LoRA (alpha = rank); free with disposeLora. */
  weights: LoraWeights;
  layers: ExtractedLayer[];
  /** Layers left out because their difference is ~0. */
  skipped: { key: string; relativeNorm: number }[];
}

// Layers sd-scripts' LoRA never targets (and AUTOMATIC1111 maps no name for).
const NOT_TARGETED = /^(conv_in|conv_out|time_embedding|add_embedding|text_projection)(\.|$)/;
// Layers in ResNet blocks and resamplers: only with a conv rank (sd-scripts' conv_dim).
const RESNET_LIKE = /(resnets\.\d+\.|downsamplers\.|upsamplers\.)/;

/** Extracts a LoRA approximating tuned - base, per layer. */
export async function extractLoraFromModels(options: ExtractLoraOptions): Promise<ExtractLoraResult> {
  checkOptions(options);
  const { signal } = options;
  const base = resolve(await resolveModel(options.base, { variant: options.variant, signal }));
  const tuned = resolve(await resolveModel(options.tuned, { variant: options.variant, signal }));
  const adapters = new Map<string, LoraAdapter>();
  const result: ExtractLoraResult = {
    weights: { format: "kohya", adapters, metadata: extractMetadata(options, base), warnings: [] },
    layers: [],
    skipped: [],
  };
  try {
    for (const [component, sub, Model] of [
      ["unet", "unet", UNet],
      ["text_encoder", "text_encoder", TextEncoder],
    ] as const) {
      if (!existsSync(join(base, sub)) || !existsSync(join(tuned, sub))) continue;
      const load = (dir: string) => Model.load(join(dir, sub), { variant: options.variant });
      const b = await load(base);
      let t: UNet | TextEncoder | undefined;
      try {
        t = await load(tuned);
        await extractComponent(component, b, t, options, result);
      } finally {
        b.dispose();
        t?.dispose();
      }
    }
  } catch (error) {
    for (const a of adapters.values()) disposeAdapter(a);
    throw error;
  }
  if (!adapters.size) {
    throw new Error(`extractLoraFromModels: ${options.tuned} does not differ from ${options.base} in any LoRA layer`);
  }
  result.weights.adapters = new Map([...adapters].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
  return result;
}

function checkOptions(o: ExtractLoraOptions): void {
  const what = "extractLoraFromModels";
  if (typeof o.base !== "string" || typeof o.tuned !== "string") throw new TypeError(`${what}: give base and tuned`);
  for (const [name, value] of [
    ["rank", o.rank],
    ["convRank", o.convRank],
  ] as const) {
    if (value !== undefined && !(Number.isInteger(value) && value > 0))
      throw new RangeError(`${what}: ${name} must be a positive integer`);
  }
  if (o.rank === undefined) throw new TypeError(`${what}: rank is required`);
  if (o.energy !== undefined && !(o.energy > 0 && o.energy <= 1))
    throw new RangeError(`${what}: energy must be in (0, 1]`);
  if (o.clampQuantile !== undefined && !(o.clampQuantile > 0 && o.clampQuantile <= 1))
    throw new RangeError(`${what}: clampQuantile must be in (0, 1]`);
  if (o.minDiff !== undefined && !(o.minDiff >= 0)) throw new RangeError(`${what}: minDiff must be >= 0`);
}

/** The rank for one weight shape, or undefined when the layer is not extracted. */
function rankFor(path: string, shape: number[], options: ExtractLoraOptions): number | undefined {
  if (NOT_TARGETED.test(path)) return undefined;
  if (RESNET_LIKE.test(path) && options.convRank === undefined) return undefined;
  const kxk = shape.length === 4 && (shape[2] !== 1 || shape[3] !== 1);
  return kxk ? options.convRank : options.rank;
}

async function extractComponent(
  component: LoraComponent,
  base: UNet | TextEncoder,
  tuned: UNet | TextEncoder,
  options: ExtractLoraOptions,
  result: ExtractLoraResult,
): Promise<void> {
  const modules = native()
    .lora.modules(base.handle)
    .filter((m) => (m.kind === "linear" || m.kind === "conv2d") && isKnownModulePath(component, m.path));
  const baseWeights = new Map(await base.stateDict());
  const tunedWeights = new Map(await tuned.stateDict());
  for (const [i, m] of modules.entries()) {
    options.signal?.throwIfAborted();
    const key = `${component}.${m.path}`;
    const b = baseWeights.get(`${m.path}.weight`);
    const t = tunedWeights.get(`${m.path}.weight`);
    if (!b) continue;
    if (!t || t.shape.join() !== b.shape.join()) {
      throw new Error(
        `${options.tuned}: layer "${key}" ${t ? `has shape [${t.shape.join(", ")}]` : "is missing"}, ` +
          `but the base ${options.base} has [${b.shape.join(", ")}]: the models do not share an architecture`,
      );
    }
    const rank = rankFor(m.path, b.shape, options);
    if (rank !== undefined) await extractLayer(key, b, t, rank, options, result);
    options.onProgress?.({ phase: "lora.extract", step: i + 1, total: modules.length, what: key });
  }
}

async function extractLayer(
  key: string,
  base: Tensor,
  tuned: Tensor,
  rank: number,
  options: ExtractLoraOptions,
  result: ExtractLoraResult,
): Promise<void> {
  const r: LowRankResult = await native().loraTools.lowRankOfDifference(base, tuned, {
    rank,
    minDiff: options.minDiff ?? 1e-6,
    ...(options.energy !== undefined ? { energy: options.energy } : {}),
    ...(options.clampQuantile !== undefined ? { clampQuantile: options.clampQuantile } : {}),
  });
  r.singular.dispose();
  if (!r.rank || !r.up || !r.down) {
    result.skipped.push({ key, relativeNorm: r.relativeNorm });
    return;
  }
  result.weights.adapters.set(key, { up: r.up, down: r.down, rank: r.rank, alpha: r.rank });
  result.layers.push({ key, rank: r.rank, energy: r.energy, relativeNorm: r.relativeNorm });
}

function disposeAdapter(a: LoraAdapter): void {
  a.up.dispose();
  a.down.dispose();
}

/** SD 2.x (OpenCLIP ViT-H text encoder, 1024 wide) and v-prediction, from the base's config files. */
function baseVersion(base: string): Record<string, string> {
  const te = join(base, "text_encoder", "config.json");
  if (!existsSync(te)) return {};
  const v2 = (readJsonFile(te) as { hidden_size?: number }).hidden_size === 1024;
  const sched = join(base, "scheduler", "scheduler_config.json");
  const config = existsSync(sched) ? (readJsonFile(sched) as { prediction_type?: string }) : {};
  const vPrediction = config.prediction_type === "v_prediction";
  return { ss_base_model_version: kohyaModelVersion(v2, vPrediction), ss_v2: v2 ? "True" : "False" };
}

/** kohya entries naming the base (what an incompatible-file error reports) and how the LoRA was made. */
function extractMetadata(options: ExtractLoraOptions, base: string): Record<string, string> {
  return {
    ss_network_module: "networks.lora",
    ...baseVersion(base),
    ss_sd_model_name: basename(options.base.replace(/[/\\]+$/, "")) || basename(base),
    sdtune_extracted: JSON.stringify({
      base: options.base,
      tuned: options.tuned,
      rank: options.rank,
      ...(options.convRank !== undefined ? { conv_rank: options.convRank } : {}),
      ...(options.energy !== undefined ? { energy: options.energy } : {}),
      ...(options.clampQuantile !== undefined ? { clamp_quantile: options.clampQuantile } : {}),
    }),
  };
}
