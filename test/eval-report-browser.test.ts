// report.html in a real browser (headless Chromium through playwright-core), served from
// a loopback HTTP server: no console errors, every image loads, the metric table shows
// eval.json's numbers. A screenshot is kept under test-output/ for a human look.
import { existsSync } from "node:fs";
import { mkdir, readFile } from "node:fs/promises";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { extname, join, normalize, resolve, sep } from "node:path";
import { chromium, type BrowserContext } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { evaluate, type EvaluateOutput } from "../src/eval/evaluate.js";
import { formatStat, type EvalResult, type Stat } from "../src/eval/results.js";
import { fixture, repoRoot, tempDir } from "./helpers/fixtures.js";
import { makeEvalFixture } from "./helpers/eval_fixture.js";

const CHROMIUM = process.env.SDTUNE_CHROMIUM ?? "/usr/bin/chromium";
const TYPES: Record<string, string> = {
  ".html": "text/html; charset=utf-8",
  ".png": "image/png",
  ".json": "application/json",
  ".svg": "image/svg+xml",
};

let dir: { path: string; cleanup(): Promise<void> };
let out: EvaluateOutput;
let server: Server;
let baseUrl: string;

/** Serves files under `root` only (GET), 404 otherwise. */
function serve(root: string): Promise<Server> {
  const s = createServer((req, res) => {
    const path = normalize(join(root, decodeURIComponent(new URL(req.url ?? "/", "http://x").pathname)));
    if (!path.startsWith(root + sep) || !existsSync(path)) {
      res.writeHead(404).end();
      return;
    }
    readFile(path).then(
      (body) => res.writeHead(200, { "content-type": TYPES[extname(path)] ?? "application/octet-stream" }).end(body),
      () => res.writeHead(500).end(),
    );
  });
  return new Promise((ok) => s.listen(0, "127.0.0.1", () => ok(s)));
}

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
  server = await serve(resolve(out.outputDir));
  baseUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterAll(async () => {
  await new Promise((ok) => server?.close(ok));
  await dir.cleanup();
});

async function launch(userDataDir: string): Promise<BrowserContext> {
  if (!existsSync(CHROMIUM)) {
    throw new Error(
      `Chromium is needed for the report test and was not found at ${CHROMIUM}. Install it with ` +
        "`apt-get install -y --no-install-recommends chromium` (Debian), or set SDTUNE_CHROMIUM to its path.",
    );
  }
  return chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM,
    headless: true,
    viewport: { width: 1280, height: 900 },
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
}

describe("report.html in headless Chromium", () => {
  it("loads without console errors, shows every image, and its metric table matches eval.json", async () => {
    const profile = await tempDir("sdtune-chromium-");
    const context = await launch(profile.path);
    try {
      const page = await context.newPage();
      const problems: string[] = [];
      page.on("console", (m) => m.type() === "error" && problems.push(`console: ${m.text()}`));
      page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
      page.on("requestfailed", (r) => problems.push(`request failed: ${r.url()}`));
      page.on("response", (r) => r.status() >= 400 && problems.push(`HTTP ${r.status()}: ${r.url()}`));
      await page.goto(`${baseUrl}/report.html`, { waitUntil: "load" });

      expect(await page.title()).toBe("report <test> & checks");
      const images = await page.$$eval("img", (list) =>
        list.map((img) => ({ src: img.getAttribute("src"), complete: img.complete, width: img.naturalWidth })),
      );
      expect(images.length).toBe(out.result.grids.length);
      for (const img of images) expect(img, `image ${img.src}`).toMatchObject({ complete: true });
      for (const img of images) expect(img.width, `naturalWidth of ${img.src}`).toBeGreaterThan(0);
      expect(await page.locator("svg.marks").count()).toBeGreaterThanOrEqual(3); // CLIP score, CLIP-I, loss (+ lr)

      const result = JSON.parse(await readFile(out.files.evalJson, "utf8")) as EvalResult;
      const cells = await page.$$eval("#metrics td[data-metric]", (tds) =>
        tds.map((td) => ({
          variant: td.getAttribute("data-variant"),
          metric: td.getAttribute("data-metric"),
          mean: td.getAttribute("data-mean"),
          std: td.getAttribute("data-std"),
          value: td.getAttribute("data-value"),
          text: td.textContent,
        })),
      );
      const summaries: [string, (v: EvalResult["variants"][number]) => Stat | null, number][] = [
        ["clipScore", (v) => v.summary.clipScore, 2],
        ["clipT", (v) => v.summary.clipT, 4],
        ["clipI", (v) => v.summary.clipI, 4],
      ];
      let checked = 0;
      for (const v of result.variants) {
        for (const [metric, pick, digits] of summaries) {
          const s = pick(v)!;
          const cell = cells.find((c) => c.variant === v.name && c.metric === metric)!;
          expect(cell, `${v.name} ${metric}`).toBeDefined();
          expect(Number(cell.mean)).toBe(s.mean);
          expect(cell.std === "" ? null : Number(cell.std)).toBe(s.std);
          expect(cell.text).toBe(formatStat(s, digits));
          checked++;
        }
        const all = cells.find((c) => c.variant === v.name && c.metric === "clipScoreAll")!;
        expect(Number(all.value)).toBe(v.clipScore);
        expect(all.text).toBe(v.clipScore.toFixed(2));
        checked++;
      }
      expect(checked).toBe(result.variants.length * 4);

      await mkdir(join(repoRoot, "test-output"), { recursive: true });
      await page.screenshot({ path: join(repoRoot, "test-output", "eval-report.png"), fullPage: true });
      expect(problems).toEqual([]);
    } finally {
      await context.close();
      await profile.cleanup();
    }
  });
});
