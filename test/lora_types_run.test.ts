// train() with a LoKr (LyCORIS' factor and decompose_both from the config): it trains, writes a
// kohya (LyCORIS layout) file that loads back, and an interrupted, resumed run ends bit for bit
// where the uninterrupted one does. DoRA and LoHa take the same path (their trainer state resumes
// exactly: lora_types_train.test.ts).
import { join } from "node:path";

import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { readSafetensors } from "../src/io/safetensors.js";
import { disposeLora, loadLoraFile, summarizeLora } from "../src/lora/index.js";
import { native } from "../src/native/index.js";
import { train, type TrainResult } from "../src/train/run.js";
import { fixture, tempDir } from "./helpers/fixtures.js";
import { writeImage, writeText } from "./helpers/images.js";

let dir: { path: string; cleanup(): Promise<void> };
let images: string;

beforeAll(async () => {
  dir = await tempDir("sdtune-lora-types-run-");
  images = join(dir.path, "images");
  const rows: string[] = [];
  for (let i = 0; i < 2; i++) {
    await writeImage(join(images, `img${i}.png`), { width: 16, height: 16, seed: i });
    rows.push(JSON.stringify({ file_name: `img${i}.png`, text: `a picture number ${i}` }));
  }
  await writeText(join(images, "metadata.jsonl"), `${rows.join("\n")}\n`);
});
afterAll(async () => dir.cleanup());

const TYPES = { lokr: { type: "lokr", rank: 1, factor: 4, decompose_both: true } } as const;

function config(out: string, lora: Record<string, unknown>) {
  return {
    model: fixture("tiny-sd"),
    seed: 3,
    resolution: 16,
    checkpointing_steps: 1,
    output_dir: out,
    dataset: { path: images },
    max_train_steps: 2,
    learning_rate: 1e-3,
    lora: { ...lora, unet_targets: ["to_q", "conv1"] },
    save: { lora_formats: ["kohya"] },
  };
}

async function interruptedRun(cfg: Record<string, unknown>, stopAt: number): Promise<TrainResult> {
  const controller = new AbortController();
  const stopped = await train(cfg, {
    signal: controller.signal,
    onProgress: (e) => {
      if (e.phase === "train" && e.step === stopAt) controller.abort();
    },
  }).catch((e: Error) => e);
  expect((stopped as Error).name).toBe("AbortError");
  return train(cfg, { resume: "latest" });
}

describe("training a LyCORIS type with train()", () => {
  for (const [name, lora] of Object.entries(TYPES)) {
    it(`${name} through train(): saves LyCORIS keys that load back, and resumes bit for bit`, async () => {
      const a = await train(config(join(dir.path, `${name}-a`), lora));
      const b = await interruptedRun(config(join(dir.path, `${name}-b`), lora), 1);
      const fileA = a.stages[0]!.loraFiles.kohya!;
      const x = (await readSafetensors(fileA)).tensors;
      const y = (await readSafetensors(b.stages[0]!.loraFiles.kohya!)).tensors;
      expect([...x.keys()].sort()).toEqual([...y.keys()].sort());
      for (const [key, t] of x) expect(native().ops.maxAbsDiff(t, y.get(key)!), key).toBe(0);
      // Every module has its type's keys, and the factor that starts at zero has moved.
      const markers: Record<string, [string, string]> = {
        dora: [".dora_scale", ".lora_up.weight"],
        loha: [".hada_w1_a", ".hada_w2_a"],
        lokr: [".lokr_w1_a", ".lokr_w2_b"],
      };
      const [marker, zeroInit] = markers[name]!;
      const modules = [...x.keys()].filter((k) => k.endsWith(marker));
      expect(modules.length, `${name}: ${marker} keys`).toBe([...x.keys()].filter((k) => k.endsWith(".alpha")).length);
      const moved = [...x].filter(([k]) => k.endsWith(zeroInit));
      expect(moved.length).toBe(modules.length);
      for (const [k, t] of moved)
        expect(
          (t.toTypedArray() as Float32Array).some((e) => e !== 0),
          k,
        ).toBe(true);
      const loaded = await loadLoraFile(fileA);
      expect(name === "dora" ? loaded.adapters.size : loaded.lycoris?.size).toBe(modules.length);
      expect(summarizeLora(loaded).types).toEqual({ [name]: modules.length });
      disposeLora(loaded);
    });
  }
});
