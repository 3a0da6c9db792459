// The run's logs besides metrics.jsonl, each fed the same per-step lines (config `report_to`):
// TensorBoard event files in <output_dir>/logs/, a W&B offline run in <output_dir>/wandb/
// (src/train/wandb_sink.ts). metrics.jsonl is the record they are
// rebuilt from: a resumed run (whose metrics.jsonl was cut back to its checkpoint) rewrites
// them from the kept lines, so no log ever shows a step twice.
import { mkdir, readdir, rm } from "node:fs/promises";
import { join } from "node:path";

import type { TrainConfig } from "../config/train.js";
import { EventFileWriter } from "../io/tensorboard.js";
import { MetricsLog, type MetricsSink } from "./metrics.js";
import { WandbSink } from "./wandb_sink.js";

/** Where the TensorBoard event files go: `tensorboard --logdir <output_dir>` (or this folder) shows them. */
export function tensorboardDir(runDir: string): string {
  return join(runDir, "logs");
}

/** Opens metrics.jsonl (kept to `keepLines` lines) with the logs `report_to` asks for attached. */
export async function openRunLogs(runDir: string, config: TrainConfig, keepLines: number): Promise<MetricsLog> {
  const metrics = await MetricsLog.open(join(runDir, "metrics.jsonl"), keepLines);
  const kept = config.report_to.length ? await metrics.records() : [];
  try {
    if (config.report_to.includes("tensorboard")) {
      metrics.addSink(await TensorBoardSink.open(tensorboardDir(runDir), kept));
    }
    if (config.report_to.includes("wandb")) metrics.addSink(await WandbSink.open(runDir, config, kept));
  } catch (error) {
    await metrics.close(1);
    throw error;
  }
  return metrics;
}

/**
 * One event file per process: every numeric field of a metrics line becomes the scalar
 * `<stage>/<field>` at the stage's step, stamped with the line's wall time.
 */
export class TensorBoardSink implements MetricsSink {
  private constructor(private readonly writer: EventFileWriter) {}

  /** Replaces the event files in `dir` with one holding `kept` (the lines metrics.jsonl kept). */
  static async open(dir: string, kept: Record<string, unknown>[]): Promise<TensorBoardSink> {
    await mkdir(dir, { recursive: true });
    for (const name of await readdir(dir)) {
      if (name.startsWith("events.out.tfevents.")) await rm(join(dir, name), { force: true });
    }
    const sink = new TensorBoardSink(await EventFileWriter.create(dir));
    for (const record of kept) await sink.write(record);
    await sink.sync();
    return sink;
  }

  async write(record: Record<string, unknown>): Promise<void> {
    const { stage, step, time } = record;
    if (typeof stage !== "string" || typeof step !== "number") return;
    const scalars: Record<string, number> = {};
    for (const [key, value] of Object.entries(record)) {
      if (key !== "step" && key !== "time" && typeof value === "number") scalars[`${stage}/${key}`] = value;
    }
    await this.writer.scalars(step, typeof time === "number" ? time : Date.now() / 1000, scalars);
  }

  sync(): Promise<void> {
    return this.writer.sync();
  }

  close(): Promise<void> {
    return this.writer.close();
  }
}
