// `train(config)`: a whole run, one stage after another, each starting from the
// previous stage's result. The run folder holds the resolved config, metrics.jsonl,
// per-stage checkpoints, samples and outputs, and progress.json (which stages are
// done and what they produced), so `resume: "latest"` picks up exactly where a
// crash or Ctrl-C left off.
import { existsSync } from "node:fs";
import { mkdir, readdir, readFile } from "node:fs/promises";
import { join, resolve } from "node:path";

import { parse as parseYaml, stringify as toYaml } from "yaml";

import { applyOverrides, loadConfigFile } from "../config/load.js";
import { resolveTrainConfig, type TrainConfig } from "../config/train.js";
import { resolveModel } from "../hub/index.js";
import { writeFileAtomic } from "../io/atomic.js";
import { acquireFileLock } from "../io/lock.js";
import { native } from "../native/index.js";
import { CheckpointStore } from "./checkpoints.js";
import { MetricsLog } from "./metrics.js";
import { choosePlacement, type Placement } from "./precision.js";
import { saveStageOutputs, type StageRecord } from "./outputs.js";
import { writeTrainingReport } from "./report.js";
import { evaluateStage } from "./evaluate.js";
import { runStage, stageDir, type StageCheckpointState, type StageProgress } from "./stage.js";
import type { StageBase } from "./stage_models.js";

export interface TrainOptions {
  /** "latest": continue from the newest checkpoint (or the next unfinished stage); or a checkpoint folder. */
  resume?: "latest" | string;
  /** "key=value" overrides applied to the config before validation (CLI flags). */
  overrides?: string[];
  /** Stage phases (train, class-images, cache, validation, save), downloads and evaluation. */
  onProgress?: (event: TrainProgress) => void;
  signal?: AbortSignal;
  /** Latent / text-embedding cache folder (default: $SDTUNE_CACHE_DIR or ~/.cache/sdtune). */
  cacheDir?: string;
}

export type TrainProgress = StageProgress | { phase: "download" | "evaluate"; stage?: string; [key: string]: unknown };

export interface TrainResult {
  outputDir: string;
  /** report.html: loss curves, outputs, validation samples, evaluation links. */
  report: string;
  config: TrainConfig;
  stages: StageRecord[];
}

interface RunProgress {
  version: 1;
  stages: StageRecord[];
}

const PROGRESS = "progress.json";

/** Trains per `config`: a config object, or the path of a YAML/JSON config file. */
export async function train(config: unknown, options: TrainOptions = {}): Promise<TrainResult> {
  let raw = typeof config === "string" ? await loadConfigFile(config) : config;
  const source = typeof config === "string" ? config : "config";
  if (options.overrides?.length) raw = applyOverrides(raw as Record<string, unknown>, options.overrides);
  const resolved = resolveTrainConfig(raw, source);
  const runDir = resolve(resolved.output_dir);
  preflight(resolved);
  await mkdir(runDir, { recursive: true });
  const release = await lockRun(runDir);
  try {
    return await trainLocked(resolved, runDir, options);
  } finally {
    await release();
  }
}

async function trainLocked(resolved: TrainConfig, runDir: string, options: TrainOptions): Promise<TrainResult> {
  const { signal } = options;
  const progressPath = join(runDir, PROGRESS);
  const progress = await readProgress(progressPath);
  const previous = await readPreviousConfig(runDir);
  if (!options.resume && (previous || progress.stages.length > 0 || (await hasCheckpoints(runDir, resolved)))) {
    throw new Error(
      `${runDir} already holds a training run. Resume it with --resume latest (resume: "latest"), ` +
        "or choose another output_dir; nothing there was changed.",
    );
  }
  if (options.resume && previous) {
    const changed = changedKeys(previous, JSON.parse(JSON.stringify(resolved)) as Record<string, unknown>);
    if (changed.length) {
      throw new Error(
        `${runDir}: the config differs from the run being resumed in ${changed.join(", ")}. An exact resume ` +
          "needs the same settings: undo the change, or start a new run in another output_dir. " +
          `(Only ${RESUME_SAFE_KEYS.join(", ")} may change between resumes.)`,
      );
    }
  }
  await writeFileAtomic(join(runDir, "config.yaml"), toYaml(resolved));
  const placement = choosePlacement(resolved.device, resolved.mixed_precision);
  await writeFileAtomic(join(runDir, "run.json"), JSON.stringify(runInfo(placement), null, 2));

  const modelDir = await resolveModel(resolved.model, {
    revision: resolved.revision,
    variant: resolved.variant,
    signal,
    onProgress: (e) => options.onProgress?.({ ...e, phase: "download" }),
  });

  // Where to pick up: the first unfinished stage, from its newest checkpoint (or a given one).
  const done = new Map(progress.stages.map((s) => [s.name, s]));
  const current = resolved.stages.find((s) => !done.has(s.name));
  let resumeFrom: { dir: string; state: StageCheckpointState } | undefined;
  if (options.resume && current) {
    const store = new CheckpointStore<StageCheckpointState>(join(stageDir(runDir, current.name), "checkpoints"));
    const checkpoint = options.resume === "latest" ? await store.latest() : await store.load(resolve(options.resume));
    if (checkpoint) {
      if (checkpoint.manifest.state.stage !== current.name) {
        throw new Error(
          `${checkpoint.dir}: a checkpoint of stage "${checkpoint.manifest.state.stage}", but the next stage to train is "${current.name}"`,
        );
      }
      resumeFrom = { dir: checkpoint.dir, state: checkpoint.manifest.state };
      // Resuming from an older checkpoint starts a new branch: newer ones are set aside, never used again.
      if (options.resume !== "latest") await store.abandonAfter(checkpoint.step);
    } else if (options.resume !== "latest") {
      throw new Error(`${options.resume}: not a checkpoint of stage "${current.name}"`);
    }
  } else if (options.resume && options.resume !== "latest") {
    throw new Error(`${options.resume}: every stage of this run is finished; there is nothing to resume`);
  }
  const keepLines = resumeFrom?.state.metricsLines ?? progress.stages.at(-1)?.metricsLines ?? 0;
  const metrics = await MetricsLog.open(join(runDir, "metrics.jsonl"), options.resume ? keepLines : 0);

  let base: StageBase = { modelDir, loras: [] };
  const records: StageRecord[] = [];
  for (const [index, stage] of resolved.stages.entries()) {
    const finished = done.get(stage.name);
    if (finished) {
      records.push(finished);
      // An evaluation interrupted after its stage finished runs now (its images resume).
      if (stage.evaluate && !finished.evaluated) {
        await evaluateStage(runDir, stage, base, finished, placement, {
          signal,
          onProgress: (e) => options.onProgress?.({ ...e, phase: "evaluate", what: e.phase, stage: stage.name }),
        });
        finished.evaluated = true;
        await writeFileAtomic(progressPath, JSON.stringify(progress, null, 2));
        await writeTrainingReport(runDir, resolved, records);
      }
      base = nextBase(base, finished);
      continue;
    }
    signal?.throwIfAborted();
    const ctx = {
      stage,
      index,
      runDir,
      base,
      placement,
      seed: resolved.seed,
      metrics,
      resumeFrom: stage === current ? resumeFrom : undefined,
      signal,
      onProgress: options.onProgress,
      cacheDir: options.cacheDir ?? resolved.cache_dir,
      variant: resolved.variant,
    };
    const outcome = await runStage(ctx);
    try {
      options.onProgress?.({ phase: "save", stage: stage.name, step: outcome.steps, total: outcome.steps });
      const record = await saveStageOutputs(outcome, ctx);
      record.metricsLines = metrics.lineCount;
      records.push(record);
      progress.stages.push(record);
      await writeFileAtomic(progressPath, JSON.stringify(progress, null, 2));
    } finally {
      outcome.trainer.dispose();
      outcome.models.dispose();
    }
    await writeTrainingReport(runDir, resolved, records);
    if (stage.evaluate) {
      const record = records.at(-1)!;
      await evaluateStage(runDir, stage, base, record, placement, {
        signal,
        onProgress: (e) => options.onProgress?.({ ...e, phase: "evaluate", what: e.phase, stage: stage.name }),
      });
      record.evaluated = true;
      await writeFileAtomic(progressPath, JSON.stringify(progress, null, 2));
      await writeTrainingReport(runDir, resolved, records);
    }
    base = nextBase(base, records.at(-1)!);
  }
  const report = await writeTrainingReport(runDir, resolved, records);
  return { outputDir: runDir, config: resolved, stages: records, report };
}

/** The next stage trains on this stage's full model, or on its LoRA fused into this stage's base. */
function nextBase(base: StageBase, record: StageRecord): StageBase {
  if (record.fullModel) return { modelDir: record.fullModel, loras: [] };
  const lora = record.loraFiles.kohya ?? record.loraFiles.diffusers ?? record.loraFiles.peft;
  if (!lora) throw new Error(`stage "${record.name}" produced neither a LoRA nor a model to continue from`);
  return { modelDir: base.modelDir, loras: [...base.loras, lora] };
}

/** Keys that may change between a run and its resume without breaking exactness. */
const RESUME_SAFE_KEYS = [
  "checkpointing_steps",
  "checkpoints_total_limit",
  "validation",
  "evaluate",
  "save",
  "cache_dir",
  "device",
];

/** "stages[1].learning_rate"-style paths of every difference that matters for an exact resume. */
function changedKeys(before: Record<string, unknown>, after: Record<string, unknown>): string[] {
  const out: string[] = [];
  const walk = (a: unknown, b: unknown, path: string): void => {
    const key = path.split(/[.[]/).at(-1)!.replace("]", "");
    if (RESUME_SAFE_KEYS.includes(key)) return;
    if (a && b && typeof a === "object" && typeof b === "object" && Array.isArray(a) === Array.isArray(b)) {
      const keys = new Set([...Object.keys(a), ...Object.keys(b)]);
      for (const k of keys) {
        const next = Array.isArray(a) ? `${path}[${k}]` : path ? `${path}.${k}` : k;
        walk((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k], next);
      }
      return;
    }
    if (JSON.stringify(a) !== JSON.stringify(b)) out.push(path);
  };
  walk(before, after, "");
  return out;
}

async function readPreviousConfig(runDir: string): Promise<Record<string, unknown> | undefined> {
  const path = join(runDir, "config.yaml");
  if (!existsSync(path)) return undefined;
  try {
    return JSON.parse(JSON.stringify(parseYaml(await readFile(path, "utf8")))) as Record<string, unknown>;
  } catch {
    return undefined;
  }
}

/** One process trains in a run folder at a time (src/io/lock.ts); a lock its owner left behind is taken over. */
function lockRun(runDir: string): Promise<() => Promise<void>> {
  return acquireFileLock(join(runDir, "run.lock"), {
    busy: (owner) =>
      new Error(`${runDir} is being trained by process ${owner.pid ?? "?"}; wait for it to finish or stop it first`),
  });
}

/** Checks that need the whole config: refused before anything runs, with the stage named. */
function preflight(config: TrainConfig): void {
  for (const [i, stage] of config.stages.entries()) {
    if (
      stage.cache_text_embeddings &&
      i > 0 &&
      config.stages.slice(0, i).some((s) => s.train_text_encoder !== "none")
    ) {
      throw new Error(
        `stages[${i}] ("${stage.name}"): cache_text_embeddings cannot be used after a stage that trained the text encoder ` +
          "(the cache keys on the text encoder's files, which that stage changed); turn it off for this stage",
      );
    }
  }
}

async function readProgress(path: string): Promise<RunProgress> {
  if (!existsSync(path)) return { version: 1, stages: [] };
  try {
    return JSON.parse(await readFile(path, "utf8")) as RunProgress;
  } catch (error) {
    throw new Error(`${path}: unreadable (${(error as Error).message}); it records which stages are done`);
  }
}

async function hasCheckpoints(runDir: string, config: TrainConfig): Promise<boolean> {
  for (const stage of config.stages) {
    const dir = join(stageDir(runDir, stage.name), "checkpoints");
    if (existsSync(dir) && (await readdir(dir)).some((n) => n.startsWith("checkpoint-"))) return true;
  }
  return false;
}

function runInfo(placement: Placement): Record<string, unknown> {
  const info = native().info();
  return {
    sdtune: process.env.npm_package_version,
    node: process.version,
    libtorch: info.libtorchVersion,
    threads: info.threads,
    cuda: info.cuda.devices.map((d) => `${d.name} (sm ${d.capability})`),
    placement,
  };
}
