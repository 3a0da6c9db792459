// Training DoRA, LoHa and LoKr: the trainer's saved state of each resumes bit for bit; train()
// with a LoKr trains, writes a kohya (LyCORIS layout) file that loads back, and an interrupted,
// resumed run ends bit for bit where the uninterrupted one does (the other types take the same
// path). The config refuses what these types cannot do.
import { join } from "node:path";

import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { readFileSync } from "node:fs";

import { readSafetensors } from "../src/io/safetensors.js";
import { createTrainableLora, disposeLora, loadLoraFile, summarizeLora } from "../src/lora/index.js";
import { UNet } from "../src/models/unet.js";
import { native } from "../src/native/index.js";
import { train, type TrainResult } from "../src/train/run.js";
import { Trainer } from "../src/train/trainer.js";
import { fixture, fixtureJson, tempDir } from "./helpers/fixtures.js";
import { writeImage, writeText } from "./helpers/images.js";
import { minimal, problems } from "./helpers/train_config.js";

let dir: { path: string; cleanup(): Promise<void> };
let images: string;

beforeAll(async () => {
  dir = await tempDir("sdtune-lora-types-train-");
  images = join(dir.path, "images");
  const rows: string[] = [];
  for (let i = 0; i < 2; i++) {
    await writeImage(join(images, `img${i}.png`), { width: 16, height: 16, seed: i });
    rows.push(JSON.stringify({ file_name: `img${i}.png`, text: `a picture number ${i}` }));
  }
  await writeText(join(images, "metadata.jsonl"), `${rows.join("\n")}\n`);
});
afterAll(async () => dir.cleanup());

const TYPES = {
  dora: { type: "dora", rank: 2 },
  loha: { type: "loha", rank: 2, alpha: 1 },
  lokr: { type: "lokr", rank: 1, factor: 4, decompose_both: true },
} as const;

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

describe("training DoRA, LoHa and LoKr", () => {
  it("the trainer state of each type resumes bit for bit", async () => {
    const cfg = JSON.parse(readFileSync(fixture("tiny-sd", "scheduler", "scheduler_config.json"), "utf8"));
    const context = fixtureJson<{ cross_attention_dim: number }>("tiny-sd", "unet", "config.json").cross_attention_dim;
    const channels = fixtureJson<{ latent_channels: number }>("tiny-sd", "vae", "config.json").latent_channels;
    const latents = native().ops.randn([1, channels, 8, 8], { seed: 5 });
    const encoderHiddenStates = native().ops.randn([1, 77, context], { seed: 6 });
    for (const [name, lora] of Object.entries(TYPES)) {
      const start = async () => {
        const unet = await UNet.load(fixture("tiny-sd", "unet"));
        const created = await createTrainableLora(unet, {
          targets: ["to_q", "conv1"],
          seed: 1,
          ...lora,
          decomposeBoth: "decompose_both" in lora,
        });
        const groups = [{ name: "unet" as const, params: created.parameters }];
        const trainer = await Trainer.create({ unet, groups, noiseScheduleConfig: cfg, vaeScalingFactor: 1, seed: 7 });
        return { unet, trainer };
      };
      const step = (t: Trainer) => t.step({ latents, encoderHiddenStates }, { unet: 1e-2 });
      const a = await start();
      for (let i = 0; i < 2; i++) await step(a.trainer);
      const final = await a.trainer.stateDict();
      const b = await start();
      await step(b.trainer);
      const saved = await b.trainer.stateDict();
      const c = await start();
      await c.trainer.loadStateDict(saved);
      await step(c.trainer);
      const resumed = new Map(await c.trainer.stateDict());
      expect(resumed.size, name).toBe(final.length);
      for (const [key, t] of final) expect(native().ops.maxAbsDiff(t, resumed.get(key)!), `${name}: ${key}`).toBe(0);
      const factors = final.filter(([k]) => /lora_magnitude_vector|hada_|lokr_/.test(k));
      expect(factors.length, `${name}: its own tensors are in the state`).toBeGreaterThan(0);
      for (const run of [a, b, c]) {
        run.trainer.dispose();
        run.unet.dispose();
      }
    }
  });

  for (const [name, lora] of Object.entries(TYPES).filter(([n]) => n === "lokr")) {
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

  it("refuses what the types cannot do, naming the field", () => {
    expect(problems({ ...minimal, lora: { type: "loha" } }).join("\n")).toMatch(
      /save\.lora_formats: lora\.type loha is saved in the kohya \(LyCORIS\) layout only/,
    );
    const kohya = { save: { lora_formats: ["kohya"] } };
    expect(problems({ ...minimal, ...kohya, lora: { type: "lokr", dropout: 0.1 } }).join("\n")).toMatch(
      /lora\.dropout: LyCORIS' lokr has no dropout/,
    );
    expect(problems({ ...minimal, ...kohya, lora: { type: "loha", use_tucker: true } }).join("\n")).toMatch(
      /use_tucker .* is not supported/,
    );
    expect(problems({ ...minimal, ...kohya, lora: { type: "lokr", factor: 0 } }).join("\n")).toMatch(/factor/);
  });
});
