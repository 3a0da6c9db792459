// Training runs with Prodigy, Adafactor and Lion on the tiny fixture model: each
// run interrupted mid-way (Ctrl-C saves a checkpoint) and resumed ends bit for bit
// where the uninterrupted run ends, the optimizer's own state in the checkpoint.
import { readdirSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { readSafetensors } from "../src/io/safetensors.js";
import { native } from "../src/native/index.js";
import { STATE_FILE } from "../src/train/stage_loop.js";
import { train, type TrainResult } from "../src/train/run.js";
import { fixture, tempDir } from "./helpers/fixtures.js";
import { writeImage, writeText } from "./helpers/images.js";

let dir: { path: string; cleanup(): Promise<void> };
let data: string;

beforeAll(async () => {
  dir = await tempDir("sdtune-optimizers-train-");
  data = join(dir.path, "data");
  const rows: string[] = [];
  for (let i = 0; i < 3; i++) {
    await writeImage(join(data, `img${i}.png`), { width: 20, height: 16 + 4 * i, seed: i });
    rows.push(JSON.stringify({ file_name: `img${i}.png`, text: `a picture number ${i}` }));
  }
  await writeText(join(data, "metadata.jsonl"), `${rows.join("\n")}\n`);
});
afterAll(async () => dir.cleanup());

const config = (out: string, extra: Record<string, unknown>) => ({
  model: fixture("tiny-sd"),
  seed: 3,
  resolution: 16,
  output_dir: out,
  dataset: { path: data },
  max_train_steps: 3,
  checkpointing_steps: 100,
  ...extra,
});

/** Stops `cfg` (as Ctrl-C does) after `stopAt` optimizer steps, then resumes it. */
async function interruptedRun(cfg: Record<string, unknown>, stopAt: number): Promise<TrainResult> {
  const controller = new AbortController();
  const stopped = await train(cfg, {
    signal: controller.signal,
    onProgress: (e) => e.phase === "train" && e.step === stopAt && controller.abort(),
  }).catch((e: Error) => e);
  expect((stopped as Error).name).toBe("AbortError");
  return train(cfg, { resume: "latest" });
}

/** label, config keys, a key of the optimizer's state in the checkpoint, kohya's ss_optimizer. */
const CASES: [string, Record<string, unknown>, RegExp, string][] = [
  [
    "prodigy (text encoder LoRA too)",
    {
      optimizer: "prodigy",
      train_text_encoder: "lora",
      optimizer_args: { weight_decay: 0.01, use_bias_correction: true, safeguard_warmup: true, d_coef: 2 },
    },
    /^optim\.text_encoder\.__prodigy__$/,
    "prodigyopt.prodigy.Prodigy(weight_decay=0.01,use_bias_correction=True,safeguard_warmup=True,d_coef=2)",
  ],
  [
    "adafactor (kohya's settings, cosine schedule)",
    {
      optimizer: "adafactor",
      learning_rate: 1e-3,
      lr_scheduler: "cosine",
      optimizer_args: { relative_step: false, scale_parameter: false, warmup_init: false, weight_decay: 0.01 },
    },
    /^optim\.unet\..*\.exp_avg_sq_row$/,
    "transformers.optimization.Adafactor(relative_step=False,scale_parameter=False,warmup_init=False,weight_decay=0.01)",
  ],
  [
    "lion",
    { optimizer: "lion", learning_rate: 1e-4, optimizer_args: { weight_decay: 0.1 } },
    /^optim\.unet\..*\.exp_avg$/,
    "lion_pytorch.lion_pytorch.Lion(weight_decay=0.1)",
  ],
];

describe("training with Prodigy, Adafactor and Lion", () => {
  for (const [label, extra, stateKey, ssOptimizer] of CASES) {
    it(`${label}: an interrupted and resumed run ends bit for bit where the uninterrupted one does`, async () => {
      const name = label.split(" ")[0]!;
      const a = await train(config(join(dir.path, `${name}-a`), extra));
      const bDir = join(dir.path, `${name}-b`);
      const b = await interruptedRun(config(bDir, extra), 1);
      const checkpoints = join(bDir, "train", "checkpoints");
      const saved = await readSafetensors(join(checkpoints, readdirSync(checkpoints)[0]!, STATE_FILE));
      expect(
        [...saved.tensors.keys()].some((k) => stateKey.test(k)),
        `${stateKey} in the checkpoint`,
      ).toBe(true);
      const kohya = await readSafetensors(a.stages[0]!.loraFiles.kohya!);
      expect(kohya.metadata.ss_optimizer).toBe(ssOptimizer);
      const x = kohya.tensors;
      const y = (await readSafetensors(b.stages[0]!.loraFiles.kohya!)).tensors;
      expect([...y.keys()].sort()).toEqual([...x.keys()].sort());
      let changed = 0;
      for (const [key, t] of x) {
        expect(native().ops.maxAbsDiff(t, y.get(key)!), key).toBe(0);
        // LoRA "up" matrices start at zero: the optimizer moved them.
        const values = (await t.to({ dtype: "float32" })).toTypedArray() as Float32Array;
        if (key.includes("lora_up") && values.some((v) => v !== 0)) changed++;
      }
      expect(changed).toBeGreaterThan(0);
    });
  }
});
