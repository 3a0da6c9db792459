// An eval report in a real browser: a loopback HTTP server for the output folder and
// headless Chromium (playwright-core), collecting everything that went wrong on the page.
import { existsSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { extname, join, normalize, resolve, sep } from "node:path";
import { chromium, type BrowserContext, type Page } from "playwright-core";
import { expect } from "vitest";

import { formatStat, type EvalResult, type Stat } from "../../src/eval/results.js";

import { tempDir } from "./fixtures.js";

const CHROMIUM = process.env.SDTUNE_CHROMIUM ?? "/usr/bin/chromium";
const TYPES: Record<string, string> = {
  ".html": "text/html; charset=utf-8",
  ".png": "image/png",
  ".json": "application/json",
  ".svg": "image/svg+xml",
};

/** Serves files under `root` only (GET), 404 otherwise; resolves to the server and its base URL. */
export async function serveFolder(root: string): Promise<{ server: Server; baseUrl: string; close(): Promise<void> }> {
  const base = resolve(root);
  const server = createServer((req, res) => {
    const path = normalize(join(base, decodeURIComponent(new URL(req.url ?? "/", "http://x").pathname)));
    if (!path.startsWith(base + sep) || !existsSync(path)) {
      res.writeHead(404).end();
      return;
    }
    readFile(path).then(
      (body) => res.writeHead(200, { "content-type": TYPES[extname(path)] ?? "application/octet-stream" }).end(body),
      () => res.writeHead(500).end(),
    );
  });
  await new Promise<void>((ok) => server.listen(0, "127.0.0.1", ok));
  return {
    server,
    baseUrl: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    close: () => new Promise<void>((ok) => server.close(() => ok())),
  };
}

/** Headless Chromium with a fresh profile under `userDataDir`. */
export async function launchChromium(userDataDir: string): Promise<BrowserContext> {
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

/** Console errors, page errors, failed requests and HTTP errors of `page`, as they happen. */
export function watchProblems(page: Page): string[] {
  const problems: string[] = [];
  page.on("console", (m) => m.type() === "error" && problems.push(`console: ${m.text()}`));
  page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
  page.on("requestfailed", (r) => problems.push(`request failed: ${r.url()}`));
  page.on("response", (r) => r.status() >= 400 && problems.push(`HTTP ${r.status()}: ${r.url()}`));
  return problems;
}

/** Serves `outputDir`, opens its report.html in Chromium and hands the loaded page to `check`. */
export async function withReportPage<T>(
  outputDir: string,
  check: (page: Page, problems: string[]) => Promise<T>,
): Promise<T> {
  const served = await serveFolder(outputDir);
  const profile = await tempDir("sdtune-chromium-");
  try {
    const context = await launchChromium(profile.path);
    try {
      const page = await context.newPage();
      const problems = watchProblems(page);
      await page.goto(`${served.baseUrl}/report.html`, { waitUntil: "load" });
      return await check(page, problems);
    } finally {
      await context.close();
    }
  } finally {
    await profile.cleanup();
    await served.close();
  }
}

/** Every <img> on the page: src, whether it finished loading, and its decoded width. */
export function pageImages(page: Page): Promise<{ src: string | null; complete: boolean; width: number }[]> {
  return page.$$eval("img", (list) =>
    list.map((img) => ({ src: img.getAttribute("src"), complete: img.complete, width: img.naturalWidth })),
  );
}

/**
 * Asserts the report's metric table (#metrics) shows eval.json's summaries (CLIP score, CLIP-T,
 * CLIP-I when measured, the all-pairs CLIP score) for every variant; resolves to the cells checked.
 */
export async function expectMetricTable(page: Page, result: EvalResult): Promise<number> {
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
      const s = pick(v);
      if (s === null) continue; // CLIP-I without instance images
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
  return checked;
}
