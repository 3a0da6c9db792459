// `sdtune generate` through the CLI's main() (the path bin/sdtune.js takes), on the tiny pipeline.
import { existsSync } from "node:fs";
import { readdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";

import sharp from "sharp";
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from "vitest";

import { main } from "../src/cli/main.js";
import { readPngText } from "../src/io/png.js";
import { fixture, goldenPipelineCall, tempDir } from "./helpers/fixtures.js";
import { captureCli } from "./helpers/capture.js";

const SD = fixture("tiny-sd");
let dir: { path: string; cleanup(): Promise<void> };
beforeAll(async () => {
  dir = await tempDir("sdtune-generate-cli-");
});
afterAll(async () => dir.cleanup());
afterEach(() => vi.restoreAllMocks());

const cli = (...argv: string[]) => captureCli(() => main(argv));

// The golden pipeline call's image size (any multiple of 8 the tiny model runs quickly).
const { width: W, height: H } = goldenPipelineCall();
const small = ["--model", SD, "--width", String(W), "--height", String(H), "--steps", "2", "--sampler", "ddim"];

describe("sdtune generate", () => {
  it("writes numbered PNGs with their parameters, prints each with its seed, and a grid", async () => {
    const out = join(dir.path, "run1");
    const r = await cli(
      "generate",
      ...small,
      "--prompt",
      "a tiny red robot",
      "--negative-prompt",
      "blurry",
      "--seed",
      "7",
      "--num-images",
      "2",
      "--clip-skip",
      "1",
      "--out",
      out,
      "--grid",
    );
    expect(r.code, r.err).toBe(0);
    expect(r.out.split("\n")).toEqual([
      `${join(out, "00000-7.png")}  seed 7`,
      `${join(out, "00001-8.png")}  seed 8`,
      `${join(out, "grid-00001.png")}  grid of 2`,
    ]);
    for (const [file, seed] of [
      ["00000-7.png", 7],
      ["00001-8.png", 8],
    ] as const) {
      const text = readPngText(await readFile(join(out, file))).parameters!;
      expect(text.split("\n")).toEqual([
        "a tiny red robot",
        "Negative prompt: blurry",
        expect.stringMatching(
          new RegExp(
            `^Steps: 2, Sampler: DDIM, CFG scale: 7.5, Seed: ${seed}, Size: ${W}x${H}, Model hash: [0-9a-f]{10}, Model: tiny-sd, Clip skip: 2, `,
          ),
        ),
      ]);
    }
    const grid = await readFile(join(out, "grid-00001.png"));
    expect(readPngText(grid).parameters).toMatch(/Seed: 7/);
    expect((await sharp(grid).metadata()).width).toBeGreaterThan(2 * W); // two images side by side
    // A second run in the same folder continues the numbering; the same seed gives the same bytes.
    const again = await cli(
      "generate",
      ...small,
      "--prompt",
      "a tiny red robot",
      "--negative-prompt",
      "blurry",
      "--seed",
      "7",
      "--clip-skip",
      "1",
      "--out",
      out,
    );
    expect(again.code, again.err).toBe(0);
    expect(again.out).toBe(`${join(out, "00002-7.png")}  seed 7`);
    expect((await readFile(join(out, "00002-7.png"))).equals(await readFile(join(out, "00000-7.png")))).toBe(true);
  });

  it("reads prompts from a file and reports JSON", async () => {
    const file = join(dir.path, "prompts.txt");
    await writeFile(file, "# my prompts\na cat\n\na dog\n");
    const out = join(dir.path, "run2");
    const r = await cli("generate", ...small, "--prompts-file", file, "--seed", "1", "--out", out, "--json");
    expect(r.code, r.err).toBe(0);
    const report = JSON.parse(r.out) as {
      images: { file: string; seed: number; prompt: string }[];
      timings: { total: number };
    };
    expect(report.images.map((i) => [i.prompt, i.seed])).toEqual([
      ["a cat", 1],
      ["a dog", 2],
    ]);
    expect(report.timings.total).toBeGreaterThan(0);
    expect((await readdir(out)).sort()).toEqual(["00000-1.png", "00001-2.png"]);
  });

  it("applies --lora FILE:SCALE and records it in the parameters", async () => {
    const out = join(dir.path, "lora");
    const lora = fixture("lora", "kohya", "lora.safetensors");
    const r = await cli(
      "generate",
      ...small,
      "--prompt",
      "a cat",
      "--seed",
      "3",
      "--lora",
      `${lora}:0.75`,
      "--out",
      out,
    );
    expect(r.code, r.err).toBe(0);
    expect(r.err).toMatch(/LoRA lora \(.*lora\.safetensors\) at scale 0\.75/);
    const text = readPngText(await readFile(join(out, "00000-3.png"))).parameters!;
    expect(text.split("\n")[0]).toBe("a cat <lora:lora:0.75>");
    const base = await cli("generate", ...small, "--prompt", "a cat", "--seed", "3", "--out", out);
    expect(base.code, base.err).toBe(0);
    const [a, b] = await Promise.all(["00000-3.png", "00001-3.png"].map((f) => sharp(join(out, f)).raw().toBuffer()));
    expect(a!.equals(b!)).toBe(false); // the LoRA changed the image
  });

  it("explains bad usage and bad values", async () => {
    const noModel = await cli("generate", "--prompt", "x");
    expect([noModel.code, noModel.err]).toEqual([2, expect.stringMatching(/--model is required/)]);
    const noPrompt = await cli("generate", "--model", SD);
    expect([noPrompt.code, noPrompt.err]).toEqual([2, expect.stringMatching(/at least one --prompt/)]);
    const notInt = await cli("generate", ...small, "--prompt", "x", "--steps", "many");
    expect([notInt.code, notInt.err]).toEqual([2, expect.stringMatching(/--steps expects an integer \(got "many"\)/)]);
    const out = join(dir.path, "bad");
    const badWidth = await cli("generate", ...small, "--prompt", "x", "--width", "20", "--out", out);
    // Checked before the model loads: usage errors (exit code 2).
    expect([badWidth.code, badWidth.err]).toEqual([
      2,
      expect.stringMatching(/width 20 is not a multiple of 8; use 16 or 24/),
    ]);
    const badSampler = await cli("generate", ...small, "--prompt", "x", "--sampler", "lms", "--out", out);
    expect([badSampler.code, badSampler.err]).toEqual([
      2,
      expect.stringMatching(/unknown sampler "lms"; valid samplers: /),
    ]);
    expect(existsSync(out)).toBe(false);
  });

  it("cancels on Ctrl-C without writing anything", async () => {
    const out = join(dir.path, "cancelled");
    const timer = setTimeout(() => process.emit("SIGINT"), 300);
    const r = await cli("generate", ...small, "--steps", "900", "--prompt", "x", "--out", out);
    clearTimeout(timer);
    expect([r.code, r.err]).toEqual([130, expect.stringMatching(/cancelled/)]);
    expect(existsSync(out)).toBe(false);
  });
});
