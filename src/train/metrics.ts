// metrics.jsonl: one JSON object per optimizer step (and per event), appended as
// training goes and fsynced at most every SYNC_SECONDS (and before each checkpoint), so a
// crash loses at most a few seconds of lines. A resumed run first cuts the file back to the
// line count its checkpoint recorded, so the log reads exactly like an uninterrupted run's.
// Each line is also handed to the run's other logs (TensorBoard, W&B: src/train/logs.ts).
import { existsSync } from "node:fs";
import { appendFile, open, readFile, truncate } from "node:fs/promises";

export interface StepMetrics {
  stage: string;
  step: number;
  loss: number;
  lr: number;
  grad_norm: number;
  loss_scale: number;
  step_time: number;
  images_per_sec: number;
  epoch: number;
  overflow_steps?: number;
  prior_loss?: number;
  [key: string]: unknown;
}

/** Another log fed the same lines (TensorBoard event files, a W&B offline run). */
export interface MetricsSink {
  write(record: Record<string, unknown>): Promise<void>;
  /** Makes what was written durable. */
  sync(): Promise<void>;
  /** Ends the log; `exitCode` 0 when the run ended well. */
  close(exitCode?: number): Promise<void>;
}

const SYNC_SECONDS = 5;

export class MetricsLog {
  private lines = 0;
  private discarding = false;
  private readonly sinks: MetricsSink[] = [];
  private lastSync = performance.now();

  private constructor(readonly path: string) {}

  /** A log that counts lines and writes none (data parallel: every rank but rank 0). */
  static discard(lines: number): MetricsLog {
    const log = new MetricsLog("");
    log.lines = lines;
    log.discarding = true;
    return log;
  }

  /** Opens the log; with `keepLines`, drops everything after that many lines (resume). */
  static async open(path: string, keepLines?: number): Promise<MetricsLog> {
    const log = new MetricsLog(path);
    if (!existsSync(path)) return log;
    const text = await readFile(path, "utf8");
    const lines = text.split("\n").filter((l, i, all) => l.length > 0 || i < all.length - 1);
    const keep = keepLines ?? lines.length;
    if (keep < lines.length) {
      const bytes = Buffer.byteLength(
        lines
          .slice(0, keep)
          .map((l) => `${l}\n`)
          .join(""),
      );
      await truncate(path, bytes);
    }
    log.lines = Math.min(keep, lines.length);
    return log;
  }

  get lineCount(): number {
    return this.lines;
  }

  /** The lines kept so far (what a resumed run's other logs are rebuilt from). */
  async records(): Promise<Record<string, unknown>[]> {
    return existsSync(this.path) ? readMetrics(this.path) : [];
  }

  addSink(sink: MetricsSink): void {
    this.sinks.push(sink);
  }

  async append(record: Record<string, unknown>): Promise<void> {
    if (!this.discarding) await appendFile(this.path, `${JSON.stringify(record)}\n`);
    this.lines++;
    for (const sink of this.sinks) await sink.write(record);
    if (performance.now() - this.lastSync >= SYNC_SECONDS * 1000) await this.sync();
  }

  /** fsyncs metrics.jsonl and every sink (a checkpoint's line count then matches lines on disk). */
  async sync(): Promise<void> {
    this.lastSync = performance.now();
    if (existsSync(this.path)) {
      const handle = await open(this.path, "r");
      try {
        await handle.datasync();
      } finally {
        await handle.close();
      }
    }
    for (const sink of this.sinks) await sink.sync();
  }

  async close(exitCode = 0): Promise<void> {
    await this.sync();
    for (const sink of this.sinks.splice(0)) await sink.close(exitCode);
  }
}

/** Reads a metrics.jsonl (skipping a torn last line, as a crash can leave one). */
export async function readMetrics(path: string): Promise<Record<string, unknown>[]> {
  const text = await readFile(path, "utf8");
  const out: Record<string, unknown>[] = [];
  for (const line of text.split("\n")) {
    if (!line.trim()) continue;
    try {
      out.push(JSON.parse(line) as Record<string, unknown>);
    } catch {
      // A line cut by a crash mid-write.
    }
  }
  return out;
}
