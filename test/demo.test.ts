// The demo: a quick two-stage run produces both LoRAs, samples and the report; and
// on the demo data the loss goes down.
import { existsSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { demoConfig, ensureDemoAssets, runDemo } from "../src/demo/index.js";
import { readMetrics } from "../src/train/metrics.js";
import { train } from "../src/train/run.js";
import { tempDir } from "./helpers/fixtures.js";

let dir: { path: string; cleanup(): Promise<void> };
beforeAll(async () => {
  dir = await tempDir("sdtune-demo-");
});
afterAll(async () => dir.cleanup());

describe("demo", () => {
  it("runs both stages quickly and writes LoRAs, samples, class images and the report", async () => {
    const result = await runDemo({ dir: dir.path, quick: true });
    expect(result.stages.map((s) => s.name)).toEqual(["concept", "personal"]);
    for (const stage of result.stages) {
      expect(existsSync(stage.loraFiles.kohya!)).toBe(true);
      expect(existsSync(stage.loraFiles.diffusers!)).toBe(true);
      expect(readdirSync(join(result.outputDir, stage.name, "samples")).length).toBeGreaterThan(0);
    }
    expect(
      readdirSync(join(result.outputDir, "class_images", "personal")).filter((f) => f.endsWith(".png")),
    ).toHaveLength(4);
    expect(existsSync(result.report)).toBe(true);
  });

  it("the loss falls on the demo's concept images", async () => {
    await ensureDemoAssets(dir.path);
    const config = demoConfig(dir.path, false) as { stages: Record<string, unknown>[] } & Record<string, unknown>;
    const concept = { ...config.stages[0]!, max_train_steps: 120, validation: undefined };
    const result = await train({ ...config, output_dir: join(dir.path, "loss-run"), stages: [concept] });
    const losses = (await readMetrics(join(result.outputDir, "metrics.jsonl"))).map((m) => m.loss as number);
    const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
    expect(mean(losses.slice(-30))).toBeLessThan(0.95 * mean(losses.slice(0, 30)));
  });
});
