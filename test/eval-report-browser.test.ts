// report.html in a real browser (headless Chromium through playwright-core), served from
// a loopback HTTP server: no console errors, every image loads, the metric table shows
// eval.json's numbers. A screenshot is kept under test-output/ for a human look.
import { mkdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { evaluate, type EvaluateOutput } from "../src/eval/evaluate.js";
import type { EvalResult } from "../src/eval/results.js";
import { fixture, repoRoot, tempDir } from "./helpers/fixtures.js";
import { makeEvalFixture } from "./helpers/eval_fixture.js";
import { expectMetricTable, pageImages, withReportPage } from "./helpers/report_browser.js";

let dir: { path: string; cleanup(): Promise<void> };
let out: EvaluateOutput;

beforeAll(async () => {
  dir = await tempDir("sdtune-report-");
  const fx = await makeEvalFixture(dir.path);
  out = await evaluate({
    output_dir: join(dir.path, "out"),
    title: "report <test> & checks",
    clip_model: fixture("tiny-clip"),
    images: [{ path: fx.goldenDir, name: "golden" }, { path: fx.taggedDir }],
    instance_images: fx.instanceDir,
    runs: [fx.runDir, fx.stagedRunDir],
    grid_cell: 64,
  });
});
afterAll(async () => {
  await dir.cleanup();
});

describe("report.html in headless Chromium", () => {
  it("loads without console errors, shows every image, and its metric table matches eval.json", async () => {
    await withReportPage(out.outputDir, async (page, problems) => {
      expect(await page.title()).toBe("report <test> & checks");
      const images = await pageImages(page);
      expect(images.length).toBe(out.result.grids.length);
      for (const img of images) expect(img, `image ${img.src}`).toMatchObject({ complete: true });
      for (const img of images) expect(img.width, `naturalWidth of ${img.src}`).toBeGreaterThan(0);
      expect(await page.locator("svg.marks").count()).toBeGreaterThanOrEqual(3); // CLIP score, CLIP-I, loss (+ lr)

      const result = JSON.parse(await readFile(out.files.evalJson, "utf8")) as EvalResult;
      const checked = await expectMetricTable(page, result);
      expect(checked).toBe(result.variants.length * 4);

      await mkdir(join(repoRoot, "test-output"), { recursive: true });
      await page.screenshot({ path: join(repoRoot, "test-output", "eval-report.png"), fullPage: true });
      expect(problems).toEqual([]);
    });
  });
});
