// The seam between training and evaluation. The training orchestrator calls
// evaluateRun() when a stage ends (it generates with the stage's LoRAs and the base
// model, scores, and writes <run>/eval/<stage>/report.html with the run's loss curves),
// and links its own report to the result with evalReportHref().
import { existsSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";

import type { ProgressEvent } from "../native/index.js";
import type { ClipScorer } from "./clip_score.js";
import type { EvalConfigInput } from "../config/eval.js";
import { evaluate, type EvaluateOutput } from "./evaluate.js";
import type { EvalPipeline } from "./generate.js";
import { findRunMetrics } from "./runs.js";

export interface EvaluateRunOptions {
  /** The training run's folder: metrics.jsonl (or one per stage folder) and report.html live there. */
  runDir: string;
  /** The stage that just ended (names the output folder). */
  stage?: string;
  /** Base model (diffusers folder or hub id) the LoRAs were trained on. */
  model: string;
  /** The LoRA files to evaluate, all applied together as one variant (two-stage: both). */
  loras: { path: string; scale?: number; name?: string }[];
  /** Variant name of the trained LoRA set (default: the stage name, else "lora"). */
  variantName?: string;
  prompts: string[];
  negativePrompt?: string;
  seeds?: number[];
  sampler?: string;
  steps?: number;
  guidanceScale?: number;
  width?: number;
  height?: number;
  /** Also generate with the base model alone (default true). */
  includeBase?: boolean;
  /** DreamBooth instance images: adds CLIP-I. */
  instanceImages?: string;
  clipModel?: string;
  /** Default <runDir>/eval/<stage> (or <runDir>/eval). */
  outputDir?: string;
  /** A loaded CLIP scorer to reuse across stages. */
  scorer?: ClipScorer;
  /** A loaded pipeline of `model` to generate with (reused; left as it was). Default: load `model`. */
  pipeline?: EvalPipeline;
  /** Where generation and CLIP run (default cpu), and the pipeline's dtype (default float32). */
  device?: string;
  dtype?: "float32" | "float16" | "bfloat16";
  signal?: AbortSignal;
  onProgress?: (event: ProgressEvent) => void;
}

async function hasMetrics(runDir: string): Promise<boolean> {
  try {
    await findRunMetrics(runDir);
    return true;
  } catch {
    return false; // a run without metrics.jsonl still gets its images scored
  }
}

/** Where evaluateRun writes for this run and stage. */
export function runEvalDir(runDir: string, stage?: string): string {
  return stage ? join(runDir, "eval", stage) : join(runDir, "eval");
}

/** Evaluates a finished training stage (mode B) and plots the run's training curves. */
export async function evaluateRun(o: EvaluateRunOptions): Promise<EvaluateOutput> {
  const outputDir = o.outputDir ?? runEvalDir(o.runDir, o.stage);
  const config: EvalConfigInput = {
    output_dir: outputDir,
    title: `Evaluation of ${o.stage ? `stage "${o.stage}" of ` : ""}${o.runDir}`,
    generate: {
      model: o.model,
      prompts: o.prompts,
      ...(o.negativePrompt !== undefined ? { negative_prompt: o.negativePrompt } : {}),
      ...(o.seeds ? { seeds: o.seeds } : {}),
      ...(o.sampler ? { sampler: o.sampler } : {}),
      ...(o.steps ? { steps: o.steps } : {}),
      ...(o.guidanceScale !== undefined ? { guidance_scale: o.guidanceScale } : {}),
      ...(o.width ? { width: o.width } : {}),
      ...(o.height ? { height: o.height } : {}),
      include_base: o.includeBase ?? true,
      ...(o.dtype ? { dtype: o.dtype } : {}),
      variants: [
        {
          name: o.variantName ?? o.stage ?? "lora",
          loras: o.loras.map((l) => ({ path: l.path, scale: l.scale ?? 1, ...(l.name ? { name: l.name } : {}) })),
        },
      ],
    },
    runs: (await hasMetrics(o.runDir)) ? [o.runDir] : [],
    ...(o.instanceImages ? { instance_images: o.instanceImages } : {}),
    ...(o.clipModel ? { clip_model: o.clipModel } : {}),
    ...(o.device ? { device: o.device } : {}),
  };
  const trainingReport = join(o.runDir, "report.html");
  return evaluate(config, {
    ...(o.signal ? { signal: o.signal } : {}),
    ...(o.onProgress ? { onProgress: o.onProgress } : {}),
    ...(o.scorer ? { scorer: o.scorer } : {}),
    ...(o.pipeline ? { pipeline: o.pipeline } : {}),
    trainingReport,
  });
}

/**
 * The href a report at `fromReport` (e.g. <run>/report.html) uses to link to an eval
 * report (a folder holding report.html, or the file), or null when it is not written yet.
 */
export function evalReportHref(fromReport: string, evalOutput: string): string | null {
  const target = evalOutput.endsWith(".html") ? evalOutput : join(evalOutput, "report.html");
  if (!existsSync(target)) return null;
  return relative(dirname(resolve(fromReport)), resolve(target))
    .split("\\")
    .join("/");
}
