import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, expect, it } from "vitest";

import { applyOverrides, loadConfigFile } from "../src/config/load.js";
import { resolveTrainConfig, trainConfigJsonSchema } from "../src/config/train.js";
import { minimal, problems } from "./helpers/train_config.js";
import { tempDir } from "./helpers/fixtures.js";

describe("training config", () => {
  it("fills diffusers' defaults and makes a single stage", () => {
    const c = resolveTrainConfig(minimal);
    expect(c.stages).toHaveLength(1);
    const s = c.stages[0]!;
    expect([s.name, s.method, s.train_unet, s.train_text_encoder]).toEqual(["train", "text-to-image", "lora", "none"]);
    expect([s.learning_rate, s.adam_weight_decay, s.max_grad_norm, s.lr_scheduler]).toEqual([
      1e-4,
      1e-2,
      1,
      "constant",
    ]);
    expect(s.lora.unet_targets).toEqual(["to_q", "to_k", "to_v", "to_out.0"]);
    expect(c.mixed_precision).toBe("auto");
  });

  it("top-level stage keys are defaults that each stage may override", () => {
    const c = resolveTrainConfig({
      ...minimal,
      learning_rate: 5e-5,
      stages: [
        { name: "concept", train_unet: "full" },
        {
          name: "personal",
          method: "dreambooth",
          instance_prompt: "a photo of sks person",
          learning_rate: 1e-4,
          lora: { rank: 16 },
        },
      ],
    });
    expect(c.stages.map((s) => [s.name, s.learning_rate, s.train_unet, s.lora.rank])).toEqual([
      ["concept", 5e-5, "full", 4],
      ["personal", 1e-4, "lora", 16],
    ]);
  });

  it("rejects unknown keys with a did-you-mean, and names every bad path", () => {
    expect(problems({ ...minimal, lerning_rate: 1 })).toEqual([
      'lerning_rate: unknown key (did you mean "learning_rate"?)',
    ]);
    expect(problems({ ...minimal, dataset: { path: "d", captoin_column: "x" } })).toEqual([
      'dataset.captoin_column: unknown key (did you mean "caption_column"?)',
    ]);
    const many = problems({ ...minimal, stages: [{ lora: { rnak: 2 } }, { method: "dreambooth" }] });
    expect(many).toContain('stages[0].lora.rnak: unknown key (did you mean "rank"?)');
    expect(many.some((p) => p.startsWith("stages[1].instance_prompt: DreamBooth needs an instance_prompt"))).toBe(true);
    expect(problems({ model: "m", output_dir: "o", dataset: { path: "d" } })[0]).toMatch(/^max_train_steps: /);
  });

  it("refuses duplicate stage names and contradictory options", () => {
    expect(() => resolveTrainConfig({ ...minimal, stages: [{ name: "a" }, { name: "a" }] })).toThrow(
      /two stages are named "a"/,
    );
    expect(problems({ ...minimal, use_ema: true })[0]).toMatch(/^use_ema: EMA applies to full fine-tuning/);
    expect(problems({ ...minimal, prior_preservation: { class_prompt: "a dog" } })[0]).toMatch(/dreambooth only/);
  });

  it("reads YAML with line numbers in errors, and applies command-line overrides", async () => {
    const dir = await tempDir();
    try {
      const good = join(dir.path, "run.yaml");
      await writeFile(
        good,
        "model: m\noutput_dir: out\ndataset:\n  path: data\nmax_train_steps: 10\nstages:\n  - name: a\n  - name: b\n",
      );
      const raw = applyOverrides(await loadConfigFile(good), [
        "learning_rate=5e-5",
        "stages.1.lora.rank=8",
        "random_flip=true",
      ]);
      const c = resolveTrainConfig(raw, good);
      expect(c.stages.map((s) => [s.learning_rate, s.lora.rank, s.random_flip])).toEqual([
        [5e-5, 4, true],
        [5e-5, 8, true],
      ]);
      const bad = join(dir.path, "bad.yaml");
      await writeFile(bad, "model: m\n  output_dir: [\n");
      await expect(loadConfigFile(bad)).rejects.toThrow(/bad\.yaml: not valid YAML \(line \d+\)/);
      await expect(loadConfigFile(join(dir.path, "none.yaml"))).rejects.toThrow(/config file not found/);
      expect(() => applyOverrides({}, ["novalue"])).toThrow(/expected key=value/);
    } finally {
      await dir.cleanup();
    }
  });

  it("exports a JSON Schema for editors", () => {
    const schema = trainConfigJsonSchema() as {
      properties: Record<string, { type?: string; exclusiveMinimum?: number; minItems?: number; items?: unknown }>;
      required?: string[];
    };
    expect(schema.properties.learning_rate).toMatchObject({ type: "number", exclusiveMinimum: 0 });
    expect(schema.properties.stages).toMatchObject({
      type: "array",
      minItems: 1,
      items: { type: "object", properties: { name: { type: "string" } } },
    });
    expect(schema.required).toEqual(expect.arrayContaining(["model", "output_dir"]));
  });
});
