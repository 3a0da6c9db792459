// evaluate() mode B end to end on the tiny models: the real pipeline (tiny-sd) generates
// the base model and LoRA variants (the fixture LoRA files) with identical seeds, tiny-clip
// scores them; resuming, determinism, a caller's pipeline, the training hook, the report in
// Chromium and `sdtune eval --model ... --lora ...`.
import { copyFile, mkdir, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import sharp from "sharp";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";

import { command as evalCommand } from "../src/cli/eval.js";
import { ClipScorer } from "../src/eval/clip_score.js";
import { evaluate, type EvaluateOutput } from "../src/eval/evaluate.js";
import { EVAL_KEY_CHUNK } from "../src/eval/generate.js";
import { evalReportHref, evaluateRun } from "../src/eval/hooks.js";
import type { EvalResult } from "../src/eval/results.js";
import { readPngText } from "../src/io/png.js";
import { loadPipeline } from "../src/pipeline/load.js";
import type { StableDiffusionPipeline } from "../src/pipeline/pipeline.js";
import { fixture, goldenPipelineCall, tempDir } from "./helpers/fixtures.js";
import { expectMetricTable, pageImages, withReportPage } from "./helpers/report_browser.js";
import { captureCli } from "./helpers/capture.js";

const TINY_SD = fixture("tiny-sd");
const CLIP = fixture("tiny-clip");
const KOHYA = fixture("lora", "kohya", "lora.safetensors");
const DIFFUSERS = fixture("lora", "diffusers", "pytorch_lora_weights.safetensors");
const PEFT_FOLDER = fixture("lora", "peft_adapter_unet");
const INSTANCE = fixture("clip_images");
const PROMPTS = ["a red cube", "a photo of sks dog"];
const { width: W, height: H } = goldenPipelineCall();

/** Small and quick: the fixtures' golden image size, two steps of an ancestral sampler (it draws noise every step). */
const GENERATE = {
  model: TINY_SD,
  prompts: PROMPTS,
  seeds: [0, 1],
  steps: 2,
  sampler: "euler_ancestral",
  guidance_scale: 5,
  width: W,
  height: H,
};

const VARIANTS = [
  { name: "kohya", loras: [{ path: KOHYA, scale: 1 }] },
  { name: "zero", loras: [{ path: DIFFUSERS, scale: 0 }] },
  {
    name: "both",
    loras: [
      { path: KOHYA, scale: 0.5, name: "k" },
      { path: PEFT_FOLDER, scale: 1, name: "p" },
    ],
  },
];

let dir: { path: string; cleanup(): Promise<void> };
let scorer: ClipScorer;
let pipe: StableDiffusionPipeline;
let full: EvaluateOutput;

function config(outputDir: string, generate: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    output_dir: outputDir,
    title: "mode B",
    clip_model: CLIP,
    instance_images: INSTANCE,
    grid_cell: 32,
    generate: { ...GENERATE, variants: VARIANTS, ...generate },
  };
}

const FILES = ["p000-s0.png", "p000-s1.png", "p001-s0.png", "p001-s1.png"];
const image = (out: string, variant: string, file: string): string => join(out, "images", variant, file);
const pixels = (path: string): Promise<Buffer> => sharp(path).raw().toBuffer();

/** mtime and inode of every generated PNG: unchanged when a rerun kept the file. */
async function fileStamps(out: string): Promise<Map<string, string>> {
  const stamps = new Map<string, string>();
  for (const variant of await readdir(join(out, "images"))) {
    for (const file of (await readdir(join(out, "images", variant))).filter((f) => f.endsWith(".png"))) {
      const s = await stat(join(out, "images", variant, file));
      stamps.set(`${variant}/${file}`, `${s.mtimeMs}:${s.ino}`);
    }
  }
  return stamps;
}

beforeAll(async () => {
  dir = await tempDir("sdtune-evalgen-");
  // A plain call: no pipeline or scorer handed in, evaluate loads both itself.
  full = await evaluate(config(join(dir.path, "full")));
  scorer = await ClipScorer.load(CLIP);
  pipe = await loadPipeline(TINY_SD);
});
afterAll(async () => {
  scorer?.dispose();
  pipe?.dispose();
  await dir?.cleanup();
});

describe("evaluate, mode B (generate, then score)", () => {
  it("generates base and every LoRA variant with the same prompts and seeds, and scores them", async () => {
    const r = full.result;
    expect(r.mode).toBe("generate");
    expect(r.prompts).toEqual(PROMPTS);
    expect(r.variants.map((v) => [v.name, v.source, v.images])).toEqual([
      ["base", "base model", 4],
      ["kohya", "kohya-1@1", 4],
      ["zero", "zero-1@0", 4],
      ["both", "k@0.5 + p@1", 4],
    ]);
    for (const v of r.variants) {
      expect(v.perImage.map((i) => [i.file, i.promptIndex, i.seed])).toEqual([
        ["p000-s0.png", 0, 0],
        ["p000-s1.png", 0, 1],
        ["p001-s0.png", 1, 0],
        ["p001-s1.png", 1, 1],
      ]);
      expect(v.clipI).not.toBeNull();
    }
    // The scores are CLIP's for these files and prompts.
    const kohya = r.variants[1]!;
    const direct = await scorer.pairScores(
      FILES.map((f) => image(full.outputDir, "kohya", f)),
      [PROMPTS[0]!, PROMPTS[0]!, PROMPTS[1]!, PROMPTS[1]!],
    );
    kohya.perImage.forEach((img, i) => expect(Math.abs(img.clipScoreRaw - direct.scores[i]!)).toBeLessThan(1e-5));
    expect(r.grids.map((g) => [g.file, g.variants.length, g.prompts.length])).toEqual([
      ["grids/seed-0.png", 4, 2],
      ["grids/seed-1.png", 4, 2],
    ]);
    const metadata = await readFile(join(full.outputDir, "images", "kohya", "metadata.jsonl"), "utf8");
    expect(
      metadata
        .trim()
        .split("\n")
        .map((l) => JSON.parse(l) as unknown),
    ).toEqual([
      { file_name: "p000-s0.png", prompt: PROMPTS[0], seed: 0 },
      { file_name: "p000-s1.png", prompt: PROMPTS[0], seed: 1 },
      { file_name: "p001-s0.png", prompt: PROMPTS[1], seed: 0 },
      { file_name: "p001-s1.png", prompt: PROMPTS[1], seed: 1 },
    ]);
  });

  it("a LoRA at scale 0 gives the base image; LoRAs at other scales change it", async () => {
    for (const f of FILES) {
      const base = await pixels(image(full.outputDir, "base", f));
      expect((await pixels(image(full.outputDir, "zero", f))).equals(base), f).toBe(true);
      const kohya = await pixels(image(full.outputDir, "kohya", f));
      const both = await pixels(image(full.outputDir, "both", f));
      expect(kohya.equals(base), f).toBe(false);
      expect(both.equals(base), f).toBe(false);
      expect(both.equals(kohya), f).toBe(false);
    }
  });

  it("PNGs carry A1111 parameters of what made them, and the key a rerun compares", async () => {
    const png = await readFile(image(full.outputDir, "both", "p001-s1.png"));
    const text = readPngText(png);
    expect(text.parameters).toMatch(/^a photo of sks dog <lora:k:0\.5> <lora:p:1>\n/);
    expect(text.parameters).toMatch(
      /Steps: 2, Sampler: Euler a, CFG scale: 5, Seed: 1, Size: 24x16, Model hash: [0-9a-f]{10}, Model: tiny-sd/,
    );
    expect(text.parameters).toMatch(/Lora hashes: "k: [0-9a-f]{12}, p: [0-9a-f]{12}"/);
    expect(readPngText(await readFile(image(full.outputDir, "base", "p000-s0.png"))).parameters).not.toMatch(/lora/i);
    const key = JSON.parse(text[EVAL_KEY_CHUNK]!) as { loras: { name: string; scale: number; sha256: string }[] };
    expect(key).toMatchObject({ prompt: PROMPTS[1], seed: 1, steps: 2, dtype: "float32", device: "cpu" });
    expect(key.loras.map((l) => [l.name, l.scale, l.sha256.length])).toEqual([
      ["k", 0.5, 64],
      ["p", 1, 64],
    ]);
  });

  it("base images are byte-identical generated alone, after other variants, and on a pipeline with a LoRA active", async () => {
    const alone = join(dir.path, "alone");
    await evaluate(config(alone, { variants: [] }), { scorer, pipeline: pipe });
    // On a caller's pipeline (a trainer's, say) that has its own adapter active: eval
    // switches it off for the base variant and leaves the pipeline as it found it.
    await pipe.loadLora(KOHYA, { name: "trainer", scale: 0.7 });
    const before = (await pipe.generate({ prompt: "x", steps: 2, width: W, height: H, seed: 5 })).images[0]!.png!;
    const given = join(dir.path, "given");
    await evaluate(config(given, { variants: VARIANTS.slice(0, 1) }), { scorer, pipeline: pipe });
    for (const f of FILES) {
      const reference = await readFile(image(full.outputDir, "base", f));
      expect((await readFile(image(alone, "base", f))).equals(reference), `alone ${f}`).toBe(true);
      expect((await readFile(image(given, "base", f))).equals(reference), `given pipeline ${f}`).toBe(true);
      const kohya = await readFile(image(full.outputDir, "kohya", f));
      expect((await readFile(image(given, "kohya", f))).equals(kohya), `given pipeline kohya ${f}`).toBe(true);
    }
    expect(pipe.loras).toEqual({ trainer: 0.7 });
    await expect(pipe.setAdapters(["kohya-1"])).rejects.toThrow(/no LoRA adapter named "kohya-1"/);
    const after = (await pipe.generate({ prompt: "x", steps: 2, width: W, height: H, seed: 5 })).images[0]!.png!;
    expect(after.equals(before)).toBe(true);
    await pipe.unloadLora("trainer");
  });

  it("resumes: images with the same parameters are kept, missing or changed ones generated", async () => {
    const out = join(dir.path, "resume");
    const first = await evaluate(config(out), { scorer, pipeline: pipe });
    const json = await readFile(first.files.evalJson);
    const stamps = await fileStamps(out);
    expect(stamps.size).toBe(16);
    const generate = vi.spyOn(pipe, "generate");
    try {
      const again = await evaluate(config(out), { scorer, pipeline: pipe });
      expect(generate).toHaveBeenCalledTimes(0);
      expect(await fileStamps(out)).toEqual(stamps);
      expect((await readFile(again.files.evalJson)).equals(json)).toBe(true);

      const lost = image(out, "both", "p001-s0.png");
      const lostBytes = await readFile(lost);
      await rm(lost);
      await evaluate(config(out), { scorer, pipeline: pipe });
      expect(generate).toHaveBeenCalledTimes(1);
      expect((await readFile(lost)).equals(lostBytes)).toBe(true);

      // Another scale for one variant: only its images are made again.
      generate.mockClear();
      const rescaled = [{ name: "kohya", loras: [{ path: KOHYA, scale: 0.5 }] }, ...VARIANTS.slice(1)];
      await evaluate(config(out, { variants: rescaled }), { scorer, pipeline: pipe });
      expect(generate).toHaveBeenCalledTimes(4);
      const now = await fileStamps(out);
      for (const [file, stamp] of stamps) {
        if (file.startsWith("kohya/")) expect(now.get(file), file).not.toBe(stamp);
        else if (file !== "both/p001-s0.png") expect(now.get(file), file).toBe(stamp);
      }
    } finally {
      generate.mockRestore();
    }
    // Without a pipeline handed in, a complete folder needs none: nothing is rewritten.
    const fullStamps = await fileStamps(full.outputDir);
    await evaluate(config(full.outputDir), { scorer });
    expect(await fileStamps(full.outputDir)).toEqual(fullStamps);
  });

  it("eval.json is byte-identical across two runs that each generate everything", async () => {
    const second = await evaluate(config(join(dir.path, "second")), { scorer, pipeline: pipe });
    expect((await readFile(second.files.evalJson)).equals(await readFile(full.files.evalJson))).toBe(true);
  });

  it("refuses an unknown sampler, a missing LoRA file and two LoRAs under one name before loading the model", async () => {
    const out = join(dir.path, "bad");
    await expect(evaluate(config(out, { sampler: "lms" }), { scorer })).rejects.toThrow(
      /generate\.sampler: unknown sampler "lms"; valid samplers: .*euler_ancestral/,
    );
    await expect(
      evaluate(config(out, { variants: [{ name: "gone", loras: [{ path: join(dir.path, "nope.safetensors") }] }] }), {
        scorer,
      }),
    ).rejects.toThrow(/LoRA .*nope\.safetensors does not exist/);
  });
});

describe("the mode B report", () => {
  it("opens in headless Chromium without errors; its grids load and its table shows eval.json", async () => {
    const result = JSON.parse(await readFile(full.files.evalJson, "utf8")) as EvalResult;
    await withReportPage(full.outputDir, async (page, problems) => {
      expect(await page.title()).toBe("mode B");
      expect(await page.locator("text=generated and scored").count()).toBeGreaterThan(0);
      const images = await pageImages(page);
      expect(images.map((i) => i.src)).toEqual(result.grids.map((g) => g.file));
      for (const img of images) expect(img.complete && img.width > 0, `image ${img.src}`).toBe(true);
      expect(await expectMetricTable(page, result)).toBe(4 * 4); // CLIP score, CLIP-T, CLIP-I, all pairs
      expect(problems).toEqual([]);
    });
  });
});

describe("evaluateRun (the training hook)", () => {
  it("evaluates a finished stage of a run folder: base vs its LoRA, curves, links both ways", async () => {
    const run = join(dir.path, "run");
    await mkdir(join(run, "personal", "lora"), { recursive: true });
    const lora = join(run, "personal", "lora", "personal.safetensors");
    await copyFile(KOHYA, lora);
    const lines = [1, 2, 3, 4].map((step) => JSON.stringify({ stage: "personal", step, loss: 0.3 / step, lr: 1e-4 }));
    await writeFile(join(run, "metrics.jsonl"), `${lines.join("\n")}\n`);
    await writeFile(join(run, "report.html"), "<!doctype html><title>training</title>");

    const out = await evaluateRun({
      runDir: run,
      stage: "personal",
      model: TINY_SD,
      loras: [{ path: lora }],
      prompts: ["a photo of sks dog"],
      seeds: [0, 1],
      steps: 2,
      sampler: "ddim",
      guidanceScale: 5,
      width: W,
      height: H,
      instanceImages: INSTANCE,
      clipModel: CLIP,
      scorer,
      pipeline: pipe, // as a trainer would hand in its own
    });
    expect(out.outputDir).toBe(join(run, "eval", "personal"));
    expect(out.result.variants.map((v) => [v.name, v.source, v.images])).toEqual([
      ["base", "base model", 2],
      ["personal", "personal-1@1", 2],
    ]);
    expect(out.result.runs.map((r) => [r.name, r.points, r.finalStep])).toEqual([["run", 4, 4]]);
    expect(out.result.trainingReport).toBe("../../report.html");
    expect(await readFile(out.files.report, "utf8")).toContain('href="../../report.html"');
    expect(evalReportHref(join(run, "report.html"), out.outputDir)).toBe("eval/personal/report.html");
    const params = readPngText(await readFile(image(out.outputDir, "personal", "p000-s1.png"))).parameters!;
    expect(params).toMatch(
      new RegExp(`<lora:personal-1:1>[\\s\\S]*Sampler: DDIM, CFG scale: 5, Seed: 1, Size: ${W}x${H}`),
    );
  });
});

describe("sdtune eval --model --lora (CLI)", () => {
  const run = (argv: string[]) => captureCli(() => evalCommand.run(argv));

  it("generates base and one variant per --lora with the given seeds, sampler and steps, then scores", async () => {
    const out = join(dir.path, "cli");
    const common = ["--model", TINY_SD, "--prompt", PROMPTS[0]!, "--prompt", PROMPTS[1]!, "--seeds", "0,1"];
    const { code, out: stdout } = await run([
      ...common,
      "--lora",
      `${KOHYA}@0.5`,
      "--lora",
      `${DIFFUSERS}@0`,
      "--sampler",
      "dpmpp_2m_karras",
      "--steps",
      "3",
      "--guidance-scale",
      "4",
      "--width",
      String(W),
      "--height",
      String(H),
      "--clip",
      CLIP,
      "--out",
      out,
      "--json",
      "grid_cell=32",
    ]);
    expect(code).toBe(0);
    const summary = JSON.parse(stdout) as { report: string; variants: { name: string; images: number }[] };
    expect(summary.report).toBe(join(out, "report.html"));
    expect(summary.variants).toEqual([
      expect.objectContaining({ name: "base", images: 4 }),
      expect.objectContaining({ name: "kohya", images: 4 }),
      expect.objectContaining({ name: "diffusers", images: 4 }),
    ]);
    for (const f of FILES) {
      const base = await pixels(image(out, "base", f));
      expect((await pixels(image(out, "diffusers", f))).equals(base), f).toBe(true);
      expect((await pixels(image(out, "kohya", f))).equals(base), f).toBe(false);
    }
    const params = readPngText(await readFile(image(out, "kohya", "p001-s1.png"))).parameters!;
    expect(params).toMatch(/<lora:kohya:0\.5>[\s\S]*Steps: 3, Sampler: DPM\+\+ 2M Karras, CFG scale: 4, Seed: 1/);

    await expect(run([...common, "--sampler", "lms", "--clip", CLIP, "--out", out])).rejects.toThrow(
      /unknown sampler "lms"/,
    );
  });
});
