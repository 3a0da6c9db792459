// metrics.jsonl: one JSON object per optimizer step (and per event), appended as
// training goes. A resumed run first cuts the file back to the line count its
// checkpoint recorded, so the log reads exactly like an uninterrupted run's.
import { existsSync } from "node:fs";
import { appendFile, readFile, truncate } from "node:fs/promises";

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

export class MetricsLog {
  private lines = 0;
  private discarding = false;

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

  async append(record: Record<string, unknown>): Promise<void> {
    if (!this.discarding) await appendFile(this.path, `${JSON.stringify(record)}\n`);
    this.lines++;
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
