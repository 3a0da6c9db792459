// Safe by construction, config side: stage names cannot leave the run folder, every
// size and count has a bound checked before anything is allocated (training configs
// and model config.json files alike), and a bounded fuzz over the config schema only
// ever yields a valid config or a ConfigError.
import { existsSync, readFileSync } from "node:fs";
import { cp, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { ConfigError } from "../src/config/errors.js";
import { resolveTrainConfig, TRAIN_LIMITS } from "../src/config/train.js";
import { parseClipTextEncoderConfig } from "../src/models/clip_config.js";
import { parseUNetConfig, parseVAEConfig } from "../src/models/config.js";
import { UNet } from "../src/models/unet.js";
import { train } from "../src/train/run.js";
import { insideRun, runPath } from "../src/train/paths.js";
import { stageDir } from "../src/train/stage.js";
import { fixture, tempDir } from "./helpers/fixtures.js";
import { minimal, problems } from "./helpers/train_config.js";
import { rng } from "./helpers/rng.js";

let dir: { path: string; cleanup(): Promise<void> };
beforeAll(async () => {
  dir = await tempDir("sdtune-safety-config-");
});
afterAll(async () => dir.cleanup());

describe("stage names and run paths", () => {
  it("refuses stage names that are not one portable folder name", () => {
    const bad = [
      "../../../tmp/x",
      "a/b",
      "a\\b",
      "/abs",
      "..",
      ".hidden",
      "a..b",
      "trailing.",
      "CON",
      "nul.txt",
      "sp ace",
      "ünï",
      "x".repeat(65),
    ];
    for (const name of bad) {
      const found = problems({ ...minimal, stages: [{ name }] });
      expect(found.join("\n"), name).toMatch(/^stages\[0\]\.name: /);
    }
    const good = ["concept", "stage-2", "person_v2.1", "A1"];
    const config = resolveTrainConfig({ ...minimal, stages: good.map((name) => ({ name })) });
    expect(config.stages.map((s) => s.name)).toEqual(good);
  });

  it("a path built from a name outside the run is refused before anything is created", () => {
    const run = join(dir.path, "run");
    expect(() => stageDir(run, "../elsewhere")).toThrow(/not inside the run folder/);
    expect(() => runPath(run, "class_images", "../../x")).toThrow(/not inside the run folder/);
    expect(() => insideRun(run, run)).toThrow(/not inside/);
    expect(stageDir(run, "ok")).toBe(join(run, "ok"));
  });

  it("train() with an escaping stage name fails before writing anything", async () => {
    const out = join(dir.path, "escape-run");
    const error = await train({
      ...minimal,
      model: fixture("tiny-sd"),
      output_dir: out,
      stages: [{ name: "../../escaped" }],
    }).catch((e: Error) => e);
    expect(error).toBeInstanceOf(ConfigError);
    expect(existsSync(out)).toBe(false);
    expect(existsSync(join(dir.path, "escaped"))).toBe(false);
  });
});

describe("bounds on sizes and counts", () => {
  it("absurd training sizes are refused with the field and its bound", () => {
    const cases: [Record<string, unknown>, RegExp][] = [
      [{ lora: { rank: 100_000_000 } }, /lora\.rank/],
      [{ resolution: 1_000_000 }, /resolution/],
      [{ train_batch_size: 100_000_000 }, /train_batch_size/],
      [{ gradient_accumulation_steps: 1e9 }, /gradient_accumulation_steps/],
      [
        {
          method: "dreambooth",
          instance_prompt: "a sks dog",
          prior_preservation: { class_prompt: "a dog", num_class_images: 1e12 },
        },
        /prior_preservation\.num_class_images/,
      ],
      [{ buckets: { max_side: 1e6 } }, /buckets\.max_side/],
    ];
    for (const [extra, field] of cases) {
      const found = problems({ ...minimal, ...extra }).join("\n");
      expect(found, JSON.stringify(extra)).toMatch(field);
      expect(found).toMatch(/<=|too big|at most/i);
    }
    expect(TRAIN_LIMITS.loraRank).toBeGreaterThanOrEqual(128);
    expect(resolveTrainConfig({ ...minimal, lora: { rank: TRAIN_LIMITS.loraRank } }).stages[0]!.lora.rank).toBe(
      TRAIN_LIMITS.loraRank,
    );
  });

  it("model configs asking for absurd sizes are refused before the model is built", async () => {
    const unetConfig = JSON.parse(readFileSync(fixture("tiny-sd", "unet", "config.json"), "utf8"));
    expect(() => parseUNetConfig({ ...unetConfig, layers_per_block: 1_000_000 }, "unet/config.json")).toThrow(
      /unet\/config\.json: "layers_per_block" = 1000000 is larger than sdtune allows/,
    );
    const vaeConfig = JSON.parse(readFileSync(fixture("tiny-sd", "vae", "config.json"), "utf8"));
    expect(() => parseVAEConfig({ ...vaeConfig, block_out_channels: [1e7] }, "vae/config.json")).toThrow(
      /"block_out_channels"/,
    );
    const textConfig = JSON.parse(readFileSync(fixture("tiny-sd", "text_encoder", "config.json"), "utf8"));
    expect(() =>
      parseClipTextEncoderConfig({ ...textConfig, num_hidden_layers: 1e9 }, "text_encoder/config.json"),
    ).toThrow(/"num_hidden_layers"/);

    // Through the loader: refused at once, nothing built.
    const copy = join(dir.path, "huge-unet");
    await cp(fixture("tiny-sd", "unet"), copy, { recursive: true });
    await writeFile(join(copy, "config.json"), JSON.stringify({ ...unetConfig, layers_per_block: 1_000_000 }));
    await expect(UNet.load(copy)).rejects.toThrow(/layers_per_block/);
  });
});

const WEIRD: unknown[] = [
  -1,
  0,
  1,
  1e308,
  -1e308,
  Number.MAX_SAFE_INTEGER,
  1e12,
  0.5,
  NaN,
  Infinity,
  "",
  "x",
  "../..",
  "/abs",
  null,
  true,
  [],
  {},
  [1, 2],
  { rank: 1e9 },
  "a".repeat(300),
];
const KEYS = [
  "lora",
  "resolution",
  "train_batch_size",
  "max_train_steps",
  "learning_rate",
  "name",
  "stages",
  "dataset",
  "prior_preservation",
  "buckets",
  "validation",
  "seed",
  "device",
  "mixed_precision",
  "gradient_accumulation_steps",
  "checkpointing_steps",
  "lr_scheduler",
  "save",
  "evaluate",
  "keep_tags",
];

describe("fuzz", () => {
  it("random configs give a valid, bounded config or a ConfigError, never anything else (bounded time)", () => {
    const random = rng(1234);
    const pick = <T>(xs: readonly T[]): T => xs[Math.floor(random() * xs.length)]!;
    const started = Date.now();
    let valid = 0;
    let refused = 0;
    for (let i = 0; i < 1500 && Date.now() - started < 15_000; i++) {
      const raw: Record<string, unknown> = structuredClone(minimal);
      for (let k = 0; k < 1 + Math.floor(random() * 3); k++) raw[pick(KEYS)] = pick(WEIRD);
      if (random() < 0.3) raw.stages = [{ name: pick(WEIRD), lora: { rank: pick(WEIRD) } }];
      try {
        const config = resolveTrainConfig(raw, "fuzz.yaml");
        valid++;
        for (const s of config.stages) {
          expect(s.name).toMatch(/^[A-Za-z0-9][A-Za-z0-9._-]*$/);
          expect(s.lora.rank).toBeLessThanOrEqual(TRAIN_LIMITS.loraRank);
          expect(s.train_batch_size).toBeLessThanOrEqual(TRAIN_LIMITS.batchSize);
          expect(s.resolution ?? 0).toBeLessThanOrEqual(TRAIN_LIMITS.side);
        }
      } catch (error) {
        expect(error, JSON.stringify(raw)).toBeInstanceOf(ConfigError);
        refused++;
      }
    }
    expect(valid).toBeGreaterThan(0);
    expect(refused).toBeGreaterThan(0);
  });
});
