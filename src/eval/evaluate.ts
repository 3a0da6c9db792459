// evaluate(config): score image folders (mode A) or generate then score (mode B), and
// write the outputs atomically into output_dir:
//   eval.json      every number (per image, prompt, seed, variant), config, versions; no timestamps
//   run-info.json  when it ran and how long each phase took (kept out of eval.json on purpose:
//                  eval.json is a pure function of the inputs, so reruns can be diffed byte for byte)
//   grids/*.png    prompts x variants per seed
//   report.html    metric table, charts, grids, training curves
import { createRequire } from "node:module";
import { join, relative, resolve } from "node:path";
import { existsSync } from "node:fs";

import { isImageFile, walkFiles } from "../data/files.js";
import { writeFileAtomic } from "../io/atomic.js";
import { native, type ProgressEvent, type Tensor } from "../native/index.js";
import { clipScoreChart, metricChart, trainingCharts } from "./charts.js";
import { clipImageSimilarity, ClipScorer } from "./clip_score.js";
import { parseEvalConfig, folderName, type EvalConfig, type EvalConfigInput } from "../config/eval.js";
import { generateVariants, type EvalPipeline } from "./generate.js";
import { writeGrids } from "./grids.js";
import { readEvalImages, readPromptsFile, type EvalImage } from "./images.js";
import { renderReport, type ReportCharts } from "./report.js";
import {
  METRIC_DEFINITIONS,
  summarizeVariant,
  type EvalResult,
  type ImageScore,
  type RunSummary,
  type VariantMetrics,
} from "./results.js";
import { readRunCurves } from "./runs.js";

export interface EvaluateOptions {
  signal?: AbortSignal;
  /** phase: "generate" | "clip-images" | "clip-texts" | "instance-images" | "grids" | "report". */
  onProgress?: (event: ProgressEvent) => void;
  /** A CLIP scorer already loaded (reused; not disposed). Default: load config.clip_model. */
  scorer?: ClipScorer;
  /**
   * Mode B: a loaded pipeline to generate with (reused; its LoRAs and active adapters are left
   * as they were). Default: loadPipeline(generate.model) on generate.device (else device), only
   * when some image is not already there, disposed before scoring.
   */
  pipeline?: EvalPipeline;
  /** Where the training report lives, to link back to it (evaluateRun sets it). */
  trainingReport?: string;
}

export interface EvaluateOutput {
  result: EvalResult;
  outputDir: string;
  files: { evalJson: string; report: string; runInfo: string; grids: string[] };
}

interface VariantInput {
  name: string;
  source: string;
  dir: string;
  images: EvalImage[];
}

/** Runs an evaluation described by `input` (validated with the eval config schema). */
export async function evaluate(
  input: EvalConfigInput | EvalConfig | Record<string, unknown>,
  options: EvaluateOptions = {},
): Promise<EvaluateOutput> {
  const config = parseEvalConfig(input);
  const outputDir = resolve(config.output_dir);
  const { signal, onProgress } = options;
  const clock = phaseClock();
  // 1. The variants' images: generated (mode B) or given (mode A).
  const { variants, prompts } = await collectVariants(config, outputDir, options, clock.timed);
  // 2. Scores.
  const scored = await scoreAll(config, variants, prompts, options, clock.timed);
  // 3. Grids, training curves, eval.json and the report.
  onProgress?.({ phase: "grids", step: 0, total: 1 });
  const grids = await clock.timed("grids", () =>
    writeGrids(
      outputDir,
      prompts,
      variants.map((v) => ({
        name: v.name,
        images: v.images.map((img, k) => ({ ...metricsImage(scored.metrics, v.name, k), path: img.path })),
      })),
      { cell: config.grid_cell, ...(signal ? { signal } : {}) },
    ),
  );
  onProgress?.({ phase: "grids", step: 1, total: 1 });
  const { curves, runs } = await summarizeRuns(config.runs, outputDir);
  const result = buildResult(config, outputDir, { prompts, scored, grids, runs }, options);
  onProgress?.({ phase: "report", step: 0, total: 1 });
  const charts = await clock.timed("report", async () => ({
    metrics: await metricCharts(result),
    ...(await trainingCharts(curves.filter((c) => c.points.length > 0))),
  }));
  const files = await writeOutputs(config, outputDir, result, charts, clock);
  onProgress?.({ phase: "report", step: 1, total: 1 });
  return { result, outputDir, files };
}

type Timed = <T>(phase: string, work: () => Promise<T>) => Promise<T>;

/** Seconds spent per phase (run-info.json), from when it was made. */
function phaseClock(): { started: Date; timings: Record<string, number>; timed: Timed } {
  const timings: Record<string, number> = {};
  const timed: Timed = async (phase, work) => {
    const t0 = performance.now();
    try {
      return await work();
    } finally {
      timings[phase] = (timings[phase] ?? 0) + (performance.now() - t0) / 1000;
    }
  };
  return { started: new Date(), timings, timed };
}

/** Mode B generates each variant's images into output_dir; mode A reads the given folders. */
async function collectVariants(
  config: EvalConfig,
  outputDir: string,
  options: EvaluateOptions,
  timed: Timed,
): Promise<{ variants: VariantInput[]; prompts: string[] }> {
  const { signal, onProgress } = options;
  if (config.generate) {
    const g = config.generate;
    const variants = await timed("generate", () =>
      generateVariants(g, outputDir, {
        device: config.device,
        ...(options.pipeline ? { pipeline: options.pipeline } : {}),
        ...(signal ? { signal } : {}),
        ...(onProgress ? { onProgress } : {}),
      }),
    );
    return { variants, prompts: [...new Set(g.prompts)] };
  }
  const promptList = config.prompts_file ? await readPromptsFile(config.prompts_file) : undefined;
  const variants: VariantInput[] = [];
  for (const [i, folder] of config.images!.entries()) {
    const images = await readEvalImages(folder.path, {
      ...(promptList ? { prompts: promptList } : {}),
      ...(signal ? { signal } : {}),
    });
    variants.push({ name: folder.name ?? folderName(folder.path, i), source: folder.path, dir: folder.path, images });
  }
  return { variants, prompts: [...new Set(variants.flatMap((v) => v.images.map((i) => i.prompt)))] };
}

interface Scored {
  metrics: VariantMetrics[];
  instanceCount: number | undefined;
  clip: EvalResult["clip"];
}

/** CLIP scores (and CLIP-I against instance_images) of every variant. */
async function scoreAll(
  config: EvalConfig,
  variants: VariantInput[],
  prompts: string[],
  options: EvaluateOptions,
  timed: Timed,
): Promise<Scored> {
  const { signal, onProgress } = options;
  const promptIndex = new Map(prompts.map((p, i) => [p, i]));
  const scorer =
    options.scorer ??
    (await ClipScorer.load(config.clip_model, {
      dtype: config.clip_dtype,
      device: config.device,
      ...(signal ? { signal } : {}),
    }));
  const embed = { batchSize: config.batch_size, ...(signal ? { signal } : {}), ...(onProgress ? { onProgress } : {}) };
  let instance: { tensor: Tensor; count: number } | undefined;
  const metrics: VariantMetrics[] = [];
  try {
    if (config.instance_images) {
      const dir = config.instance_images;
      const files = (await walkFiles(dir, signal)).filter(isImageFile);
      if (files.length === 0) throw new Error(`instance_images ${dir} holds no images`);
      const tensor = await timed("clip", () =>
        scorer.embedImages(
          files.map((f) => join(dir, f)),
          { ...embed, onProgress: (e) => onProgress?.({ ...e, phase: "instance-images" }) },
        ),
      );
      instance = { tensor, count: files.length };
    }
    for (const v of variants) {
      signal?.throwIfAborted();
      metrics.push(await timed("clip", () => scoreVariant(scorer, v, promptIndex, instance?.tensor, embed)));
    }
    const clip = {
      model: scorer.source,
      projectionDim: scorer.model.config.projection_dim,
      imageSize: scorer.model.config.vision_config.image_size,
      dtype: config.clip_dtype,
    };
    return { metrics, instanceCount: instance?.count, clip };
  } finally {
    instance?.tensor.dispose();
    if (!options.scorer) scorer.dispose();
  }
}

/** The training runs' loss curves, and a summary of each for eval.json. */
async function summarizeRuns(
  runPaths: readonly string[],
  outputDir: string,
): Promise<{ curves: Awaited<ReturnType<typeof readRunCurves>>; runs: RunSummary[] }> {
  const curves = await readRunCurves([...runPaths]);
  const runs: RunSummary[] = curves.map((c) => {
    const last = c.points.at(-1);
    const report = join(c.file, "..", "report.html");
    return {
      name: c.name,
      file: c.file,
      points: c.points.length,
      skipped: c.skipped,
      finalStep: last?.step ?? null,
      finalLoss: last?.loss ?? null,
      report: existsSync(report) ? toPosix(relative(outputDir, resolve(report))) : null,
    };
  });
  return { curves, runs };
}

/** eval.json's content: a pure function of the inputs (no timestamps). */
function buildResult(
  config: EvalConfig,
  outputDir: string,
  parts: { prompts: string[]; scored: Scored; grids: EvalResult["grids"]; runs: RunSummary[] },
  options: EvaluateOptions,
): EvalResult {
  const { output_dir: _output, ...configForJson } = config;
  const { scored } = parts;
  return {
    format: "sdtune-eval/1",
    title: config.title,
    mode: config.generate ? "generate" : "images",
    versions: versions(),
    config: configForJson as Record<string, unknown>,
    clip: scored.clip,
    definitions: METRIC_DEFINITIONS,
    prompts: parts.prompts,
    instanceImages:
      scored.instanceCount !== undefined && config.instance_images
        ? { path: config.instance_images, count: scored.instanceCount }
        : null,
    variants: scored.metrics,
    grids: parts.grids,
    runs: parts.runs,
    trainingReport: options.trainingReport ? toPosix(relative(outputDir, resolve(options.trainingReport))) : null,
  };
}

/** eval.json, report.html and run-info.json, each written atomically. */
async function writeOutputs(
  config: EvalConfig,
  outputDir: string,
  result: EvalResult,
  charts: Parameters<typeof renderReport>[1],
  clock: ReturnType<typeof phaseClock>,
): Promise<EvaluateOutput["files"]> {
  const files = {
    evalJson: join(outputDir, "eval.json"),
    report: join(outputDir, "report.html"),
    runInfo: join(outputDir, "run-info.json"),
    grids: result.grids.map((g) => join(outputDir, g.file)),
  };
  await writeFileAtomic(files.evalJson, `${JSON.stringify(result, null, 2)}\n`);
  await writeFileAtomic(files.report, renderReport(result, charts));
  const runInfo = {
    started: clock.started.toISOString(),
    finished: new Date().toISOString(),
    seconds: Object.fromEntries(Object.entries(clock.timings).map(([k, v]) => [k, Math.round(v * 1000) / 1000])),
    images: result.variants.reduce((n, v) => n + v.images, 0),
    device: config.device,
    threads: native().info().threads,
  };
  await writeFileAtomic(files.runInfo, `${JSON.stringify(runInfo, null, 2)}\n`);
  return files;
}

/** Scores one variant: per-image raw CLIP score and, with instance images, CLIP-I. */
async function scoreVariant(
  scorer: ClipScorer,
  v: VariantInput,
  promptIndex: Map<string, number>,
  instance: Tensor | undefined,
  embed: { batchSize: number; signal?: AbortSignal; onProgress?: (e: ProgressEvent) => void },
): Promise<VariantMetrics> {
  const progress = embed.onProgress;
  const withVariant = {
    ...embed,
    ...(progress ? { onProgress: (e: ProgressEvent) => progress({ ...e, variant: v.name }) } : {}),
  };
  const embeddings = await scorer.embedImages(
    v.images.map((i) => i.path),
    withVariant,
  );
  try {
    const pairs = await scorer.pairScoresFromImageEmbeddings(
      embeddings,
      v.images.map((i) => i.prompt),
      withVariant,
    );
    const clipI = instance ? (await clipImageSimilarity(embeddings, instance)).perImage : null;
    const samples = new Map<number, number>();
    const scores: ImageScore[] = v.images.map((img, k) => {
      const p = promptIndex.get(img.prompt)!;
      const sample = samples.get(p) ?? 0;
      samples.set(p, sample + 1);
      return {
        file: img.file,
        promptIndex: p,
        seed: img.seed,
        sample,
        clipScoreRaw: pairs.scores[k]!,
        clipI: clipI ? clipI[k]! : null,
      };
    });
    const truncated = [...new Set(pairs.truncated.map((k) => promptIndex.get(v.images[k]!.prompt)!))].sort(
      (a, b) => a - b,
    );
    return summarizeVariant(v.name, v.source, scores, promptIndex.size, truncated);
  } finally {
    embeddings.dispose();
  }
}

function metricsImage(metrics: VariantMetrics[], variant: string, k: number) {
  const image = metrics.find((m) => m.name === variant)!.perImage[k]!;
  return { promptIndex: image.promptIndex, seed: image.seed, sample: image.sample };
}

async function metricCharts(r: EvalResult): Promise<ReportCharts["metrics"]> {
  const charts: ReportCharts["metrics"] = [
    await clipScoreChart(r.variants.map((v) => ({ variant: v.name, stat: v.summary.clipScore }))),
  ];
  if (r.variants.some((v) => v.summary.clipI)) {
    charts.push({
      title: "CLIP-I",
      svg: await metricChart(
        "CLIP-I by variant (mean ± std over seeds)",
        "CLIP-I",
        r.variants.filter((v) => v.summary.clipI).map((v) => ({ variant: v.name, stat: v.summary.clipI! })),
      ),
    });
  }
  return charts;
}

function versions(): EvalResult["versions"] {
  const pkg = createRequire(import.meta.url)("../../package.json") as { version: string };
  return { sdtune: pkg.version, libtorch: native().info().libtorchVersion, node: process.version };
}

const toPosix = (p: string): string => p.split("\\").join("/");
