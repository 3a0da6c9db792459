// Stage lengths in epochs (num_train_epochs, save_every_n_epochs), and training a finished
// run longer (bit for bit like a longer run with a constant lr; a notice otherwise).
import { readdirSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { readSafetensors } from "../src/io/safetensors.js";
import { readMetrics } from "../src/train/metrics.js";
import { train, type TrainProgress } from "../src/train/run.js";
import { resolveTrainConfig } from "../src/config/train.js";
import { stagePlan } from "../src/train/stage_plan.js";
import { expectSameTensors, writeCaptionedImages } from "./helpers/train_data.js";
import { writeImage, writeText } from "./helpers/images.js";
import { fixture, tempDir } from "./helpers/fixtures.js";
import { minimal, problems } from "./helpers/train_config.js";

let dir: { path: string; cleanup(): Promise<void> };
let data: string;
const IMAGES = 3;
beforeAll(async () => {
  dir = await tempDir("sdtune-train-extend-");
  data = await writeCaptionedImages(join(dir.path, "data"), IMAGES, 30);
});
afterAll(async () => dir.cleanup());

const config = (out: string, extra: Record<string, unknown> = {}) => ({
  model: fixture("tiny-sd"),
  output_dir: out,
  dataset: { path: data },
  resolution: 16,
  seed: 7,
  learning_rate: 1e-3,
  checkpointing_steps: 2,
  save: { lora_formats: ["kohya", "diffusers"] },
  ...extra,
});

describe("epochs", () => {
  it("num_train_epochs trains whole epochs of ceil(batches / accumulation) steps; save_every_n_epochs", async () => {
    // The epoch plan counts repeats (a `repeats` column), batches and accumulation.
    const repeats = [2, 1];
    const rep = join(dir.path, "repeats");
    for (let i = 0; i < repeats.length; i++)
      await writeImage(join(rep, `r${i}.png`), { width: 20, height: 20, seed: i });
    const rows = repeats.map((r, i) => JSON.stringify({ file_name: `r${i}.png`, text: `picture ${i}`, repeats: r }));
    await writeText(join(rep, "metadata.jsonl"), rows.join("\n"));
    const batch = 1;
    const accumulation = 2;
    const epochs = 2;
    const examples = repeats.reduce((a, b) => a + b, 0);
    const perEpoch = Math.ceil(Math.ceil(examples / batch) / accumulation);
    const out = join(dir.path, "epochs");
    const result = await train(
      config(out, {
        dataset: { path: rep },
        train_batch_size: batch,
        gradient_accumulation_steps: accumulation,
        num_train_epochs: epochs,
        save_every_n_epochs: 1,
        save: { lora_formats: ["kohya"] },
      }),
    );
    expect(result.stages[0]!.steps).toBe(epochs * perEpoch);
    expect(await readMetrics(join(out, "metrics.jsonl"))).toHaveLength(epochs * perEpoch);
    expect(readdirSync(join(out, "train", "lora")).sort()).toEqual([
      `train-step${perEpoch}.safetensors`,
      "train.safetensors",
    ]);
  });

  it("max_train_steps overrides num_train_epochs; a stage needs one of them", () => {
    const { max_train_steps: _steps, ...withoutSteps } = minimal;
    const stage = resolveTrainConfig({ ...withoutSteps, num_train_epochs: 5, save_every_n_epochs: 2 }).stages[0]!;
    const batches = 3;
    const plan = stagePlan(stage, batches);
    expect(plan.totalSteps).toBe(5 * batches);
    expect([...Array(plan.totalSteps + 1).keys()].filter(plan.isSaveStep)).toEqual([2 * batches, 4 * batches]);
    expect(stagePlan({ ...stage, max_train_steps: 1 }, batches).totalSteps).toBe(1);
    expect(problems(withoutSteps)).toEqual([
      "max_train_steps: how long to train: give max_train_steps or num_train_epochs",
    ]);
  });
});

describe("training a run longer", () => {
  it("a finished run resumed with a larger max_train_steps ends bit for bit where a longer run does", async () => {
    const out = join(dir.path, "extend");
    await train(config(out, { max_train_steps: 1 }));
    const notices: string[] = [];
    const onProgress = (e: TrainProgress) => e.phase === "notice" && notices.push(String(e.message));
    const longer = await train(config(out, { max_train_steps: 3 }), { resume: "latest", onProgress });
    expect(notices.join("\n")).toMatch(/finished at step 1; training it on to step 3/);
    // The shorter result is kept as an intermediate LoRA.
    const kept = await readSafetensors(join(out, "train", "lora", "train-step1.safetensors"));
    expect(kept.metadata.ss_steps).toBe("1");
    const reference = await train(config(join(dir.path, "extend-ref"), { max_train_steps: 3 }));
    await expectSameTensors(longer.stages[0]!.loraFiles.kohya!, reference.stages[0]!.loraFiles.kohya!);
    const times = ({ step_time: _t, images_per_sec: _i, time: _w, ...rest }: Record<string, unknown>) => rest;
    expect((await readMetrics(join(out, "metrics.jsonl"))).map(times)).toEqual(
      (await readMetrics(join(reference.outputDir, "metrics.jsonl"))).map(times),
    );
    // Fewer steps, or any other change, is still refused.
    await expect(train(config(out, { max_train_steps: 2 }), { resume: "latest" })).rejects.toThrow(
      /differs from the run being resumed in stages\[0\]\.max_train_steps/,
    );
  });

  it("a schedule that depends on the total says so and continues", async () => {
    const out = join(dir.path, "extend-linear");
    await train(config(out, { max_train_steps: 1, lr_scheduler: "linear" }));
    const notices: string[] = [];
    const controller = new AbortController();
    // The notice comes before any training: the run is stopped there.
    const onProgress = (e: TrainProgress) => {
      if (e.phase === "notice") notices.push(String(e.message));
      if (/schedule depends/.test(notices.join())) controller.abort();
    };
    const stopped = await train(config(out, { max_train_steps: 2, lr_scheduler: "linear" }), {
      resume: "latest",
      onProgress,
      signal: controller.signal,
    }).catch((e: Error) => e);
    expect((stopped as Error).name).toBe("AbortError");
    expect(notices.join("\n")).toMatch(/linear learning-rate schedule depends on the total step count/);
  });
});
