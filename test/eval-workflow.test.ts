// Reports and image folders as users meet them: a log-scale learning-rate chart, a note
// instead of an empty CLIP chart, prompt texts listed, and generate's contact sheets
// (grid-*.png) left out of `eval --images`.
import { join } from "node:path";

import sharp from "sharp";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { CLAMPED_NOTE, clipScoreChart, trainingCharts } from "../src/eval/charts.js";
import { readEvalImages } from "../src/eval/images.js";
import { promptListHtml } from "../src/eval/report.js";
import { stat } from "../src/eval/results.js";
import { addPngText, formatInfotext } from "../src/io/png.js";
import { tempDir } from "./helpers/fixtures.js";
import { writeText } from "./helpers/images.js";

let dir: { path: string; cleanup(): Promise<void> };
beforeAll(async () => {
  dir = await tempDir("sdtune-eval-workflow-");
});
afterAll(async () => dir.cleanup());

const png = async (prompt: string, seed: number): Promise<Buffer> => {
  const image = await sharp({ create: { width: 8, height: 8, channels: 3, background: { r: seed, g: 0, b: 0 } } })
    .png()
    .toBuffer();
  const parameters = formatInfotext({ prompt, steps: 1, sampler: "DDIM", guidanceScale: 7, seed, width: 8, height: 8 });
  return addPngText(image, { parameters });
};

describe("eval inputs and report", () => {
  it("leaves generate's grid-*.png contact sheets out of an image folder", async () => {
    const folder = join(dir.path, "outputs");
    await writeText(join(folder, "00000-5.png"), await png("a red robot", 5));
    await writeText(join(folder, "00001-6.png"), await png("a red robot", 6));
    await writeText(join(folder, "grid-00001.png"), await png("a red robot", 5));
    const images = await readEvalImages(folder);
    expect(images.map((i) => [i.file, i.seed])).toEqual([
      ["00000-5.png", 5],
      ["00001-6.png", 6],
    ]);
  });

  it("draws the learning rate on a log axis (1e-5 gets its own tick)", async () => {
    const points = [1e-5, 1e-4, 1e-3].map((lr, i) => ({ step: i + 1, loss: 0.1, lr }));
    const charts = await trainingCharts([{ name: "run", file: "run/metrics.jsonl", points, skipped: 0 }]);
    expect(charts.lr).toContain("log scale");
    expect(charts.lr).toMatch(/>1e-5</);
  });

  it("explains an all-zero CLIP score instead of drawing an empty chart", async () => {
    const zero = await clipScoreChart([{ variant: "base", stat: stat([0, 0]) }]);
    expect(zero).toEqual({ title: "CLIP score", note: CLAMPED_NOTE });
    const some = await clipScoreChart([{ variant: "base", stat: stat([0, 12.5]) }]);
    expect(some.svg).toMatch(/^<svg/);
  });

  it("lists the prompt texts, escaped and numbered from 0", () => {
    const html = promptListHtml(["a photo of sks person giving a thumbs up on a beach", "<b>"]);
    expect(html).toContain('<li value="0" data-prompt="0">a photo of sks person giving a thumbs up on a beach</li>');
    expect(html).toContain('<li value="1" data-prompt="1">&lt;b&gt;</li>');
  });
});
