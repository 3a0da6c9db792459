// Training from a single-file checkpoint and saving the result as one (save.full_model: single-file).
import { join } from "node:path";

import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { readSafetensors } from "../src/io/safetensors.js";
import { convertDiffusersToSingleFile, inspectSingleFile } from "../src/index.js";
import type { Tensor } from "../src/native/index.js";
import { train } from "../src/train/run.js";
import { fixture, tempDir } from "./helpers/fixtures.js";
import { writeImage, writeText } from "./helpers/images.js";

let dir: { path: string; cleanup(): Promise<void> };
let data: string;
let model: string;
beforeAll(async () => {
  dir = await tempDir("sdtune-single-train-");
  process.env.SDTUNE_CACHE_DIR = join(dir.path, "cache");
  data = join(dir.path, "data");
  const rows: string[] = [];
  for (let i = 0; i < 2; i++) {
    await writeImage(join(data, `img${i}.png`), { width: 20, height: 20, seed: i });
    rows.push(JSON.stringify({ file_name: `img${i}.png`, text: `a picture number ${i}` }));
  }
  await writeText(join(data, "metadata.jsonl"), `${rows.join("\n")}\n`);
  model = join(dir.path, "tiny.safetensors");
  await convertDiffusersToSingleFile(fixture("tiny-sd"), model);
});
afterAll(async () => {
  delete process.env.SDTUNE_CACHE_DIR;
  await dir.cleanup();
});

const bytes = (t: Tensor): Buffer => {
  const v = t.toTypedArray();
  return Buffer.from(v.buffer, v.byteOffset, v.byteLength);
};

describe("training with single files", () => {
  it("trains from a single file and writes the fine-tuned model as one", async () => {
    const result = await train({
      model,
      seed: 3,
      resolution: 16,
      output_dir: join(dir.path, "run"),
      dataset: { path: data },
      train_text_encoder: "full",
      max_train_steps: 2,
      learning_rate: 1e-3,
      save: { lora_formats: ["kohya"], full_model: "single-file" },
    });
    const stage = result.stages[0]!;
    expect(stage.singleFile).toBe(join(dir.path, "run", "train", "model.safetensors"));
    expect((await inspectSingleFile(stage.singleFile!)).family).toBe("sd2");
    // The single file holds the trained text encoder: the folder's weights, not the base's.
    const name = "text_model.encoder.layers.0.mlp.fc1.weight";
    const folder = (await readSafetensors(join(stage.fullModel!, "text_encoder", "model.safetensors"))).tensors;
    const single = (await readSafetensors(stage.singleFile!)).tensors;
    const base = (await readSafetensors(fixture("tiny-sd", "text_encoder", "model.safetensors"))).tensors;
    const fused = single.get("cond_stage_model.model.transformer.resblocks.0.mlp.c_fc.weight")!;
    expect(bytes(fused).equals(bytes(folder.get(name)!))).toBe(true);
    expect(bytes(fused).equals(bytes(base.get(name)!))).toBe(false);
  });
});
