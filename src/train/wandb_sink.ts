// `report_to: wandb`: the run's metrics as a W&B offline run, <output_dir>/wandb/
// offline-run-<time>-<id>/ (as `wandb offline` lays it out): run-<id>.wandb (the binary log
// `wandb sync` reads: src/io/wandb_log.ts), and for people files/config.yaml and
// files/wandb-summary.json. Like the TensorBoard files it is rebuilt from metrics.jsonl when a
// run resumes (same run id), so it never holds a step twice.
import { randomBytes } from "node:crypto";
import { mkdir, readdir, rm } from "node:fs/promises";
import { hostname } from "node:os";
import { basename, join } from "node:path";

import { stringify as toYaml } from "yaml";

import type { TrainConfig } from "../config/train.js";
import { writeFileAtomic } from "../io/atomic.js";
import { wandbRecord, WandbLogWriter } from "../io/wandb_log.js";
import type { MetricsSink } from "./metrics.js";

const RUN_FOLDER = /^offline-run-\d{8}_\d{6}-([a-z0-9]+)$/;

export class WandbSink implements MetricsSink {
  private step = 0;
  private readonly summary = new Map<string, unknown>();

  private constructor(
    readonly folder: string,
    private readonly writer: WandbLogWriter,
    private readonly config: TrainConfig,
    private readonly startTime: number,
  ) {}

  /** Replaces the run's offline folder with one holding `kept` (the lines metrics.jsonl kept). */
  static async open(runDir: string, config: TrainConfig, kept: Record<string, unknown>[]): Promise<WandbSink> {
    const dir = join(runDir, "wandb");
    await mkdir(dir, { recursive: true });
    let id: string | undefined;
    for (const name of await readdir(dir)) {
      const match = RUN_FOLDER.exec(name);
      if (!match) continue;
      id ??= match[1];
      await rm(join(dir, name), { recursive: true, force: true });
    }
    id ??= randomId();
    const first = kept[0]?.time;
    const startTime = typeof first === "number" ? first : Date.now() / 1000;
    const folder = join(dir, `offline-run-${stamp(startTime)}-${id}`);
    await mkdir(join(folder, "files"), { recursive: true });
    const writer = await WandbLogWriter.create(join(folder, `run-${id}.wandb`));
    await writer.write(wandbRecord.header(writer.next()));
    const entries = Object.entries(JSON.parse(JSON.stringify(config)) as Record<string, unknown>);
    const run = { id, project: "sdtune", name: basename(runDir), host: hostname(), startTime, config: entries };
    await writer.write(wandbRecord.run(writer.next(), run));
    const sink = new WandbSink(folder, writer, config, startTime);
    for (const record of kept) await sink.write(record);
    await writer.sync();
    return sink;
  }

  /** One history row: `<stage>/<field>` for each number, with W&B's _step, _runtime and _timestamp. */
  async write(record: Record<string, unknown>): Promise<void> {
    const { stage, time } = record;
    if (typeof stage !== "string") return;
    const now = typeof time === "number" ? time : Date.now() / 1000;
    const row: [string, unknown][] = [];
    for (const [key, value] of Object.entries(record)) {
      if (key !== "time" && typeof value === "number") row.push([`${stage}/${key}`, value]);
    }
    row.push(["_step", this.step], ["_runtime", now - this.startTime], ["_timestamp", now]);
    await this.writer.write(wandbRecord.history(this.writer.next(), this.step, row));
    for (const [key, value] of row) this.summary.set(key, value);
    this.step++;
  }

  sync(): Promise<void> {
    return this.writer.sync();
  }

  /** Ends the log as wandb does (summary, exit, final) and writes the readable files. */
  async close(exitCode = 0): Promise<void> {
    const summary = [...this.summary.entries()];
    const runtime = Math.max(0, Date.now() / 1000 - this.startTime);
    await this.writer.write(wandbRecord.summary(this.writer.next(), summary));
    await this.writer.write(wandbRecord.exit(this.writer.next(), exitCode, runtime));
    await this.writer.write(wandbRecord.final(this.writer.next()));
    await this.writer.close();
    const files = join(this.folder, "files");
    await writeFileAtomic(join(files, "wandb-summary.json"), JSON.stringify(Object.fromEntries(summary)));
    const config: Record<string, unknown> = { wandb_version: 1 };
    for (const [key, value] of Object.entries(this.config)) config[key] = { desc: null, value };
    await writeFileAtomic(join(files, "config.yaml"), toYaml(JSON.parse(JSON.stringify(config))));
  }
}

function randomId(): string {
  const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789";
  return [...randomBytes(8)].map((b) => alphabet[b % alphabet.length]).join("");
}

/** wandb's folder time stamp, YYYYMMDD_HHMMSS (local time). */
function stamp(unixSeconds: number): string {
  const d = new Date(unixSeconds * 1000);
  const p = (n: number) => String(n).padStart(2, "0");
  return `${d.getFullYear()}${p(d.getMonth() + 1)}${p(d.getDate())}_${p(d.getHours())}${p(d.getMinutes())}${p(d.getSeconds())}`;
}
