// kohya sd-scripts folders: img/<repeats>_<caption or class>/*.jpg. The folder number is the
// repeats per epoch, the folder caption is used where an image has no caption file, and a
// folder with 0 repeats is skipped (sd-scripts' extract_dreambooth_params).
import { readFile } from "node:fs/promises";
import { join } from "node:path";

import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { buildImageFolder } from "../src/data/build.js";
import { openDataset } from "../src/data/index.js";
import { tempDir } from "./helpers/fixtures.js";
import { writeImage, writeText } from "./helpers/images.js";

let dir: { path: string; cleanup(): Promise<void> };
let root: string;
beforeAll(async () => {
  dir = await tempDir("sdtune-kohya-");
  root = join(dir.path, "img");
  await writeImage(join(root, "10_sks dog", "a.jpg"), { width: 16, height: 12, seed: 1, format: "jpeg" });
  await writeImage(join(root, "10_sks dog", "b.png"), { width: 16, height: 12, seed: 2 });
  await writeText(join(root, "10_sks dog", "b.txt"), "sks dog on a sofa\n");
  await writeImage(join(root, "2_a_photo", "c.png"), { width: 12, height: 16, seed: 3 });
  await writeImage(join(root, "0_ignored", "d.png"), { width: 12, height: 12, seed: 4 });
});
afterAll(async () => dir.cleanup());

const byName = (items: readonly { name: string; caption: string; repeats: number }[]) =>
  Object.fromEntries(items.map((i) => [i.name, { caption: i.caption, repeats: i.repeats }]));

describe("kohya folders", () => {
  it("are detected and give repeats and captions", async () => {
    const ds = await openDataset({ path: root });
    expect(ds.type).toBe("captions");
    expect(byName(ds.items)).toEqual({
      "10_sks dog/a.jpg": { caption: "sks dog", repeats: 10 },
      "10_sks dog/b.png": { caption: "sks dog on a sofa", repeats: 10 },
      "2_a_photo/c.png": { caption: "a_photo", repeats: 2 },
    });
    expect(ds.report).toContainEqual(
      expect.objectContaining({ file: "0_ignored/d.png", code: "zero-repeats", skipped: true }),
    );
  });

  it("give DreamBooth instance images their folder's repeats", async () => {
    const ds = await openDataset({ path: root, instancePrompt: "a photo of sks dog" });
    expect(ds.items.filter((i) => i.name.startsWith("10_")).map((i) => i.repeats)).toEqual([10, 10]);
    expect(ds.items.find((i) => i.name === "2_a_photo/c.png")?.repeats).toBe(2);
  });

  it("survive `dataset build`: folder captions written, repeats kept as a column the reader honours", async () => {
    const out = join(dir.path, "built");
    const result = await buildImageFolder(root, { out });
    expect(result.images).toBe(3);
    const rows = (await readFile(result.metadataPath, "utf8"))
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(rows).toContainEqual({ file_name: "10_sks dog/a.jpg", text: "sks dog", repeats: 10 });
    expect(rows).toContainEqual({ file_name: "2_a_photo/c.png", text: "a_photo", repeats: 2 });
    const ds = await openDataset({ path: out });
    expect(ds.type).toBe("imagefolder");
    expect(byName(ds.items)).toEqual({
      "10_sks dog/a.jpg": { caption: "sks dog", repeats: 10 },
      "10_sks dog/b.png": { caption: "sks dog on a sofa", repeats: 10 },
      "2_a_photo/c.png": { caption: "a_photo", repeats: 2 },
    });
  });
});
