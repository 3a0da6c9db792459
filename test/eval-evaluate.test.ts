// evaluate(): mode A end to end on real images and the tiny CLIP model, tied to the
// torchmetrics golden numbers; outputs, determinism, prompt sources, runs, mode B seams, CLI.
import { existsSync } from "node:fs";
import { mkdir, readFile, writeFile } from "node:fs/promises";
import { join, relative } from "node:path";
import sharp from "sharp";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { stringify as toYaml } from "yaml";

import { main } from "../src/cli/main.js";
import { aggregateClipScore, clipImageSimilarity, ClipScorer } from "../src/eval/clip_score.js";
import { parseEvalConfig } from "../src/config/eval.js";
import { resolveEvalConfigPaths } from "../src/config/paths.js";
import { evaluate, type EvaluateOutput } from "../src/eval/evaluate.js";
import { variantPlan } from "../src/eval/generate.js";
import { evalReportHref } from "../src/eval/hooks.js";
import { buildConfig } from "../src/cli/eval.js";
import { parseInfotext, readEvalImages } from "../src/eval/images.js";
import { stat, type EvalResult } from "../src/eval/results.js";
import { parseMetricsJsonl, readRunCurves } from "../src/eval/runs.js";
import { fixture, get, golden, tempDir, TOL, values } from "./helpers/fixtures.js";
import { makeEvalFixture, type EvalFixture } from "./helpers/eval_fixture.js";

let dir: { path: string; cleanup(): Promise<void> };
let fx: EvalFixture;
let scorer: ClipScorer;
let out: EvaluateOutput;

const CLIP = fixture("tiny-clip");

function configFor(outputDir: string): Record<string, unknown> {
  return {
    output_dir: outputDir,
    title: "tiny eval",
    clip_model: CLIP,
    batch_size: 3,
    images: [{ path: fx.goldenDir, name: "golden" }, { path: fx.taggedDir }],
    instance_images: fx.instanceDir,
    runs: [fx.runDir, fx.stagedRunDir],
    grid_cell: 48,
  };
}

beforeAll(async () => {
  dir = await tempDir("sdtune-eval-");
  fx = await makeEvalFixture(dir.path);
  scorer = await ClipScorer.load(CLIP);
  out = await evaluate(configFor(join(dir.path, "out")));
});
afterAll(async () => {
  scorer.dispose();
  await dir.cleanup();
});

const near = (a: number, b: number, tol: { atol: number; rtol: number } = TOL.forward): void => {
  expect(Math.abs(a - b), `${a} vs ${b}`).toBeLessThanOrEqual(tol.atol + tol.rtol * Math.abs(b));
};

describe("evaluate, mode A (score image folders)", () => {
  it("scores the golden images as torchmetrics did: per image and over the variant", async () => {
    const ref = await golden("clip_score");
    const raw = await values(get(ref, "per_pair_score_raw"));
    const v = out.result.variants.find((x) => x.name === "golden")!;
    expect(v.images).toBe(fx.golden.images.length);
    expect(v.images).toBe(raw.length);
    v.perImage.forEach((img, i) => near(img.clipScoreRaw, raw[i]!));
    near(v.clipScore, (await values(get(ref, "clip_score")))[0]!);
    // One seed (0): the summary is that one replicate, without a spread.
    expect(v.replicateBy).toBe("seed");
    expect(v.summary.clipScore.n).toBe(1);
    expect(v.summary.clipScore.std).toBeNull();
    near(v.summary.clipScore.mean, v.clipScore, { atol: 1e-12, rtol: 0 });
  });

  it("takes prompts and seeds from PNG parameters, without <lora:...> tags", async () => {
    const v = out.result.variants.find((x) => x.name === "tagged")!;
    expect(v.images).toBe(4); // two prompts x seeds 1, 2 (helpers/eval_fixture.ts)
    expect(v.perImage.map((i) => i.seed)).toEqual([1, 2, 1, 2]);
    expect(v.perImage.map((i) => out.result.prompts[i.promptIndex])).toEqual([
      fx.golden.captions[0],
      fx.golden.captions[0],
      fx.golden.captions[1],
      fx.golden.captions[1],
    ]);
  });

  it("per-seed metrics are torchmetrics' CLIP score over that seed's images; the summary is mean ± std over seeds", async () => {
    const v = out.result.variants.find((x) => x.name === "tagged")!;
    // Independent check: score the same image/prompt pairs directly.
    const images = await readEvalImages(fx.taggedDir);
    const direct = await scorer.pairScores(
      images.map((i) => i.path),
      images.map((i) => i.prompt),
    );
    v.perImage.forEach((img, i) => near(img.clipScoreRaw, direct.scores[i]!, { atol: 1e-5, rtol: 0 }));
    const perSeed = [1, 2].map((s) => aggregateClipScore(direct.scores.filter((_, i) => images[i]!.seed === s)));
    expect(v.replicates.map((r) => r.seed)).toEqual([1, 2]);
    v.replicates.forEach((r, i) => near(r.clipScore, perSeed[i]!, { atol: 1e-5, rtol: 0 }));
    const expected = stat(perSeed);
    near(v.summary.clipScore.mean, expected.mean, { atol: 1e-5, rtol: 0 });
    near(v.summary.clipScore.std!, expected.std!, { atol: 1e-5, rtol: 0 });
    // Per prompt: the raw scores of its two seeds.
    const p0 = v.perPrompt.find((p) => p.index === 0)!;
    expect(p0.clipScoreRaw.n).toBe(2);
    near(p0.clipScoreRaw.mean, (direct.scores[0]! + direct.scores[1]!) / 2, { atol: 1e-5, rtol: 0 });
  });

  it("CLIP-I per image is the mean cosine to the instance images", async () => {
    const v = out.result.variants.find((x) => x.name === "golden")!;
    const gen = await scorer.embedImages(fx.golden.images.map((p) => fixture(p)));
    const inst = await scorer.embedImages([join(fx.instanceDir, "a.png"), join(fx.instanceDir, "b.png")]);
    const expected = await clipImageSimilarity(gen, inst);
    v.perImage.forEach((img, i) => near(img.clipI!, expected.perImage[i]!, { atol: 1e-6, rtol: 0 }));
    near(v.clipI!, expected.mean, { atol: 1e-6, rtol: 0 });
    expect(out.result.instanceImages).toEqual({ path: fx.instanceDir, count: 2 });
    gen.dispose();
    inst.dispose();
  });

  it("writes eval.json, run-info.json, grids and report.html; eval.json holds no timestamps", async () => {
    const text = await readFile(out.files.evalJson, "utf8");
    const parsed = JSON.parse(text) as EvalResult;
    expect(parsed.variants.map((v) => v.name)).toEqual(["golden", "tagged"]);
    expect(parsed.config).not.toHaveProperty("output_dir");
    expect(text).not.toMatch(/\d{4}-\d{2}-\d{2}T\d{2}:\d{2}/);
    const info = JSON.parse(await readFile(out.files.runInfo, "utf8")) as { started: string; seconds: object };
    expect(Date.parse(info.started)).not.toBeNaN();
    // Seeds 0 (golden), 1 and 2 (tagged): one grid per seed, prompts x variants.
    expect(parsed.grids.map((g) => g.file)).toEqual(["grids/seed-0.png", "grids/seed-1.png", "grids/seed-2.png"]);
    const meta = await sharp(join(out.outputDir, "grids", "seed-1.png")).metadata();
    expect(meta.width).toBeGreaterThan(2 * 48);
    expect(meta.height).toBeGreaterThan(fx.golden.captions.length * 48); // a row per prompt
    const html = await readFile(out.files.report, "utf8");
    expect(html).toContain('<img src="grids/seed-0.png"');
    expect(html).toMatch(/<svg[^>]*class="marks"/);
    expect(parsed.runs.map((r) => r.name)).toEqual(["run-1", "run-2/concept", "run-2/personal"]);
    expect(parsed.runs[0]).toMatchObject({ points: 60, skipped: 2, finalStep: 60, report: "../run-1/report.html" });
  });

  it("identical inputs give a byte-identical eval.json, also in another output folder", async () => {
    const first = await readFile(out.files.evalJson);
    const again = await evaluate(configFor(join(dir.path, "out")), { scorer });
    expect((await readFile(again.files.evalJson)).equals(first)).toBe(true);
    const elsewhere = await evaluate(configFor(join(dir.path, "out-2")), { scorer });
    expect((await readFile(elsewhere.files.evalJson)).equals(first)).toBe(true);
  });
});

describe("prompt sources and bad input", () => {
  it("reads sidecar .txt prompts and a prompts file, and says how to provide missing prompts", async () => {
    const folder = join(dir.path, "sidecar");
    await mkdir(folder, { recursive: true });
    const png = await readFile(fixture(fx.golden.images[0]!));
    await writeFile(join(folder, "a.png"), png);
    await writeFile(join(folder, "a.txt"), "a striped cloth\nsecond line ignored");
    await writeFile(join(folder, "b.png"), png);
    await expect(readEvalImages(folder)).rejects.toThrow(/1 image\(s\) in .* have no prompt \(b\.png\).*prompts file/);
    const images = await readEvalImages(folder, { prompts: ["from the prompts file"] });
    expect(images.map((i) => [i.file, i.prompt, i.promptSource])).toEqual([
      ["a.png", "a striped cloth", "sidecar"],
      ["b.png", "from the prompts file", "prompts_file"],
    ]);
    await expect(readEvalImages(folder, { prompts: ["x", "y"] })).rejects.toThrow(/has 2 prompts but .* 1 image/);
  });

  it("parses A1111 infotext: multi-line prompts, negative prompt, seed, extra-network tags", () => {
    expect(
      parseInfotext("a cat <lora:x:0.5>\non a mat\nNegative prompt: blurry\nSteps: 20, Seed: 42, Size: 64x64"),
    ).toEqual({ prompt: "a cat\non a mat", seed: 42 });
    expect(parseInfotext("just a prompt")).toEqual({ prompt: "just a prompt", seed: null });
  });

  it("names the config key at fault, and refuses both or neither mode", () => {
    expect(() => parseEvalConfig({ output_dir: "x" })).toThrow(/either `images`/);
    expect(() =>
      parseEvalConfig({ output_dir: "x", images: [{ path: "a" }], generate: { model: "m", prompts: ["p"] } }),
    ).toThrow(/not both/);
    expect(() => parseEvalConfig({ output_dir: "x", images: [{ path: "a/imgs" }, { path: "b/imgs" }] })).toThrow(
      /two variants are named "imgs"/,
    );
    expect(() => parseEvalConfig({ output_dir: "x", images: [{ path: "a" }], batch_size: 0 })).toThrow(/batch_size/);
  });

  it("reports an empty image folder and a missing run clearly", async () => {
    const empty = join(dir.path, "empty");
    await mkdir(empty, { recursive: true });
    await expect(
      evaluate({ output_dir: join(dir.path, "o"), clip_model: CLIP, images: [{ path: empty }] }),
    ).rejects.toThrow(/holds no images/);
    await expect(readRunCurves([join(dir.path, "no-such-run")])).rejects.toThrow(/does not exist/);
  });
});

describe("training curves", () => {
  it("splits one metrics.jsonl into a curve per stage when its lines name several", async () => {
    const run = join(dir.path, "run-one-log");
    await mkdir(run, { recursive: true });
    const rows = [
      { stage: "concept", step: 1, loss: 0.3, lr: 1e-4 },
      { stage: "concept", step: 2, loss: 0.25, lr: 1e-4 },
      { stage: "personal", step: 1, loss: 0.2, lr: 5e-5 },
    ];
    await writeFile(join(run, "metrics.jsonl"), rows.map((r) => JSON.stringify(r)).join("\n"));
    const curves = await readRunCurves([run]);
    expect(curves.map((c) => [c.name, c.points.length])).toEqual([
      ["run-one-log/concept", 2],
      ["run-one-log/personal", 1],
    ]);
  });

  it("keeps lines with numeric step and loss, counting the rest (other events, a line cut by a crash)", () => {
    const { points, skipped } = parseMetricsJsonl(
      '{"step":1,"loss":0.5,"lr":0.001}\n{"event":"x"}\n{"step":2,"loss":0.4}\n{"st',
    );
    expect(points).toEqual([
      { step: 1, loss: 0.5, lr: 0.001 },
      { step: 2, loss: 0.4, lr: null },
    ]);
    expect(skipped).toBe(2);
  });
});

describe("mode B config", () => {
  it("sdtune eval turns --model/--lora/--prompt/--seeds into a generate config", () => {
    const config = parseEvalConfig(
      buildConfig(
        {
          model: "sd",
          lora: ["loras/dog/pytorch_lora_weights.safetensors@0.8", "style.safetensors"],
          prompt: ["a dog", "a cat"],
          seeds: "3,4",
          out: "o",
          "no-base": true,
        },
        ["generate.steps=12"],
        {},
      ),
    );
    expect(config.generate).toMatchObject({ model: "sd", prompts: ["a dog", "a cat"], seeds: [3, 4], steps: 12 });
    expect(config.generate!.include_base).toBe(false);
    expect(config.generate!.variants.map((v) => [v.name, v.loras[0]!.scale])).toEqual([
      ["dog", 0.8],
      ["style", 1],
    ]);
  });

  it("--lora A@s+B applies both in one variant; one LoRA at two scales gets @scale names", () => {
    const config = parseEvalConfig(
      buildConfig(
        {
          model: "sd",
          prompt: ["p"],
          out: "o",
          lora: ["a.safetensors@0.5+b/adapter_model.safetensors", "a.safetensors@0.5", "a.safetensors@2"],
        },
        [],
        {},
      ),
    );
    expect(config.generate!.variants).toEqual([
      {
        name: "a+b",
        loras: [
          { path: "a.safetensors", scale: 0.5, name: "a" },
          { path: "b/adapter_model.safetensors", scale: 1, name: "b" },
        ],
      },
      { name: "a@0.5", loras: [{ path: "a.safetensors", scale: 0.5, name: "a" }] },
      { name: "a@2", loras: [{ path: "a.safetensors", scale: 2, name: "a" }] },
    ]);
  });

  it("refuses variant names that are not folder names and one adapter name for two files", () => {
    const generate = (variants: unknown[]) => ({ output_dir: "x", generate: { model: "m", prompts: ["p"], variants } });
    expect(() => parseEvalConfig(generate([{ name: "a/b", loras: [{ path: "l" }] }]))).toThrow(
      /generate\.variants\[0\]\.name: a variant name is a folder name/,
    );
    const twoFiles = parseEvalConfig(
      generate([
        { name: "x", loras: [{ path: "one/l.safetensors", name: "l" }] },
        { name: "y", loras: [{ path: "two/l.safetensors", name: "l" }] },
      ]),
    );
    expect(() => variantPlan(twoFiles.generate!)).toThrow(
      /two LoRAs are named "l" \(one\/l\.safetensors, two\/l\.safetensors\)/,
    );
  });

  it("plans base + one variant per LoRA set, with the same seeds for all", () => {
    const config = parseEvalConfig({
      output_dir: "x",
      generate: {
        model: "m",
        prompts: ["p"],
        variants: [{ name: "mine", loras: [{ path: "a.safetensors", scale: 0.8 }, { path: "b.safetensors" }] }],
      },
    });
    expect(variantPlan(config.generate!)).toEqual([
      { name: "base", loras: [] },
      {
        name: "mine",
        loras: [
          { path: "a.safetensors", scale: 0.8, name: "mine-1" },
          { path: "b.safetensors", scale: 1, name: "mine-2" },
        ],
      },
    ]);
  });
});

describe("training integration", () => {
  it("evalReportHref links a training report to the eval report once it exists", () => {
    expect(evalReportHref(join(fx.runDir, "report.html"), out.outputDir)).toBe("../out/report.html");
    expect(evalReportHref(join(fx.runDir, "report.html"), join(dir.path, "nowhere"))).toBeNull();
  });
});

describe("sdtune eval (CLI)", () => {
  it("--config resolves the file's relative paths against its folder, not the working directory", async () => {
    const folder = join(dir.path, "configs", "nested");
    await mkdir(folder, { recursive: true });
    const file = join(folder, "eval.yaml");
    const config = {
      output_dir: "out",
      clip_model: relative(folder, CLIP),
      images: [{ path: relative(folder, fx.goldenDir), name: "g" }],
      grid_cell: 32,
    };
    await writeFile(file, toYaml(config));
    const lines: string[] = [];
    const original = console.log;
    console.log = (...args: unknown[]) => lines.push(args.join(" "));
    try {
      expect(await main(["eval", "--config", file, "--json"])).toBe(0);
    } finally {
      console.log = original;
    }
    const summary = JSON.parse(lines.join("\n")) as { report: string };
    expect(summary.report.startsWith(join(folder, "out"))).toBe(true);
    expect(existsSync(join(folder, "out", "eval.json"))).toBe(true);

    // Every path key, arrays included; hub ids and absolute paths stay as written.
    const raw = {
      runs: ["../runs/a"],
      prompts_file: "prompts.txt",
      clip_model: "openai/clip-vit-large-patch14",
      instance_images: "/abs/instances",
      generate: { model: "./base", variants: [{ name: "v", loras: [{ path: "loras/x.safetensors" }] }] },
    };
    const out = resolveEvalConfigPaths(raw, file) as typeof raw;
    expect(out.runs).toEqual([join(folder, "../runs/a")]);
    expect(out.prompts_file).toBe(join(folder, "prompts.txt"));
    expect(out.clip_model).toBe("openai/clip-vit-large-patch14");
    expect(out.instance_images).toBe("/abs/instances");
    expect(out.generate.model).toBe(join(folder, "base"));
    expect(out.generate.variants[0]!.loras[0]!.path).toBe(join(folder, "loras/x.safetensors"));
    expect(raw.runs).toEqual(["../runs/a"]);
  });

  it("scores folders and prints a JSON summary; usage errors exit 2", async () => {
    const lines: string[] = [];
    const original = console.log;
    console.log = (...args: unknown[]) => lines.push(args.join(" "));
    let code: number;
    try {
      code = await main([
        "eval",
        "--images",
        `${fx.goldenDir}=g`,
        "--clip",
        CLIP,
        "--out",
        join(dir.path, "cli"),
        "--json",
        "grid_cell=32",
      ]);
    } finally {
      console.log = original;
    }
    expect(code).toBe(0);
    const summary = JSON.parse(lines.join("\n")) as {
      report: string;
      variants: { name: string; clipScore: { mean: number } }[];
    };
    expect(existsSync(summary.report)).toBe(true);
    expect(summary.variants[0]!.name).toBe("g");
    // Another batch size (32 vs 3) changes the float32 sums in the last bits only.
    near(summary.variants[0]!.clipScore.mean, out.result.variants[0]!.clipScore, { atol: 1e-5, rtol: 0 });

    const errors: string[] = [];
    const originalError = console.error;
    console.error = (...args: unknown[]) => errors.push(args.join(" "));
    try {
      expect(await main(["eval", "--images", fx.goldenDir, "--bogus"])).toBe(2);
      expect(await main(["eval", "--images", fx.goldenDir, "--clip", CLIP])).toBe(1);
    } finally {
      console.error = originalError;
    }
    expect(errors.join("\n")).toMatch(/output_dir/);
  });
});
