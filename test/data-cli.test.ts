// `sdtune dataset build|check` through the CLI's main() (the same path bin/sdtune.js takes).
import { readFile } from "node:fs/promises";
import { join } from "node:path";

import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from "vitest";

import { main } from "../src/cli/main.js";
import type { CheckReport } from "../src/data/check.js";
import { openDataset } from "../src/data/index.js";
import { tempDir } from "./helpers/fixtures.js";
import { imageBuffer, writeImage, writeText } from "./helpers/images.js";
import { captureCli } from "./helpers/capture.js";

let dir: { path: string; cleanup(): Promise<void> };
beforeAll(async () => {
  dir = await tempDir("sdtune-data-cli-");
  const src = join(dir.path, "photos");
  await writeImage(join(src, "a.jpg"), { width: 96, height: 64, seed: 1, format: "jpeg" });
  await writeText(join(src, "a.txt"), "a photo of a fox\n");
  await writeImage(join(src, "sub", "b.png"), { width: 64, height: 80, seed: 2 });
  await writeText(join(src, "sub", "b.txt"), "a photo of a bird");
  const same = await imageBuffer({ width: 64, height: 64, seed: 3 });
  await writeText(join(src, "c.png"), same);
  await writeText(join(src, "c-copy.png"), same); // duplicate content, no caption
  await writeText(join(src, "broken.jpg"), "not really a jpeg");
});
afterAll(async () => dir.cleanup());
afterEach(() => vi.restoreAllMocks());

const cli = (...argv: string[]) => captureCli(() => main(argv));

describe("sdtune dataset", () => {
  it("build writes an imagefolder with metadata.jsonl and copies the readable images", async () => {
    const out = join(dir.path, "hf");
    const r = await cli("dataset", "build", join(dir.path, "photos"), "--out", out, "--json");
    expect(r.code).toBe(0);
    const result = JSON.parse(r.out) as { images: number; copied: number; issues: { file: string; code: string }[] };
    expect([result.images, result.copied]).toEqual([4, 4]);
    expect(result.issues.map((i) => [i.file, i.code])).toEqual([
      ["broken.jpg", "not-an-image"],
      ["c-copy.png", "missing-caption"],
      ["c.png", "missing-caption"],
    ]);
    const lines = (await readFile(join(out, "metadata.jsonl"), "utf8"))
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l));
    expect(lines).toEqual([
      { file_name: "a.jpg", text: "a photo of a fox" },
      { file_name: "c-copy.png", text: "" },
      { file_name: "c.png", text: "" },
      { file_name: "sub/b.png", text: "a photo of a bird" },
    ]);
    const ds = await openDataset({ path: out });
    expect(ds.type).toBe("imagefolder");
    expect(ds.items.map((i) => [i.name, i.caption])).toEqual(lines.map((l) => [l.file_name, l.text]));

    const human = await cli("dataset", "build", join(dir.path, "photos"), "--out", join(dir.path, "hf2"));
    expect(human.out).toMatch(/wrote .*hf2\/metadata.jsonl \(4 images, 4 copied\)/);
    expect(human.out).toMatch(/skipped {2}broken.jpg: not-an-image/);
  });

  it("build takes captions from one file, in place", async () => {
    const src = join(dir.path, "in-place");
    await writeImage(join(src, "x.png"), { width: 32, height: 32, seed: 5 });
    await writeImage(join(src, "y.png"), { width: 32, height: 32, seed: 6 });
    const captions = join(dir.path, "captions.csv");
    await writeText(captions, 'file_name,prompt\nx.png,"x, the first"\ny.png,second\nz.png,nobody\n');
    const r = await cli("dataset", "build", src, "--captions", captions, "--caption-column", "prompt");
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/skipped .*z.png: missing-file/);
    const ds = await openDataset({ path: src, captionColumn: "prompt" });
    expect(ds.items.map((i) => i.caption)).toEqual(["x, the first", "second"]);
    expect((await cli("dataset", "build", src, "--captions", captions, "--caption-ext", ".txt")).code).toBe(2);
  });

  it("check reports counts, sizes, buckets, duplicates and issues", async () => {
    const r = await cli(
      "dataset",
      "check",
      join(dir.path, "photos"),
      "--json",
      "--resolution",
      "64",
      "--min-side",
      "32",
      "--max-side",
      "128",
      "--step",
      "32",
    );
    expect(r.code).toBe(0);
    const report = JSON.parse(r.out) as CheckReport;
    expect(report.type).toBe("captions");
    expect([report.images, report.examples, report.emptyCaptions, report.skipped, report.warnings]).toEqual([
      4, 4, 2, 1, 2,
    ]);
    expect(report.formats).toEqual({ jpeg: 1, png: 3 });
    expect(report.width).toEqual({ min: 64, median: 64, max: 96 });
    expect(report.duplicates.map((d) => d.files)).toEqual([["c-copy.png", "c.png"]]);
    expect(report.buckets.histogram.map((s) => [`${s.width}x${s.height}`, s.examples])).toEqual([
      ["64x64", 4], // 96x64 (1.5) and 64x80 (0.8) are nearer 1 than 3 or 1/3
    ]);
    expect(report.issues.find((i) => i.code === "not-an-image")?.file).toBe("broken.jpg");

    const human = await cli("dataset", "check", join(dir.path, "hf"));
    expect(human.code).toBe(0);
    expect(human.out).toMatch(/^dataset {5}.*hf \(imagefolder; split train; splits: train\)$/m);
    expect(human.out).toMatch(/^images {6}4 \(4 examples per epoch\)/m);
    expect(human.out).toMatch(/^ {2}c-copy.png = c.png$/m);
    expect(human.out).toMatch(/^ {2}512x512 +#+ 2$/m); // c.png and c-copy.png; the others go to 640x384, 448x576
    expect((await cli("dataset", "check", join(dir.path, "photos"), "--strict")).code).toBe(1);
    expect((await cli("dataset", "check", join(dir.path, "hf"), "--strict")).code).toBe(0);
  });

  it("fails clearly on an empty dataset and on bad usage", async () => {
    const empty = join(dir.path, "nothing");
    await writeText(join(empty, "notes.md"), "no images");
    const r = await cli("dataset", "check", empty);
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/no usable images in .*nothing/);
    const asJson = await cli("dataset", "check", empty, "--json");
    expect(JSON.parse(asJson.out).error).toMatch(/no usable images/);
    expect((await cli("dataset", "frobnicate")).code).toBe(2);
    expect((await cli("dataset", "check")).code).toBe(2);
    expect((await cli("dataset", "check", empty, "--type", "zip")).code).toBe(2);
    expect((await cli("dataset", "check", empty, "--resolution", "-3")).code).toBe(2);
  });
});
