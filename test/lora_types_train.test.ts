// Training DoRA, LoHa and LoKr: the trainer's saved state of each resumes bit for bit (train()
// end to end: lora_types_run.test.ts); the README's config example is valid, and the config
// refuses what these types cannot do.
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";

import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { loadConfigFile } from "../src/config/load.js";
import { resolveTrainConfig } from "../src/config/train.js";
import { createTrainableLora } from "../src/lora/index.js";
import { UNet } from "../src/models/unet.js";
import { native } from "../src/native/index.js";
import { Trainer } from "../src/train/trainer.js";
import { fixture, fixtureJson, repoRoot, tempDir } from "./helpers/fixtures.js";
import { minimal, problems } from "./helpers/train_config.js";

let dir: { path: string; cleanup(): Promise<void> };

beforeAll(async () => {
  dir = await tempDir("sdtune-lora-types-train-");
});
afterAll(async () => dir.cleanup());

const TYPES = {
  dora: { type: "dora", rank: 2 },
  loha: { type: "loha", rank: 2, alpha: 1 },
  lokr: { type: "lokr", rank: 1, factor: 4, decompose_both: true },
} as const;

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

  it("the README's LoRA-types config is valid", async () => {
    const readme = readFileSync(join(repoRoot, "README.md"), "utf8");
    const section = readme.slice(readme.indexOf("## LoRA types"));
    const block = /```yaml\n([\s\S]*?)```/.exec(section)![1]!;
    const file = join(dir.path, "readme.yaml");
    writeFileSync(file, block);
    const stage = resolveTrainConfig(await loadConfigFile(file), file).stages[0]!;
    expect([stage.lora.type, stage.save.lora_formats]).toEqual(["loha", ["kohya"]]);
  });

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
