// `train(config)`: a whole run, one stage after another, each starting from the
// previous stage's result. The run folder holds the resolved config, metrics.jsonl,
// per-stage checkpoints, samples and outputs, and progress.json (which stages are
// done and what they produced), so `resume: "latest"` picks up exactly where a
// crash or Ctrl-C left off.
import { existsSync } from "node:fs";
import { mkdir, readFile } from "node:fs/promises";
import { basename, join, resolve } from "node:path";

import { stringify as toYaml } from "yaml";

import { applyOverrides, loadConfigFile } from "../config/load.js";
import { resolveConfigPaths } from "../config/paths.js";
import { resolveTrainConfig, type TrainConfig } from "../config/train.js";
import { writeFileAtomic } from "../io/atomic.js";
import { acquireFileLock } from "../io/lock.js";
import { native } from "../native/index.js";
import { CheckpointStore, type Checkpoint } from "./checkpoints.js";
import { DataParallel, mainThenBarrier, resolveDistributed, type DistributedSettings } from "./distributed.js";
import { launcherChannel, launchLocal } from "./launch.js";
import { MetricsLog } from "./metrics.js";
import { openRunLogs } from "./logs.js";
import { formatDatasetSummary } from "./dataset_report.js";
import { reopenExtended } from "./extend.js";
import { explainFsError } from "./paths.js";
import { withProgressView, type ProgressMode } from "./progress_view.js";
import { checkResumable } from "./resume_check.js";
import { preflight, type Checked } from "./preflight.js";
import type { Placement } from "./precision.js";
import { saveStageOutputs, type StageRecord } from "./outputs.js";
import { writeTrainingReport } from "./report.js";
import { evaluateStage } from "./evaluate.js";
import { runStage, stageDir, type StageCheckpointState, type StageContext, type StageProgress } from "./stage.js";
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
  /**
   * Data-parallel training (README "Several processes, GPUs or machines"): `nprocPerNode` starts that
   * many worker processes here; rank/worldSize/masterAddr/masterPort join a group (default: the
   * RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT variables torchrun and Slurm scripts set).
   */
  distributed?: DistributedSettings;
  /**
   * Progress on stderr: "auto" (a bar on a terminal, plain lines otherwise, as the CLI does),
   * "bar", "plain" (step, epoch, loss, lr, rate, ETA every `progressInterval` s) or "none" (default).
   */
  progress?: ProgressMode;
  /** Seconds between plain progress lines (default 10; lines also come at each phase's start and end). */
  progressInterval?: number;
}

export type TrainProgress =
  | StageProgress
  | { phase: "download" | "evaluate"; stage?: string; [key: string]: unknown }
  /** Something the user should read: a damaged checkpoint passed over, the dataset report... */
  | { phase: "notice"; stage?: string; message: string; [key: string]: unknown };

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
  const plan = resolveDistributed(options.distributed);
  if (plan.kind === "launch") return withProgressView(options, (o) => launchLocal<TrainResult>(plan, o));
  if (plan.kind === "single") return withProgressView(options, (o) => trainProcess(config, o, undefined));
  // One rank of a group: rank 0 reports (to the launcher, if one started us, which shows the
  // progress; under torchrun or Slurm rank 0 shows it itself); a stop request is agreed on by
  // all ranks at a step boundary (stage_loop.ts).
  const channel = launcherChannel();
  if (channel) return trainRank(config, options, plan, channel);
  return withProgressView(options, (o) => trainRank(config, o, plan, undefined));
}

async function trainRank(
  config: unknown,
  options: TrainOptions,
  plan: Extract<ReturnType<typeof resolveDistributed>, { kind: "join" }>,
  channel: ReturnType<typeof launcherChannel>,
): Promise<TrainResult> {
  const controller = new AbortController();
  options.signal?.addEventListener("abort", () => controller.abort(), { once: true });
  channel?.onStop(() => controller.abort());
  try {
    const dp = await DataParallel.connect(plan);
    const report = channel ? (event: TrainProgress) => channel.send({ sdtune: "progress", event }) : options.onProgress;
    const onProgress = dp.isMain ? report : undefined;
    const result = await trainProcess(config, { ...options, onProgress, signal: controller.signal }, dp);
    channel?.close(dp.isMain ? { sdtune: "result", result } : undefined);
    return result;
  } catch (error) {
    channel?.close({ sdtune: "error", message: (error as Error).message });
    throw error;
  }
}

async function trainProcess(
  config: unknown,
  options: TrainOptions,
  dp: DataParallel | undefined,
): Promise<TrainResult> {
  // A file's relative paths are relative to the file; overrides (typed in a shell) to the working directory.
  let raw = typeof config === "string" ? resolveConfigPaths(await loadConfigFile(config), config) : config;
  const source = typeof config === "string" ? config : "config";
  if (options.overrides?.length) raw = applyOverrides(raw as Record<string, unknown>, options.overrides);
  const resolved = resolveTrainConfig(raw, source);
  const runDir = resolve(resolved.output_dir);
  // Nothing is written before everything the run needs has been checked (downloads: rank 0 first).
  if (dp && !dp.isMain) await dp.barrier();
  const checked = await preflight(resolved, runDir, options);
  if (dp?.isMain) await dp.barrier();
  for (const [stage, summary] of checked.datasets) {
    options.onProgress?.({ phase: "notice", stage, message: formatDatasetSummary(summary) });
  }
  try {
    if (dp?.isMain === false) return await trainLocked(resolved, runDir, options, checked, dp);
    await mkdir(runDir, { recursive: true });
    const release = await lockRun(runDir);
    try {
      return await trainLocked(resolved, runDir, options, checked, dp);
    } finally {
      await release();
    }
  } catch (error) {
    throw explainFsError(error, runDir);
  }
}

/** What the steps of a run share. */
interface Run {
  config: TrainConfig;
  dir: string;
  options: TrainOptions;
  placement: Placement;
  progress: RunProgress;
  /** The stages' records so far, in order (finished ones from progress.json, then new ones). */
  records: StageRecord[];
  checked: Checked;
  /** Data parallel: this process's rank (rank 0 alone writes the run folder). */
  dp?: DataParallel;
}

async function trainLocked(
  resolved: TrainConfig,
  runDir: string,
  options: TrainOptions,
  checked: Checked,
  dp: DataParallel | undefined,
): Promise<TrainResult> {
  const progress = await readProgress(join(runDir, PROGRESS));
  await checkResumable(resolved, runDir, options, progress);
  if (options.resume) {
    await reopenExtended(resolved, runDir, progress.stages, options.onProgress, dp?.isMain !== false);
    await dp?.barrier();
  }
  const { placement, modelDir } = checked;
  await mainThenBarrier(dp, async () => {
    await writeFileAtomic(join(runDir, "config.yaml"), toYaml(resolved));
    await writeFileAtomic(join(runDir, "run.json"), JSON.stringify(runInfo(placement, dp), null, 2));
    for (const [stage, summary] of checked.datasets) {
      await writeFileAtomic(join(stageDir(runDir, stage), "dataset_report.json"), JSON.stringify(summary, null, 2));
    }
  });
  const run: Run = { config: resolved, dir: runDir, options, placement, progress, records: [], checked, dp };
  const done = new Map(progress.stages.map((s) => [s.name, s]));
  // Where to pick up: the first unfinished stage, from its newest checkpoint (or a given one).
  const current = resolved.stages.find((s) => !done.has(s.name));
  const resumeFrom = await findResumePoint(run, current);
  const keepLines = resumeFrom?.state.metricsLines ?? progress.stages.at(-1)?.metricsLines ?? 0;
  const metrics =
    dp?.isMain === false
      ? MetricsLog.discard(options.resume ? keepLines : 0)
      : await openRunLogs(runDir, resolved, options.resume ? keepLines : 0);
  let base: StageBase = { modelDir, loras: [] };
  let exitCode = 1;
  try {
    for (const [index, stage] of resolved.stages.entries()) {
      let record = done.get(stage.name);
      if (record) {
        run.records.push(record);
      } else {
        options.signal?.throwIfAborted();
        const from = stage === current ? resumeFrom : undefined;
        record = await trainStage(run, { stage, index, base, metrics, resumeFrom: from });
        if (dp?.isMain !== false) await writeTrainingReport(runDir, resolved, run.records);
      }
      // An evaluation interrupted after its stage finished runs on resume (its images resume).
      if (stage.evaluate && !record.evaluated) await evaluateRecorded(run, stage, base, record);
      base = nextBase(base, record);
    }
    exitCode = 0;
  } finally {
    await metrics.close(exitCode);
  }
  const report =
    dp?.isMain === false ? join(runDir, "report.html") : await writeTrainingReport(runDir, resolved, run.records);
  return { outputDir: runDir, config: resolved, stages: run.records, report };
}

/** The checkpoint the first unfinished stage continues from (resume), if any. */
async function findResumePoint(
  run: Run,
  current: TrainConfig["stages"][number] | undefined,
): Promise<{ dir: string; state: StageCheckpointState } | undefined> {
  const { resume } = run.options;
  if (!resume) return undefined;
  if (!current) {
    if (resume !== "latest")
      throw new Error(`${resume}: every stage of this run is finished; there is nothing to resume`);
    return undefined;
  }
  const store = new CheckpointStore<StageCheckpointState>(join(stageDir(run.dir, current.name), "checkpoints"));
  const checkpoint =
    resume === "latest" ? await newestCheckpoint(run, store, current.name) : await store.load(resolve(resume));
  if (!checkpoint) return undefined;
  if (checkpoint.manifest.state.stage !== current.name) {
    throw new Error(
      `${checkpoint.dir}: a checkpoint of stage "${checkpoint.manifest.state.stage}", but the next stage to train is "${current.name}"`,
    );
  }
  // Resuming from an older checkpoint starts a new branch: newer ones are set aside, never used again.
  if (resume !== "latest" && run.dp?.isMain !== false) await store.abandonAfter(checkpoint.step);
  return { dir: checkpoint.dir, state: checkpoint.manifest.state };
}

/**
 * `--resume latest`: the stage's newest valid checkpoint. Damaged newer ones are named and
 * passed over; with checkpoints but none valid the resume fails, listing what it found; a
 * stage that never saved one starts from step 0, saying so.
 */
async function newestCheckpoint(
  run: Run,
  store: CheckpointStore<StageCheckpointState>,
  stage: string,
): Promise<Checkpoint<StageCheckpointState> | undefined> {
  const { checkpoint, damaged } = await store.newestValid();
  const notice = (message: string): void => run.options.onProgress?.({ phase: "notice", stage, message });
  const list = damaged.map((d) => `  ${basename(d.dir)}: ${d.reason}`).join("\n");
  if (checkpoint) {
    if (damaged.length) notice(`passing over damaged checkpoints:\n${list}\nresuming from ${checkpoint.dir}`);
    return checkpoint;
  }
  if (damaged.length) {
    throw new Error(
      `--resume latest: stage "${stage}" has no valid checkpoint in ${store.dir}; found:\n${list}\n` +
        "Resume from a checkpoint folder you trust with --resume DIR, or start a new run in another output_dir.",
    );
  }
  notice(`stage "${stage}" has no checkpoint yet; training it from step 0`);
  return undefined;
}

/** Trains one stage, saves its outputs and records it in progress.json. */
async function trainStage(
  run: Run,
  stage: Pick<StageContext, "stage" | "index" | "base" | "metrics" | "resumeFrom">,
): Promise<StageRecord> {
  const { options } = run;
  const ctx: StageContext = {
    ...stage,
    runDir: run.dir,
    placement: run.placement,
    seed: run.config.seed,
    signal: options.signal,
    onProgress: options.onProgress,
    cacheDir: options.cacheDir ?? run.config.cache_dir,
    variant: run.config.variant,
    dp: run.dp,
    refreshReport: run.dp?.isMain === false ? undefined : liveReport(run, stage.stage.name),
  };
  const outcome = await runStage(ctx);
  try {
    options.onProgress?.({ phase: "save", stage: ctx.stage.name, step: outcome.steps, total: outcome.steps });
    // Rank 0 saves; the others then read what it recorded (the next stage starts from it).
    const saved = await mainThenBarrier(run.dp, async () => {
      const record = await saveStageOutputs(outcome, ctx);
      record.metricsLines = ctx.metrics.lineCount;
      await writeFileAtomic(
        join(run.dir, PROGRESS),
        JSON.stringify({ ...run.progress, stages: [...run.progress.stages, record] }, null, 2),
      );
      return record;
    });
    const record = saved ?? (await readProgress(join(run.dir, PROGRESS))).stages.find((s) => s.name === ctx.stage.name);
    if (!record) throw new Error(`stage "${ctx.stage.name}": rank 0 recorded no outputs in ${join(run.dir, PROGRESS)}`);
    run.records.push(record);
    run.progress.stages.push(record);
    return record;
  } finally {
    outcome.trainer.dispose();
    outcome.models.dispose();
  }
}

/** Seconds between rewrites of report.html during a stage (its charts take a moment to render). */
const LIVE_REPORT_SECONDS = 30;

/** The report during training (live curves, the newest validation grid, "step N of M"), at most every 30 s. */
function liveReport(run: Run, stage: string): (step: number, total: number) => Promise<void> {
  let last = -Infinity;
  return async (step, total) => {
    if (performance.now() - last < LIVE_REPORT_SECONDS * 1000) return;
    last = performance.now();
    await writeTrainingReport(run.dir, run.config, run.records, { stage, step, total });
  };
}

/** The stage's closing evaluation, then progress.json and the report say it is done. */
async function evaluateRecorded(
  run: Run,
  stage: TrainConfig["stages"][number],
  base: StageBase,
  record: StageRecord,
): Promise<void> {
  const { signal, onProgress } = run.options;
  const clipModel = run.checked.clipModels.get(stage.evaluate!.clip_model);
  if (run.dp) {
    // Rank 0 evaluates and records it; the others wait, then take its word.
    await mainThenBarrier(run.dp, () => evaluateRecorded({ ...run, dp: undefined }, stage, base, record));
    record.evaluated = true;
    return;
  }
  try {
    await evaluateStage(run.dir, stage, base, record, run.placement, {
      clipModel,
      signal,
      onProgress: (e) => onProgress?.({ ...e, phase: "evaluate", what: e.phase, stage: stage.name }),
    });
  } catch (error) {
    if ((error as Error).name === "AbortError") throw error;
    const saved = [...Object.values(record.loraFiles), ...(record.fullModel ? [record.fullModel] : [])];
    throw new Error(
      `stage "${stage.name}": its evaluation failed (${(error as Error).message}). The stage's outputs are saved ` +
        `(${saved.join(", ")}); fix the cause and run again with --resume latest to evaluate it.`,
      { cause: error },
    );
  }
  record.evaluated = true;
  await writeFileAtomic(join(run.dir, PROGRESS), JSON.stringify(run.progress, null, 2));
  await writeTrainingReport(run.dir, run.config, run.records);
}

/** The next stage trains on this stage's full model, or on its LoRA fused into this stage's base. */
function nextBase(base: StageBase, record: StageRecord): StageBase {
  if (record.fullModel) return { modelDir: record.fullModel, loras: [] };
  const lora = record.loraFiles.kohya ?? record.loraFiles.diffusers ?? record.loraFiles.peft;
  if (!lora) throw new Error(`stage "${record.name}" produced neither a LoRA nor a model to continue from`);
  return { modelDir: base.modelDir, loras: [...base.loras, lora] };
}

/** One process trains in a run folder at a time (src/io/lock.ts); a lock its owner left behind is taken over. */
function lockRun(runDir: string): Promise<() => Promise<void>> {
  return acquireFileLock(join(runDir, "run.lock"), {
    busy: (owner) =>
      new Error(`${runDir} is being trained by process ${owner.pid ?? "?"}; wait for it to finish or stop it first`),
  });
}

async function readProgress(path: string): Promise<RunProgress> {
  if (!existsSync(path)) return { version: 1, stages: [] };
  try {
    return JSON.parse(await readFile(path, "utf8")) as RunProgress;
  } catch (error) {
    throw new Error(`${path}: unreadable (${(error as Error).message}); it records which stages are done`);
  }
}

function runInfo(placement: Placement, dp: DataParallel | undefined): Record<string, unknown> {
  const info = native().info();
  return {
    world_size: dp?.worldSize ?? 1,
    sdtune: process.env.npm_package_version,
    node: process.version,
    libtorch: info.libtorchVersion,
    threads: info.threads,
    cuda: info.cuda.devices.map((d) => `${d.name} (sm ${d.capability})`),
    placement,
  };
}
