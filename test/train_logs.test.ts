// A run's live logs on the tiny model: metrics.jsonl and TensorBoard event files (read back by
// an independent decoder) hold each step once, also after resuming from an older checkpoint;
// report.html is written during training; `sdtune train` outside a terminal prints plain
// progress lines, and a config file's relative paths resolve against its folder.
import { spawn } from "node:child_process";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { readMetrics } from "../src/train/metrics.js";
import { train } from "../src/train/run.js";
import { fixture, repoRoot, tempDir } from "./helpers/fixtures.js";
import { writeImage, writeText } from "./helpers/images.js";
import { fields, one, text } from "./helpers/protobuf.js";
import { readEventFile } from "./helpers/tfevents.js";
import { jsonItems, readWandbLog } from "./helpers/wandb_log.js";

let dir: { path: string; cleanup(): Promise<void> };
let data: string;

beforeAll(async () => {
  dir = await tempDir("sdtune-train-logs-");
  data = join(dir.path, "cfg", "data");
  for (let i = 0; i < 3; i++) await writeImage(join(data, `img${i}.png`), { width: 16, height: 16, seed: i });
  await writeText(
    join(data, "metadata.jsonl"),
    [0, 1, 2].map((i) => JSON.stringify({ file_name: `img${i}.png`, text: `picture ${i}` })).join("\n"),
  );
});
afterAll(async () => dir.cleanup());

const config = (out: string) => ({
  model: fixture("tiny-sd"),
  output_dir: out,
  dataset: { path: data },
  resolution: 16,
  max_train_steps: 4,
  checkpointing_steps: 2,
  learning_rate: 1e-3,
  report_to: ["tensorboard", "wandb"],
});

/** The run's one W&B offline folder and its id. */
function wandbRun(out: string): { folder: string; id: string } {
  const names = readdirSync(join(out, "wandb"));
  expect(names).toHaveLength(1);
  const id = /^offline-run-\d{8}_\d{6}-([a-z0-9]+)$/.exec(names[0]!)![1]!;
  return { folder: join(out, "wandb", names[0]!), id };
}

describe("live training logs", () => {
  it("TensorBoard and metrics.jsonl hold each step once after resuming from an older checkpoint; the report is live", async () => {
    const out = join(dir.path, "run");
    const controller = new AbortController();
    let liveReport = "";
    const stopped = await train(config(out), {
      signal: controller.signal,
      onProgress: (e) => {
        if (e.phase !== "train" || e.step !== 3) return;
        liveReport = readFileSync(join(out, "report.html"), "utf8");
        controller.abort();
      },
    }).catch((e: Error) => e);
    expect((stopped as Error).name).toBe("AbortError");
    // Written at the step-2 checkpoint, while the stage was still training.
    expect(liveReport).toContain("training: step 2 of 4");
    expect(liveReport).toContain('http-equiv="refresh"');
    expect((await readMetrics(join(out, "metrics.jsonl"))).map((m) => m.step)).toEqual([1, 2, 3]);
    const before = wandbRun(out);

    // Back to checkpoint-2: step 3 is trained again, and no log may show it twice.
    await train(config(out), { resume: join(out, "train", "checkpoints", "checkpoint-2") });
    const metrics = await readMetrics(join(out, "metrics.jsonl"));
    expect(metrics.map((m) => m.step)).toEqual([1, 2, 3, 4]);
    expect(metrics.every((m) => typeof m.time === "number" && typeof m.epoch === "number")).toBe(true);
    const files = readdirSync(join(out, "logs")).filter((n) => n.startsWith("events.out.tfevents."));
    expect(files).toHaveLength(1);
    const events = readEventFile(join(out, "logs", files[0]!));
    expect(events[0]!.fileVersion).toBe("brain.Event:2");
    const steps = events.slice(1);
    expect(steps.map((e) => e.step)).toEqual([1, 2, 3, 4]);
    steps.forEach((e, i) => {
      const m = metrics[i]!;
      expect(e.scalars["train/loss"]).toBe(Math.fround(m.loss as number));
      expect(e.scalars["train/lr"]).toBe(Math.fround(m.lr as number));
      expect(e.scalars["train/grad_norm"]).toBe(Math.fround(m.grad_norm as number));
      expect(e.wallTime).toBe(m.time);
    });
    expect(readFileSync(join(out, "report.html"), "utf8")).not.toContain('http-equiv="refresh"');

    // The W&B offline run: rebuilt under the same id, header, run, one history row per step, summary, exit 0, final.
    const { folder, id } = wandbRun(out);
    expect(id).toBe(before.id);
    const records = readWandbLog(join(folder, `run-${id}.wandb`));
    expect(records.map((r) => r.num)).toEqual(records.map((_, i) => i + 1));
    expect(records.map((r) => r.type)).toEqual([21, 17, 2, 2, 2, 2, 3, 18, 20]);
    const run = records[1]!.body;
    expect(text(one(run, 1))).toBe(id);
    const runConfig = jsonItems(fields(one(run, 4).value as Buffer)) as { stages: { max_train_steps: number }[] };
    expect(runConfig.stages[0]!.max_train_steps).toBe(4);
    records.slice(2, 6).forEach((r, i) => {
      const row = jsonItems(r.body);
      expect(row).toMatchObject({
        _step: i,
        "train/step": i + 1,
        "train/loss": metrics[i]!.loss,
        "train/lr": metrics[i]!.lr,
      });
      expect(row._timestamp).toBe(metrics[i]!.time);
      expect(one(fields(one(r.body, 2).value as Buffer), 1).value).toBe(i);
    });
    expect(jsonItems(records[6]!.body)["train/loss"]).toBe(metrics[3]!.loss);
    expect(one(records[7]!.body, 1).value).toBe(0);
    const summary = JSON.parse(readFileSync(join(folder, "files", "wandb-summary.json"), "utf8"));
    expect(summary["train/step"]).toBe(4);
    expect(readFileSync(join(folder, "files", "config.yaml"), "utf8")).toContain("wandb_version: 1");
  });

  it("sdtune train outside a terminal prints plain progress lines; the config's relative paths are its folder's", async () => {
    const file = join(dir.path, "cfg", "run.yaml");
    await writeFile(
      file,
      [
        `model: ${fixture("tiny-sd")}`,
        "output_dir: out",
        "dataset: {path: data}",
        "resolution: 16",
        "max_train_steps: 2",
        "learning_rate: 0.001",
        "",
      ].join("\n"),
    );
    const child = spawn(
      process.execPath,
      [
        "--import",
        "tsx",
        join(repoRoot, "test", "helpers", "cli.mjs"),
        "train",
        "-c",
        file,
        "--progress-interval",
        "0.001",
      ],
      { cwd: repoRoot, stdio: ["ignore", "ignore", "pipe"] },
    );
    let stderr = "";
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    const code = await new Promise((done) => child.on("exit", done));
    expect(code, stderr).toBe(0);
    const lines = stderr.split("\n");
    expect(lines).toContain("train: training step 0/2 (0%) elapsed 0:00 ETA --:--");
    const step = (n: number) => lines.find((l) => l.startsWith(`train: training step ${n}/2 (`));
    expect(step(1)).toMatch(
      /^train: training step 1\/2 \(50%\) epoch \d+ loss \S+ lr 1\.000e-3 \S+ step\/s elapsed \S+ ETA \S+$/,
    );
    expect(step(2)).toMatch(
      /^train: training step 2\/2 \(100%\) epoch \d+ loss \S+ lr 1\.000e-3 \S+ step\/s elapsed \S+$/,
    );
    expect(stderr).not.toContain("\r");
    expect(existsSync(join(dir.path, "cfg", "out", "metrics.jsonl"))).toBe(true);
    expect(readFileSync(join(dir.path, "cfg", "out", "config.yaml"), "utf8")).toContain(`path: ${data}`);
  });
});
