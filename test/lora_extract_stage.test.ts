// save.extract_lora: a full fine-tune stage kept as an extracted LoRA, and the next stage
// training on the base plus that LoRA (tiny fixture, 2 steps per stage).
import { existsSync } from "node:fs";
import { join } from "node:path";

import { afterAll, beforeAll, expect, it } from "vitest";

import { disposeLora, loadLoraFile } from "../src/lora/index.js";
import { train } from "../src/train/run.js";
import { stageDir } from "../src/train/stage.js";
import { fixture, tempDir } from "./helpers/fixtures.js";
import { writeImage, writeText } from "./helpers/images.js";
import { minimal, problems } from "./helpers/train_config.js";

let dir: { path: string; cleanup(): Promise<void> };
let data: string;
beforeAll(async () => {
  dir = await tempDir("sdtune-extract-stage-");
  data = join(dir.path, "data");
  const rows: string[] = [];
  for (let i = 0; i < 2; i++) {
    await writeImage(join(data, `img${i}.png`), { width: 16, height: 16, seed: i });
    rows.push(JSON.stringify({ file_name: `img${i}.png`, text: `picture ${i}` }));
  }
  await writeText(join(data, "metadata.jsonl"), `${rows.join("\n")}\n`);
});
afterAll(async () => dir.cleanup());

it("refuses extract_lora on a stage that trains no whole model", () => {
  expect(problems({ ...minimal, save: { extract_lora: { rank: 4 } } }).join("\n")).toMatch(
    /save\.extract_lora.*train_unet or train_text_encoder to full/,
  );
});

it("a full fine-tune saved as an extracted LoRA; stage 2 trains on base + that LoRA", async () => {
  const result = await train({
    model: fixture("tiny-sd"),
    output_dir: join(dir.path, "run"),
    seed: 1,
    resolution: 16,
    max_train_steps: 2,
    dataset: { path: data },
    stages: [
      {
        name: "whole",
        train_unet: "full",
        learning_rate: 1e-3,
        save: { lora_formats: ["kohya"], extract_lora: { rank: 4 } },
      },
      { name: "style", learning_rate: 1e-3, save: { lora_formats: ["kohya"] } },
    ],
  });
  const [whole, style] = result.stages;
  expect(whole!.fullModel).toBeUndefined();
  expect(existsSync(join(stageDir(result.outputDir, "whole"), "model"))).toBe(false);
  const extracted = await loadLoraFile(whole!.loraFiles.kohya!);
  try {
    const ranks = [...extracted.adapters.values()].map((a) => a.rank);
    expect(ranks.length).toBeGreaterThan(0);
    expect(Math.max(...ranks)).toBeLessThanOrEqual(4);
    expect([...extracted.adapters.keys()].every((k) => k.startsWith("unet."))).toBe(true);
  } finally {
    disposeLora(extracted);
  }
  expect(style!.steps).toBe(2);
  expect(existsSync(style!.loraFiles.kohya!)).toBe(true);
});
