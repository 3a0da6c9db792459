// Safe by construction, inputs side: links out of a dataset are not followed, a FIFO
// named .safetensors is refused instead of hanging, `train` reports the dataset (kept,
// skipped with reasons, captionless) and records it; preflight finds a wrong dataset,
// model, device, precision or CLIP model before anything is written; and the messages
// for unwritable folders, full disks, deeply nested JSON, bad betas and empty vocabularies.
import { execFileSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { cp, mkdir, symlink, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { resolveTrainConfig } from "../src/config/train.js";
import { openDataset } from "../src/data/index.js";
import { readSafetensors } from "../src/io/safetensors.js";
import { loadLoraFile } from "../src/lora/index.js";
import { parseSchedulerConfig } from "../src/sched/config.js";
import { ClipTokenizer } from "../src/text/clip_tokenizer.js";
import { datasetSummary } from "../src/train/dataset_report.js";
import { explainFsError } from "../src/train/paths.js";
import { train, type TrainProgress } from "../src/train/run.js";
import { fixture, tempDir } from "./helpers/fixtures.js";
import { writeImage } from "./helpers/images.js";

let dir: { path: string; cleanup(): Promise<void> };
let data: string;
let outside: string;
beforeAll(async () => {
  dir = await tempDir("sdtune-safety-data-");
  data = join(dir.path, "data");
  outside = join(dir.path, "secret.png");
  for (let i = 0; i < 3; i++) await writeImage(join(data, `img${i}.png`), { width: 20, height: 20, seed: 30 + i });
  await writeImage(outside, { width: 20, height: 20, seed: 99 });
  await symlink(outside, join(data, "escape.png"));
  await mkdir(join(data, "sub"));
  await symlink(join(data, "img0.png"), join(data, "sub", "inside.png"));
});
afterAll(async () => dir.cleanup());

const base = (out: string, extra: Record<string, unknown> = {}) => ({
  model: fixture("tiny-sd"),
  output_dir: out,
  dataset: { path: data },
  resolution: 16,
  max_train_steps: 1,
  ...extra,
});

describe("datasets", () => {
  it("links out of the dataset folder are skipped with a reason; links inside are kept", async () => {
    const dataset = await openDataset({ path: data });
    const names = dataset.items.map((i) => i.name);
    expect(names).toContain("sub/inside.png");
    expect(names).not.toContain("escape.png");
    const skip = dataset.report.find((r) => r.file === "escape.png");
    expect(skip?.code).toBe("unsafe-path");
    expect(skip?.skipped).toBe(true);
    expect(skip?.reason).toContain("outside the dataset folder");
  });

  it("a FIFO named .safetensors is refused at once instead of hanging", async () => {
    const fifo = join(dir.path, "pipe.safetensors");
    execFileSync("mkfifo", [fifo]);
    await expect(readSafetensors(fifo)).rejects.toThrow(/pipe\.safetensors: not a regular file/);
    await expect(loadLoraFile(fifo)).rejects.toThrow(/not a regular file/);
  });

  it("train prints the dataset report and records it in the stage folder", async () => {
    const out = join(dir.path, "reported");
    const notices: string[] = [];
    const onProgress = (e: TrainProgress) => void (e.phase === "notice" && notices.push(String(e.message)));
    await train(base(out), { onProgress });
    const text = notices.join("\n");
    expect(text).toMatch(/4 train images kept/);
    expect(text).toMatch(/skipped 1 file:\n\s+escape\.png: a link to .*outside the dataset folder/);
    expect(text).toMatch(/4 images have no caption \(trained unconditionally\)/);
    const recorded = JSON.parse(readFileSync(join(out, "train", "dataset_report.json"), "utf8"));
    expect(recorded.kept).toEqual({ train: 4 });
    expect(recorded.captionless).toBe(4);
    expect(recorded.skipped.map((s: { file: string }) => s.file)).toEqual(["escape.png"]);
  });
});

describe("DreamBooth prompts", () => {
  it("warns when the instance prompt equals the class prompt or adds no word to it", async () => {
    const summarize = async (instance: string, cls: string): Promise<string[]> => {
      const stage = resolveTrainConfig({
        ...base("unused"),
        method: "dreambooth",
        instance_prompt: instance,
        prior_preservation: { class_prompt: cls, class_data_dir: join(dir.path, "no-classes") },
      }).stages[0]!;
      const dataset = await openDataset({ type: "dreambooth", path: data, instancePrompt: instance });
      return datasetSummary(dataset, stage).warnings;
    };
    expect((await summarize("a photo of a dog", "a photo of a dog")).join("\n")).toMatch(/equals the class prompt/);
    expect((await summarize("a dog photo", "a photo of a dog")).join("\n")).toMatch(/add a rare identifier/);
    expect(await summarize("a photo of sks dog", "a photo of a dog")).toEqual([]);
  });
});

describe("preflight", () => {
  it("a wrong dataset, model, precision, device or CLIP model fails before anything is written", async () => {
    const out = join(dir.path, "never-written");
    const cases: [Record<string, unknown>, RegExp][] = [
      [{ dataset: { path: join(dir.path, "no-such-data") } }, /no-such-data does not exist/],
      [{ model: join(dir.path, "no-such-model") }, /no-such-model/],
      [{ mixed_precision: "fp16", device: "cpu" }, /fp16 is not available on the CPU/],
      [{ device: "cuda" }, /CUDA is not available/],
      [
        { evaluate: { prompts: ["x"], clip_model: join(dir.path, "no-such-clip") } },
        /CLIP model folder .*no-such-clip does not exist/,
      ],
    ];
    for (const [extra, message] of cases) {
      await expect(train(base(out, extra)), JSON.stringify(extra)).rejects.toThrow(message);
      expect(existsSync(out), JSON.stringify(extra)).toBe(false);
    }
  });

  it("a model with an empty vocab.json or descending betas is refused in preflight", async () => {
    const model = join(dir.path, "bad-model");
    await cp(fixture("tiny-sd"), model, { recursive: true, dereference: true });
    await writeFile(join(model, "tokenizer", "vocab.json"), "{}");
    const out = join(dir.path, "bad-model-run");
    await expect(train(base(out, { model }))).rejects.toThrow(/vocab\.json: the vocabulary is empty/);
    await expect(ClipTokenizer.fromPretrained(join(model, "tokenizer"))).rejects.toThrow(/vocabulary is empty/);
    await cp(fixture("tiny-sd", "tokenizer", "vocab.json"), join(model, "tokenizer", "vocab.json"));
    const schedulerPath = join(model, "scheduler", "scheduler_config.json");
    const scheduler = JSON.parse(readFileSync(schedulerPath, "utf8"));
    await writeFile(schedulerPath, JSON.stringify({ ...scheduler, beta_start: 0.5, beta_end: 0.01 }));
    await expect(train(base(out, { model }))).rejects.toThrow(/beta_start 0\.5 is above beta_end 0\.01/);
    expect(existsSync(out)).toBe(false);
  });
});

describe("messages", () => {
  it("scheduler betas above 1 or decreasing are refused", () => {
    expect(() => parseSchedulerConfig({ beta_end: 1.5 })).toThrow(/beta_end = 1\.5 is not a variance in \[0, 1\]/);
    expect(() => parseSchedulerConfig({ trained_betas: [0.1, 0.05] })).toThrow(/trained_betas decrease at index 1/);
    expect(() => parseSchedulerConfig({ trained_betas: [0.1, 2] })).toThrow(/trained_betas\[1\] = 2/);
    expect(parseSchedulerConfig({ trained_betas: [0.1, 0.2, 1] }).trained_betas).toEqual([0.1, 0.2, 1]);
  });

  it("a deeply nested adapter_config.json is refused with its name, not a stack overflow", async () => {
    const adapter = join(dir.path, "deep-adapter");
    await cp(fixture("lora", "peft_adapter_unet"), adapter, { recursive: true });
    const config = JSON.parse(readFileSync(join(adapter, "adapter_config.json"), "utf8"));
    const deep = `{"r": ${"[".repeat(100_000)}${"]".repeat(100_000)}, "lora_alpha": ${config.lora_alpha}}`;
    await writeFile(join(adapter, "adapter_config.json"), deep);
    await expect(loadLoraFile(adapter)).rejects.toThrow(/adapter_config\.json: nested more than \d+ levels deep/);
  });

  it("an output folder that cannot be created, and a full disk, are said in words with the path", async () => {
    // A file where a folder should be: Node's own message is "ENOTDIR ... mkdir".
    const blocker = join(dir.path, "a-file");
    await writeFile(blocker, "not a folder");
    await expect(train(base(join(blocker, "run")))).rejects.toThrow(
      /a-file\/run: cannot create the folder \(ENOTDIR\).*choose another output_dir/s,
    );
    const full = Object.assign(new Error("ENOSPC: no space left on device, write"), {
      code: "ENOSPC",
      syscall: "write",
    });
    const explained = explainFsError(full, "/runs/a") as Error;
    expect(explained.message).toMatch(/^\/runs\/a: the disk is full \(ENOSPC\).*--resume latest/s);
    const readOnly = Object.assign(new Error("EROFS: read-only file system, mkdir '/ro/run'"), {
      code: "EROFS",
      syscall: "mkdir",
      path: "/ro/run",
    });
    expect((explainFsError(readOnly, "/ro/run") as Error).message).toMatch(/^\/ro\/run: not writable \(EROFS\)/);
  });
});
