// init_lora (kohya's network_weights): a stage starts from an existing LoRA in any format,
// with its rank and alpha (folded diffusers / peft files are unfolded exactly); a config
// that contradicts the file is refused, naming the file and the key.
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { readSafetensors } from "../src/io/safetensors.js";
import { train, type TrainResult } from "../src/train/run.js";
import { expectSameTensors, writeCaptionedImages } from "./helpers/train_data.js";
import { fixture, tempDir } from "./helpers/fixtures.js";

let dir: { path: string; cleanup(): Promise<void> };
let data: string;
let start: TrainResult;
const LORA = { rank: 2, alpha: 1 };
beforeAll(async () => {
  dir = await tempDir("sdtune-init-lora-");
  data = await writeCaptionedImages(join(dir.path, "data"), 2, 60);
  start = await train(config(join(dir.path, "start"), { lora: LORA, learning_rate: 1e-2 }));
});
afterAll(async () => dir.cleanup());

function config(out: string, extra: Record<string, unknown> = {}) {
  return {
    model: fixture("tiny-sd"),
    output_dir: out,
    dataset: { path: data },
    resolution: 16,
    max_train_steps: 1,
    save: { lora_formats: ["kohya", "diffusers", "peft"] },
    ...extra,
  };
}

describe("init_lora", () => {
  it("starts from the file in each format with its rank and alpha", async () => {
    const files = start.stages[0]!.loraFiles;
    for (const format of ["kohya", "diffusers", "peft"] as const) {
      // A learning rate far below float32's resolution: the step leaves the weights as loaded.
      const result = await train(
        config(join(dir.path, `from-${format}`), { init_lora: files[format], learning_rate: 1e-30 }),
      );
      const out = result.stages[0]!.loraFiles.kohya!;
      await expectSameTensors(out, files.kohya!);
      const { metadata } = await readSafetensors(out);
      expect([metadata.ss_network_dim, metadata.ss_network_alpha].map(Number)).toEqual([LORA.rank, LORA.alpha]);
    }
  });

  it("refuses a rank, targets or trained model that contradict the file", async () => {
    const file = start.stages[0]!.loraFiles.kohya!;
    const refused = async (name: string, extra: Record<string, unknown>) =>
      ((await train(config(join(dir.path, name), { init_lora: file, ...extra })).catch((e: Error) => e)) as Error)
        .message;
    const rank = await refused("rank", { lora: { rank: LORA.rank + 1 } });
    expect(rank).toContain(file);
    expect(rank).toContain(`lora.rank is ${LORA.rank + 1}, the file's ${LORA.rank}`);
    expect(await refused("targets", { lora: { unet_targets: ["to_q"] } })).toMatch(
      /lora\.unet_targets does not select \d+ .* of its modules/,
    );
    expect(await refused("te", { train_text_encoder: "lora" })).toMatch(
      /holds no text_encoder modules, but train_text_encoder is lora/,
    );
    expect(await refused("missing", { init_lora: join(dir.path, "nope.safetensors") })).toMatch(
      /init_lora .*nope\.safetensors: no such file/,
    );
  });
});
