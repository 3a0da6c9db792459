// Bad input: every bad item is skipped with a reason, odd-but-valid images work,
// and one bad image never stops a run.
import { join } from "node:path";

import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { createRawBatchStream, DatasetError, openDataset, type DatasetIssue } from "../src/data/index.js";
import { tempDir } from "./helpers/fixtures.js";
import { imageBuffer, writeImage, writeText, type Format, type Variant } from "./helpers/images.js";

let dir: { path: string; cleanup(): Promise<void> };
let root: string;
const GOOD: [string, Variant, Format][] = [
  ["good/rgb.png", "rgb", "png"],
  ["good/cmyk.jpg", "cmyk", "jpeg"],
  ["good/cmyk.tif", "cmyk", "tiff"],
  ["good/gray.png", "gray", "png"],
  ["good/rgb16.png", "rgb16", "png"],
  ["good/gray16.png", "gray16", "png"],
  ["good/palette.png", "palette", "png"],
  ["good/alpha.png", "alpha", "png"],
  ["good/gray-alpha.png", "gray-alpha", "png"],
  ["good/alpha.webp", "alpha", "webp"],
];

beforeAll(async () => {
  dir = await tempDir("sdtune-data-bad-");
  root = join(dir.path, "ds");
  const rows: object[] = [];
  let seed = 0;
  for (const [name, variant, format] of GOOD) {
    await writeImage(join(root, name), { width: 40, height: 32, seed: seed++, variant, format });
    rows.push({ file_name: name, text: `caption of ${name}` });
  }
  const jpeg = await imageBuffer({ width: 64, height: 48, seed: 99, format: "jpeg" });
  const bad: Record<string, Uint8Array | string> = {
    "bad/zero.png": new Uint8Array(0),
    "bad/corrupt.jpg": Uint8Array.from({ length: 500 }, (_, i) => (i * 31) % 256),
    "bad/text.png": "this is not an image",
    "bad/vector.png":
      '<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect width="10" height="10"/></svg>',
    "bad/bitmap.bmp": Buffer.concat([Buffer.from("BM"), Buffer.alloc(60)]),
    "bad/truncated.jpg": jpeg.subarray(0, Math.floor(jpeg.length / 2)),
  };
  for (const [name, bytes] of Object.entries(bad)) {
    await writeText(join(root, name), bytes);
    rows.push({ file_name: name, text: `caption of ${name}` });
  }
  await writeImage(join(root, "big/huge.png"), { width: 200, height: 100, seed: 50 });
  rows.push({ file_name: "big/huge.png", text: "too big" });
  await writeImage(join(root, "orphan.png"), { width: 20, height: 20, seed: 51 }); // no metadata row
  await writeImage(join(dir.path, "outside.png"), { width: 20, height: 20, seed: 52 });
  rows.push({ file_name: "missing.png", text: "gone" });
  rows.push({ file_name: "../outside.png", text: "escape" });
  rows.push({ file_name: join(dir.path, "outside.png"), text: "absolute" });
  rows.push({ text: "no file name" });
  const lines = rows.map((r) => JSON.stringify(r));
  lines.push("{not json");
  // A row whose caption bytes are not UTF-8 (0xff 0xfe), written as raw bytes.
  await writeImage(join(root, "latin1.png"), { width: 20, height: 20, seed: 53 });
  const metadata = Buffer.concat([
    Buffer.from(lines.join("\n") + "\n"),
    Buffer.from('{"file_name": "latin1.png", "text": "caf'),
    Buffer.from([0xe9, 0xff]),
    Buffer.from('"}\n'),
  ]);
  await writeText(join(root, "metadata.jsonl"), metadata);
  await writeText(join(root, "notes.md"), "not a data file, ignored");
});
afterAll(async () => dir.cleanup());

const codes = (report: DatasetIssue[]): Record<string, string> =>
  Object.fromEntries(report.map((r) => [r.file, `${r.code}${r.skipped ? "" : " (kept)"}`]));

describe("bad input", () => {
  it("skips each bad item with a reason and converts every odd-but-valid image", async () => {
    const ds = await openDataset({ path: root, maxPixels: 10_000 });
    expect(ds.items.map((i) => i.name).sort()).toEqual(
      [...GOOD.map(([n]) => n), "bad/truncated.jpg", "latin1.png"].sort(), // a truncated body passes the header check
    );
    const byFile = codes(ds.report);
    expect(byFile).toEqual({
      "bad/zero.png": "empty-file",
      "bad/corrupt.jpg": "not-an-image",
      "bad/text.png": "not-an-image",
      "bad/vector.png": "unsupported-format",
      "bad/bitmap.bmp": "unsupported-format",
      "big/huge.png": "too-many-pixels",
      "orphan.png": "no-metadata-row",
      [`metadata.jsonl:${GOOD.length + 8}`]: "missing-file",
      [`metadata.jsonl:${GOOD.length + 9}`]: "unsafe-path",
      [`metadata.jsonl:${GOOD.length + 10}`]: "unsafe-path",
      [`metadata.jsonl:${GOOD.length + 11}`]: "bad-metadata-row",
      [`metadata.jsonl:${GOOD.length + 12}`]: "bad-metadata-row",
      [`metadata.jsonl:${GOOD.length + 13}`]: "invalid-utf8 (kept)",
    });
    expect(ds.items.find((i) => i.name === "latin1.png")!.caption).toBe("caf\uFFFD\uFFFD");
    for (const issue of ds.report) expect(issue.reason.length).toBeGreaterThan(10);

    const decoded = await openDataset({ path: root, maxPixels: 10_000, verify: "decode", invalidUtf8: "skip" });
    const decodedCodes = codes(decoded.report);
    expect(decodedCodes["bad/truncated.jpg"]).toBe("decode-failed");
    expect(decodedCodes[`metadata.jsonl:${GOOD.length + 13}`]).toBe("invalid-utf8");
    expect(decoded.items.map((i) => i.name).sort()).toEqual(GOOD.map(([n]) => n).sort());

    // The default pixel limit lets the 200x100 image through.
    const defaults = await openDataset({ path: root });
    expect(defaults.items.map((i) => i.name)).toContain("big/huge.png");
  });

  it("keeps a run going when an image fails to decode mid-stream", async () => {
    const ds = await openDataset({ path: root, maxPixels: 10_000 });
    const issues: DatasetIssue[] = [];
    const stream = createRawBatchStream(ds, {
      resolution: 32,
      batchSize: 4,
      epochs: 2,
      seed: 3,
      onIssue: (i) => issues.push(i),
    });
    let examples = 0;
    const seen = new Set<string>();
    for await (const batch of stream) {
      examples += batch.shape[0];
      batch.names.forEach((n) => seen.add(n));
      expect(batch.data.length).toBe(batch.shape[0] * 3 * 32 * 32);
      for (const v of batch.data) if (!(v >= -1 && v <= 1)) throw new Error(`value ${v} outside [-1, 1]`);
    }
    const good = ds.items.length - 1;
    expect(examples).toBe(2 * good);
    expect(seen.has("bad/truncated.jpg")).toBe(false);
    expect(issues.map((i) => [i.file, i.code])).toEqual([["bad/truncated.jpg", "decode-failed"]]);
    expect(ds.report.filter((r) => r.code === "decode-failed")).toHaveLength(1);
  });

  it("refuses an empty dataset with an error that says what was searched", async () => {
    const empty = join(dir.path, "empty");
    await writeText(join(empty, "readme.txt"), "nothing here");
    const error = await openDataset({ path: empty }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(DatasetError);
    expect((error as Error).message).toMatch(/no usable images in .*empty \(imagefolder, split "train": 0 image files/);

    const allBad = join(dir.path, "all-bad");
    await writeText(join(allBad, "a.png"), "");
    await writeText(join(allBad, "b.jpg"), "nope");
    const error2 = (await openDataset({ path: allBad }).catch((e: unknown) => e)) as DatasetError;
    expect(error2.message).toMatch(/skipped 2: 1 empty-file, 1 not-an-image/);
    expect(error2.report.map((r) => [r.file, r.code])).toEqual([
      [allBad, "missing-caption"], // no metadata file: a warning, captions would be empty
      ["a.png", "empty-file"],
      ["b.jpg", "not-an-image"],
    ]);
    await expect(openDataset({ path: join(dir.path, "does-not-exist") })).rejects.toThrow(/does not exist/);
  });
});
