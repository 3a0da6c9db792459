// Intermediate LoRAs (save_every_n_steps / save_every_n_epochs): files in every format,
// equal to a run that stopped at that step, and their comparison grid in the report.
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import sharp from "sharp";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { readSafetensors } from "../src/io/safetensors.js";
import { resolveTrainConfig } from "../src/config/train.js";
import { comparisonSpec } from "../src/train/lora_saves.js";
import { train } from "../src/train/run.js";
import { main } from "../src/cli/main.js";
import { captureCli } from "./helpers/capture.js";
import { expectSameTensors, writeCaptionedImages } from "./helpers/train_data.js";
import { fixture, tempDir } from "./helpers/fixtures.js";
import { minimal, problems } from "./helpers/train_config.js";

let dir: { path: string; cleanup(): Promise<void> };
let data: string;
const IMAGES = 3;
beforeAll(async () => {
  dir = await tempDir("sdtune-train-saves-");
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

const validation = { prompts: ["a picture"], seeds: [1], every_n_steps: 100, num_inference_steps: 1 };

describe("intermediate LoRAs", () => {
  it("save_every_n_steps writes <stage>-step<N> in every format, equal to a run that stopped there, and a grid", async () => {
    const out = join(dir.path, "saves");
    const result = await train(config(out, { max_train_steps: 2, save_every_n_steps: 1, validation }));
    const lora = join(out, "train", "lora");
    expect(readdirSync(lora).sort()).toEqual([
      "diffusers",
      "train-step1",
      "train-step1.safetensors",
      "train.safetensors",
    ]);
    expect(existsSync(join(lora, "train-step1", "diffusers", "pytorch_lora_weights.safetensors"))).toBe(true);
    const kohya = await readSafetensors(join(lora, "train-step1.safetensors"));
    expect(kohya.metadata.ss_output_name).toBe("train-step1");
    expect(kohya.metadata.ss_steps).toBe("1");
    // The LoRA saved at step 1 is what a 1-step run ends with.
    const short = await train(config(join(dir.path, "short"), { max_train_steps: 1 }));
    await expectSameTensors(join(lora, "train-step1.safetensors"), short.stages[0]!.loraFiles.kohya!);
    await expectSameTensors(
      join(lora, "train-step1", "diffusers", "pytorch_lora_weights.safetensors"),
      short.stages[0]!.loraFiles.diffusers!,
    );
    // Checkpoint pruning never touches them.
    expect(readdirSync(join(out, "train", "checkpoints"))).toEqual(["checkpoint-2"]);
    // The grid: a row per LoRA, a column per prompt and seed, each row's images from its step.
    const shown = JSON.parse(readFileSync(join(out, "train", "lora_comparison.json"), "utf8")) as unknown;
    expect(shown).toEqual({
      rows: ["step 1", "final (step 2)"],
      columns: validation.seeds.map((s) => `${validation.prompts[0]} (seed ${s})`),
    });
    const grid = await sharp(join(out, "train", "lora_comparison.png")).metadata();
    const cell = await sharp(
      join(out, "train", "samples", "step-1", `prompt0_seed${validation.seeds[0]}.png`),
    ).metadata();
    expect(grid.height!).toBeGreaterThan(2 * cell.height!);
    const report = readFileSync(result.report, "utf8");
    expect(report).toContain('href="train/lora/train-step1.safetensors"');
    expect(report).toContain('src="train/lora_comparison.png"');
    // `lora inspect` on a checkpoint says what it is, how to resume, and lists the stage's LoRAs.
    const checkpoint = join(out, "train", "checkpoints", "checkpoint-2");
    for (const path of [checkpoint, join(checkpoint, "training_state.safetensors")]) {
      const r = await captureCli(() => main(["lora", "inspect", path]));
      expect(r.code).toBe(0);
      expect(r.out).toContain('a training checkpoint (trainer state, not a LoRA) of stage "train" at step 2');
      expect(r.out).toContain(`--config ${join(out, "config.yaml")} --resume ${checkpoint}`);
      expect(r.out).toContain(join(lora, "train-step1.safetensors"));
      expect(r.out).not.toMatch(/unknown key/);
    }
  });

  it("without validation, the grid uses the evaluate prompts and seeds; LoRA saves need a LoRA", () => {
    const evaluate = { prompts: ["a drawing"], seeds: [3], num_inference_steps: 1 };
    const stage = resolveTrainConfig({ ...minimal, save_every_n_steps: 2, evaluate }).stages[0]!;
    expect(comparisonSpec(stage)).toMatchObject(evaluate);
    expect(comparisonSpec(resolveTrainConfig(minimal).stages[0]!)).toBeUndefined();
    expect(problems({ ...minimal, train_unet: "full", save_every_n_epochs: 1 })).toEqual([
      "save_every_n_epochs: applies to LoRA training; this stage trains no LoRA",
    ]);
  });
});
