// The numbers of an evaluation: per image, per prompt, per seed and per variant, in the
// shape eval.json stores them. Pure functions of the per-image scores, so identical
// inputs give identical results.
import { aggregateClipScore, clipTextSimilarity } from "./clip_score.js";

/** mean, sample standard deviation (n - 1; null below two values) and count. */
export interface Stat {
  mean: number;
  std: number | null;
  n: number;
}

export function stat(values: readonly number[]): Stat {
  const n = values.length;
  if (n === 0) return { mean: Number.NaN, std: null, n };
  const mean = values.reduce((a, b) => a + b, 0) / n;
  if (n < 2) return { mean, std: null, n };
  const variance = values.reduce((a, b) => a + (b - mean) ** 2, 0) / (n - 1);
  return { mean, std: Math.sqrt(variance), n };
}

/** One scored image. */
export interface ImageScore {
  /** Path relative to the variant's folder. */
  file: string;
  promptIndex: number;
  /** Generation seed when known. */
  seed: number | null;
  /** Position among this prompt's images in this variant (file-name order): the replicate when seeds are unknown. */
  sample: number;
  /** 100 * cos(image, prompt), unclamped: torchmetrics' per-pair score. */
  clipScoreRaw: number;
  /** Mean cosine to the instance images (CLIP-I), when instance images were given. */
  clipI: number | null;
}

/** Metrics over one replicate (one seed, or one sample index) of a variant. */
export interface ReplicateMetrics {
  /** "seed 3" or "sample 1". */
  key: string;
  seed: number | null;
  sample: number | null;
  images: number;
  clipScore: number;
  clipT: number;
  clipI: number | null;
}

export interface PromptMetrics {
  index: number;
  /** torchmetrics CLIP score over this prompt's images: max(mean raw, 0). */
  clipScore: number;
  /** The raw per-image scores over seeds. */
  clipScoreRaw: Stat;
  clipI: Stat | null;
}

export interface VariantMetrics {
  name: string;
  /** Folder scored, or the LoRAs applied (mode B). */
  source: string;
  images: number;
  /** Over every pair of the variant (torchmetrics CLIPScore over all its images). */
  clipScore: number;
  clipT: number;
  clipI: number | null;
  /** mean ± std over replicates (seeds) of the replicate-level metrics. */
  summary: { clipScore: Stat; clipT: Stat; clipI: Stat | null };
  /** How replicates were told apart: by seed, or by sample index when seeds are unknown. */
  replicateBy: "seed" | "sample";
  replicates: ReplicateMetrics[];
  perPrompt: PromptMetrics[];
  perImage: ImageScore[];
  /** Prompts cut to the text model's length (indices into prompts). */
  truncatedPrompts: number[];
}

/** Groups a variant's image scores into replicates and prompts. */
export function summarizeVariant(
  name: string,
  source: string,
  images: readonly ImageScore[],
  promptCount: number,
  truncatedPrompts: number[],
): VariantMetrics {
  const bySeed = images.every((i) => i.seed !== null);
  const replicateKey = (i: ImageScore): number => (bySeed ? i.seed! : i.sample);
  const keys = [...new Set(images.map(replicateKey))].sort((a, b) => a - b);
  const hasClipI = images.some((i) => i.clipI !== null);
  const clipIOf = (list: readonly ImageScore[]): number | null =>
    hasClipI ? stat(list.map((i) => i.clipI ?? Number.NaN)).mean : null;

  const replicates: ReplicateMetrics[] = keys.map((k) => {
    const members = images.filter((i) => replicateKey(i) === k);
    const raw = members.map((i) => i.clipScoreRaw);
    return {
      key: bySeed ? `seed ${k}` : `sample ${k}`,
      seed: bySeed ? k : null,
      sample: bySeed ? null : k,
      images: members.length,
      clipScore: aggregateClipScore(raw),
      clipT: clipTextSimilarity(raw),
      clipI: clipIOf(members),
    };
  });
  const perPrompt: PromptMetrics[] = [];
  for (let p = 0; p < promptCount; p++) {
    const members = images.filter((i) => i.promptIndex === p);
    if (members.length === 0) continue;
    const raw = members.map((i) => i.clipScoreRaw);
    perPrompt.push({
      index: p,
      clipScore: aggregateClipScore(raw),
      clipScoreRaw: stat(raw),
      clipI: hasClipI ? stat(members.map((i) => i.clipI ?? Number.NaN)) : null,
    });
  }
  const raw = images.map((i) => i.clipScoreRaw);
  return {
    name,
    source,
    images: images.length,
    clipScore: aggregateClipScore(raw),
    clipT: clipTextSimilarity(raw),
    clipI: clipIOf(images),
    summary: {
      clipScore: stat(replicates.map((r) => r.clipScore)),
      clipT: stat(replicates.map((r) => r.clipT)),
      clipI: hasClipI ? stat(replicates.map((r) => r.clipI!)) : null,
    },
    replicateBy: bySeed ? "seed" : "sample",
    replicates,
    perPrompt,
    perImage: [...images],
    truncatedPrompts,
  };
}

/** "23.41 ± 0.52" (or just the mean for one replicate). */
export function formatStat(s: Stat, digits: number): string {
  if (!Number.isFinite(s.mean)) return "–";
  return s.std === null ? s.mean.toFixed(digits) : `${s.mean.toFixed(digits)} ± ${s.std.toFixed(digits)}`;
}

/** A training run plotted in the report. */
export interface RunSummary {
  name: string;
  /** The metrics.jsonl read. */
  file: string;
  points: number;
  skipped: number;
  finalStep: number | null;
  finalLoss: number | null;
  /** The run's own report.html, relative to the eval output folder, when it has one. */
  report: string | null;
}

/** Everything eval.json holds. No timestamps or timings (those go to run-info.json), so equal inputs give equal bytes. */
export interface EvalResult {
  format: "sdtune-eval/1";
  title: string;
  mode: "images" | "generate";
  versions: { sdtune: string; libtorch: string; node: string };
  /** The resolved config, without output_dir (eval.json lives in it). */
  config: Record<string, unknown>;
  clip: { model: string; projectionDim: number; imageSize: number; dtype: string };
  /** What each number means. */
  definitions: Record<string, string>;
  /** Every prompt, in first-seen order; images refer to them by index. */
  prompts: string[];
  instanceImages: { path: string; count: number } | null;
  variants: VariantMetrics[];
  grids: { file: string; key: string; prompts: number[]; variants: string[] }[];
  runs: RunSummary[];
  /** The training run's report.html relative to the eval folder (evaluateRun), else null. */
  trainingReport: string | null;
}

export const METRIC_DEFINITIONS: Record<string, string> = {
  clipScore:
    "torchmetrics 1.3.2 CLIPScore: max(mean over pairs of 100 * cos(image embedding, prompt embedding), 0); " +
    "the clamp is applied after averaging",
  clipScoreRaw: "100 * cos(image, prompt) of one image, unclamped (torchmetrics' per-sample score)",
  clipT: "DreamBooth CLIP-T: mean cosine between image and prompt embeddings (unclamped CLIP score / 100)",
  clipI: "DreamBooth CLIP-I: mean cosine between generated-image and real instance-image embeddings, over all pairs",
  summary: "mean ± sample standard deviation (n - 1) over seeds of the per-seed metric; std is null for one seed",
  replicates: "one entry per seed (or per sample index when images carry no seed), over all prompts",
};
