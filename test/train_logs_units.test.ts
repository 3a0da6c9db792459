// The pieces of a run's logs, without training: TensorBoard framing and events (read back by an
// independent decoder), plain progress lines, report_to, kohya/diffusers key names in config
// errors, and config-relative paths.
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { mkdir, writeFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { stringify as toYaml } from "yaml";

import { resolveConfigPath, resolveConfigPaths } from "../src/config/paths.js";
import { resolveTrainConfig } from "../src/config/train.js";
import { crc32c, maskedCrc32c } from "../src/io/crc32c.js";
import { EventFileWriter, eventFileName } from "../src/io/tensorboard.js";
import { frameRecord, wandbFileHeader } from "../src/io/wandb_log.js";
import { TrainProgressView, resolveProgressMode } from "../src/train/progress_view.js";
import { checkResumable } from "../src/train/resume_check.js";
import { repoRoot, tempDir } from "./helpers/fixtures.js";
import { crc32cBitwise, readEventFile } from "./helpers/tfevents.js";
import { scanRecords } from "./helpers/wandb_log.js";
import { minimal, problems } from "./helpers/train_config.js";

let dir: { path: string; cleanup(): Promise<void> };
beforeAll(async () => {
  dir = await tempDir("sdtune-logs-units-");
});
afterAll(async () => dir.cleanup());

describe("TensorBoard event files", () => {
  it("CRC-32C matches the bitwise definition and the catalogue's check value", () => {
    // The CRC catalogue's check value of CRC-32/ISCSI: crc("123456789").
    expect(crc32cBitwise(Buffer.from("123456789"))).toBe(0xe3069283);
    for (const text of ["", "a", "123456789", "x".repeat(1000)]) {
      expect(crc32c(Buffer.from(text))).toBe(crc32cBitwise(Buffer.from(text)));
    }
    expect(maskedCrc32c(Buffer.from("a"))).not.toBe(crc32c(Buffer.from("a")));
  });

  it("writes a file-version event, then scalars an independent decoder reads back", async () => {
    const folder = join(dir.path, "tb");
    await mkdir(folder);
    const writer = await EventFileWriter.create(folder, 1_700_000_000.25);
    await writer.scalars(1, 1_700_000_001.5, { "train/loss": 0.125, "train/lr": 1e-4 });
    await writer.scalars(300, 1_700_000_002.5, { "train/loss": Number.NaN });
    await writer.close();
    expect(writer.path).toBe(join(folder, eventFileName(1_700_000_000.25)));
    expect(writer.path).toMatch(/events\.out\.tfevents\.1700000000\.[\w.-]+$/);
    const events = readEventFile(writer.path);
    expect(events).toHaveLength(3);
    expect(events[0]).toMatchObject({ wallTime: 1_700_000_000.25, fileVersion: "brain.Event:2", scalars: {} });
    expect(events[1]).toMatchObject({ wallTime: 1_700_000_001.5, step: 1 });
    expect(events[1]!.scalars["train/loss"]).toBe(0.125);
    expect(events[1]!.scalars["train/lr"]).toBe(Math.fround(1e-4));
    expect(events[2]!.step).toBe(300);
    expect(events[2]!.scalars["train/loss"]).toBeNaN();
  });
});

describe("W&B log framing", () => {
  it("is byte for byte what wandb's DataStore writes, and reads back whole", () => {
    // test/fixtures/wandb-log.json (scripts/fixtures/wandb_log.py): payload sizes hitting every
    // case (FULL; zero padding of a block tail; an empty FIRST fragment where exactly a header's
    // room is left; FIRST/MIDDLE/LAST across blocks), and the file wandb wrote for them.
    const golden = JSON.parse(readFileSync(join(repoRoot, "test", "fixtures", "wandb-log.json"), "utf8")) as {
      sizes: number[];
      length: number;
      sha256: string;
    };
    const records = golden.sizes.map((n, i) => Buffer.alloc(n, i + 1));
    let file = wandbFileHeader();
    for (const r of records) file = Buffer.concat([file, frameRecord(r, file.length)]);
    expect(file.length).toBe(golden.length);
    expect(createHash("sha256").update(file).digest("hex")).toBe(golden.sha256);
    expect(scanRecords(file)).toEqual(records);
  });
});

describe("progress view", () => {
  function capture(mode: "auto" | "plain" | "none", isTTY = false) {
    let text = "";
    let clock = 0;
    const stream = { isTTY, write: (s: string) => ((text += s), true) } as unknown as NodeJS.WriteStream;
    const view = new TrainProgressView({ mode, stream, intervalSeconds: 10, now: () => clock });
    return { view, lines: () => text.split("\n").filter(Boolean), tick: (ms: number) => (clock += ms) };
  }
  const step = (n: number, total = 100) => ({
    phase: "train" as const,
    stage: "train",
    step: n,
    total,
    epoch: 0,
    loss: 0.5,
    lr: 1e-4,
  });

  it("auto is a bar on a terminal and plain lines elsewhere", () => {
    expect(resolveProgressMode("auto", { isTTY: true })).toBe("bar");
    expect(resolveProgressMode("auto", { isTTY: false })).toBe("plain");
    expect(resolveProgressMode("none", { isTTY: true })).toBe("none");
  });

  it("plain: a line at the start, then every interval, and at the end, with rate and ETA", () => {
    const { view, lines, tick } = capture("auto");
    view.show({ phase: "train", stage: "train", step: 0, total: 100 });
    for (let n = 1; n <= 100; n++) {
      tick(1000); // one step per second
      view.show(step(n));
    }
    view.done();
    const out = lines();
    expect(out[0]).toBe("train: training step 0/100 (0%) elapsed 0:00 ETA --:--");
    // Steps 10, 20, ... 100: one line per 10 s.
    expect(out).toHaveLength(11);
    expect(out[1]).toBe(
      "train: training step 10/100 (10%) epoch 1 loss 0.5000 lr 1.000e-4 1.000 step/s elapsed 0:10 ETA 1:30",
    );
    expect(out.at(-1)).toBe(
      "train: training step 100/100 (100%) epoch 1 loss 0.5000 lr 1.000e-4 1.000 step/s elapsed 1:40",
    );
  });

  it("plain: notices and validation on their own lines; none prints nothing", () => {
    const plain = capture("plain");
    plain.view.show({ phase: "notice", stage: "train", message: "dataset: 4 images" });
    plain.view.show({ phase: "validation", stage: "train", step: 50, total: 100 });
    expect(plain.lines()).toEqual(["train: dataset: 4 images", "train: validation samples at step 50"]);
    const none = capture("none");
    none.view.show(step(1));
    none.view.show({ phase: "notice", message: "x" });
    expect(none.lines()).toEqual([]);
  });
});

describe("config: report_to and foreign key names", () => {
  it("report_to takes diffusers' spellings: one name, a list, all or none", () => {
    expect(resolveTrainConfig(minimal).report_to).toEqual([]);
    expect(resolveTrainConfig({ ...minimal, report_to: "tensorboard" }).report_to).toEqual(["tensorboard"]);
    expect(resolveTrainConfig({ ...minimal, report_to: "all" }).report_to).toEqual(["tensorboard", "wandb"]);
    expect(resolveTrainConfig({ ...minimal, report_to: ["none"] }).report_to).toEqual([]);
    expect(problems({ ...minimal, report_to: "comet" })[0]).toMatch(/^report_to: /);
  });

  it("kohya and diffusers keys get sdtune's name", () => {
    const found = problems({
      ...minimal,
      network_dim: 8,
      network_alpha: 4,
      unet_lr: 1e-4,
      train_data_dir: "img",
      pretrained_model_name_or_path: "x",
      use_8bit_adam: true,
    }).join("\n");
    expect(found).toContain(
      'network_dim: unknown key (did you mean "lora.rank"? kohya\'s "network_dim" is "lora.rank" in sdtune)',
    );
    expect(found).toContain(
      'network_alpha: unknown key (did you mean "lora.alpha"? kohya\'s "network_alpha" is "lora.alpha" in sdtune)',
    );
    expect(found).toContain(
      'unet_lr: unknown key (did you mean "learning_rate"? kohya\'s "unet_lr" is "learning_rate" in sdtune)',
    );
    expect(found).toMatch(/train_data_dir: unknown key \(did you mean "dataset.path"\?/);
    expect(found).toMatch(/pretrained_model_name_or_path: .*"model"/);
    expect(found).toMatch(/use_8bit_adam: .*optimizer: adamw8bit/);
    // Inside stages[] too, and a plain misspelling still gets the nearest key.
    const staged = problems({ ...minimal, stages: [{ network_dim: 8 }, { lerning_rate: 1 }] });
    expect(staged[0]).toMatch(/^stages\[0\]\.network_dim: unknown key \(did you mean "lora.rank"\?/);
    expect(staged[1]).toBe('stages[1].lerning_rate: unknown key (did you mean "learning_rate"?)');
  });
});

describe("config-relative paths", () => {
  const base = resolve("/configs/run");

  it("path keys resolve against the config's folder; ids stay ids unless they exist there", async () => {
    expect(resolveConfigPath("out", "path", base)).toBe(join(base, "out"));
    expect(resolveConfigPath("/abs/out", "path", base)).toBe("/abs/out");
    expect(resolveConfigPath("~/out", "path", base)).toBe("~/out");
    expect(resolveConfigPath("org/name", "path-or-id", base)).toBe("org/name");
    expect(resolveConfigPath("./org/name", "path-or-id", base)).toBe(join(base, "org/name"));
    expect(resolveConfigPath("../data", "path-or-id", base)).toBe(resolve(base, "../data"));
    expect(resolveConfigPath("a/b/c", "path-or-id", base)).toBe(join(base, "a/b/c"));
    await mkdir(join(dir.path, "org", "name"), { recursive: true });
    expect(resolveConfigPath("org/name", "path-or-id", dir.path)).toBe(join(dir.path, "org", "name"));
  });

  it("rewrites a config file's run, stage-default and per-stage paths", () => {
    const file = join(base, "run.yaml");
    const raw = {
      model: "org/model",
      output_dir: "runs/a",
      cache_dir: "cache",
      dataset: { path: "./pictures" },
      prior_preservation: { class_prompt: "dog", class_data_dir: "classes" },
      stages: [{ dataset: { path: "org/dataset" } }, { evaluate: { prompts: ["x"], instance_images: "inst" } }],
    };
    const out = resolveConfigPaths(raw, file) as typeof raw & { stages: Record<string, Record<string, string>>[] };
    expect(out).toMatchObject({
      model: "org/model",
      output_dir: join(base, "runs/a"),
      cache_dir: join(base, "cache"),
      dataset: { path: join(base, "pictures") },
      prior_preservation: { class_data_dir: join(base, "classes") },
    });
    expect(out.stages[0]!.dataset!.path).toBe("org/dataset");
    expect(out.stages[1]!.evaluate!.instance_images).toBe(join(base, "inst"));
    expect(raw.output_dir).toBe("runs/a");
  });

  it("a run saved with cwd-relative paths resumes under the same paths made absolute", async () => {
    const runDir = join(dir.path, "old-run");
    const saved = resolveTrainConfig({ ...minimal, output_dir: runDir, dataset: { path: "data" } });
    await mkdir(runDir, { recursive: true });
    await writeFile(join(runDir, "config.yaml"), toYaml(saved));
    const now = resolveTrainConfig({ ...minimal, output_dir: runDir, dataset: { path: resolve("data") } });
    await expect(checkResumable(now, runDir, { resume: "latest" }, { stages: [{}] })).resolves.toBeUndefined();
    const moved = resolveTrainConfig({ ...minimal, output_dir: runDir, dataset: { path: resolve("other") } });
    await expect(checkResumable(moved, runDir, { resume: "latest" }, { stages: [{}] })).rejects.toThrow(
      /differs from the run being resumed in stages\[0\]\.dataset\.path/,
    );
  });
});
