// Dataset readers on small datasets generated in temp folders.
import { createHash } from "node:crypto";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";

import { parquetWriteBuffer } from "hyparquet-writer";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { DatasetError, openDataset, resolveDatasetPath, type Dataset } from "../src/data/index.js";
import { inferSplits } from "../src/data/splits.js";
import { tempDir } from "./helpers/fixtures.js";
import { isolateHubEnv, startHubServer } from "./helpers/hub_server.js";
import { imageBuffer, writeImage, writeText } from "./helpers/images.js";

let dir: { path: string; cleanup(): Promise<void> };
beforeAll(async () => {
  dir = await tempDir("sdtune-data-readers-");
});
afterAll(async () => dir.cleanup());

const sha = (b: Uint8Array): string => createHash("sha256").update(b).digest("hex");
const byName = (ds: Dataset): Record<string, string> => Object.fromEntries(ds.items.map((i) => [i.name, i.caption]));

describe("split inference (HF datasets rules)", () => {
  it("prefers data/{split}-NNNNN-of-NNNNN shards", () => {
    const r = inferSplits([
      "data/train-00000-of-00002.parquet",
      "data/train-00001-of-00002.parquet",
      "data/test-00000-of-00001.parquet",
      "other/validation.parquet",
    ]);
    expect(r.rule).toBe("sharded");
    expect([...r.splits.keys()]).toEqual(["train", "test"]);
    expect(r.splits.get("train")).toHaveLength(2);
  });
  it("uses folder names, then file names, else everything is train", () => {
    const dirs = inferSplits(["train/a.png", "train/sub/b.png", "val/c.png", "my-test/d.png", "notes/e.png"]);
    expect(dirs.rule).toBe("folder-names");
    expect(Object.fromEntries(dirs.splits)).toEqual({
      train: ["train/a.png", "train/sub/b.png"],
      validation: ["val/c.png"],
      test: ["my-test/d.png"],
    });
    const names = inferSplits(["x/train_01.png", "x/test.png", "x/contest.png", "x/trainer.png"]);
    expect(names.rule).toBe("file-names");
    expect(Object.fromEntries(names.splits)).toEqual({ train: ["x/train_01.png"], test: ["x/test.png"] });
    expect(inferSplits(["a.png", "b/c.png"]).rule).toBe("all-train");
  });
});

describe("imagefolder", () => {
  it("reads metadata.jsonl with nested folders, a chosen caption column and splits", async () => {
    const root = join(dir.path, "hf");
    const a = await writeImage(join(root, "train", "a.png"), { width: 40, height: 30, seed: 1 });
    await writeImage(join(root, "train", "sub", "b.jpg"), { width: 30, height: 40, seed: 2, format: "jpeg" });
    await writeImage(join(root, "validation", "c.png"), { width: 20, height: 20, seed: 3 });
    await writeText(
      join(root, "train", "metadata.jsonl"),
      [
        JSON.stringify({ file_name: "a.png", text: "a red fox", prompt: "fox" }),
        JSON.stringify({ file_name: "sub/b.jpg", text: "a blue bird", prompt: "bird" }),
      ].join("\n") + "\n",
    );
    await writeText(join(root, "validation", "metadata.jsonl"), JSON.stringify({ file_name: "c.png", text: "val" }));

    const train = await openDataset({ type: "imagefolder", path: root });
    expect(train.split).toBe("train");
    expect(train.splits).toEqual(["train", "validation"]);
    expect(byName(train)).toEqual({ "train/a.png": "a red fox", "train/sub/b.jpg": "a blue bird" });
    const first = train.items[0]!;
    expect(first.key).toBe(sha(a));
    expect([first.width, first.height, first.format, first.byteLength]).toEqual([40, 30, "png", a.length]);
    expect(train.report).toEqual([]);

    const prompts = await openDataset({ path: root, captionColumn: "prompt" });
    expect(prompts.type).toBe("imagefolder");
    expect(prompts.items.map((i) => i.caption)).toEqual(["fox", "bird"]);

    const validation = await openDataset({ path: root, split: "validation" });
    expect(byName(validation)).toEqual({ "validation/c.png": "val" });

    await expect(openDataset({ path: root, split: "test" })).rejects.toThrow(
      /split "test" not found.*train, validation/,
    );
    await expect(openDataset({ path: root, captionColumn: "caption" })).rejects.toThrow(
      /caption column "caption".*file_name, text, prompt/,
    );
  });

  it("reads metadata.csv with quoted captions", async () => {
    const root = join(dir.path, "hf-csv");
    await writeImage(join(root, "x.png"), { width: 16, height: 16, seed: 4 });
    await writeImage(join(root, "y.png"), { width: 16, height: 16, seed: 5 });
    await writeText(
      join(root, "metadata.csv"),
      'file_name,text\r\nx.png,"a cat, sitting ""quietly""\non a mat"\r\ny.png,plain\r\n',
    );
    const ds = await openDataset({ path: root });
    expect(byName(ds)).toEqual({ "x.png": 'a cat, sitting "quietly"\non a mat', "y.png": "plain" });
  });
});

describe("parquet", () => {
  const schema = [
    { name: "root", num_children: 2 },
    { name: "image", repetition_type: "OPTIONAL", num_children: 2 },
    { name: "bytes", type: "BYTE_ARRAY", repetition_type: "OPTIONAL" },
    { name: "path", type: "BYTE_ARRAY", converted_type: "UTF8", repetition_type: "OPTIONAL" },
    { name: "caption", type: "BYTE_ARRAY", converted_type: "UTF8", repetition_type: "OPTIONAL" },
  ] as const;
  const features = JSON.stringify({
    info: { features: { image: { _type: "Image" }, caption: { dtype: "string", _type: "Value" } } },
  });
  const shard = (rows: { image: unknown; caption: string | null }[]): ArrayBuffer =>
    parquetWriteBuffer({
      columnData: [
        { name: "image", data: rows.map((r) => r.image) },
        { name: "caption", data: rows.map((r) => r.caption) },
      ],
      schema: schema as never,
      rowGroupSize: 2, // several row groups per shard
      kvMetadata: [{ key: "huggingface", value: features }],
    });

  it("reads {bytes, path} image structs across shards and row groups", async () => {
    const root = join(dir.path, "pq");
    const images = await Promise.all([0, 1, 2, 3, 4].map((s) => imageBuffer({ width: 24, height: 16, seed: 10 + s })));
    await writeText(
      join(root, "data", "train-00000-of-00002.parquet"),
      new Uint8Array(
        shard([
          { image: { bytes: images[0], path: "0.png" }, caption: "zero" },
          { image: { bytes: images[1], path: null }, caption: "one" },
          { image: null, caption: "no image" },
        ]),
      ),
    );
    await writeText(
      join(root, "data", "train-00001-of-00002.parquet"),
      new Uint8Array(shard([{ image: { bytes: images[2], path: "2.png" }, caption: null }])),
    );
    await writeText(
      join(root, "data", "test-00000-of-00001.parquet"),
      new Uint8Array(shard([{ image: { bytes: images[3], path: "3.png" }, caption: "three" }])),
    );
    const ds = await openDataset({ path: root, captionColumn: "caption" });
    expect(ds.type).toBe("parquet");
    expect(ds.splits).toEqual(["train", "test"]);
    expect(byName(ds)).toEqual({
      "data/train-00000-of-00002.parquet#0": "zero",
      "data/train-00000-of-00002.parquet#1": "one",
      "data/train-00001-of-00002.parquet#0": "",
    });
    expect(ds.items.map((i) => i.key)).toEqual([sha(images[0]!), sha(images[1]!), sha(images[2]!)]);
    expect(ds.items.every((i) => i.source.kind === "bytes")).toBe(true);
    expect(ds.report.map((r) => [r.file, r.code, r.skipped])).toEqual([
      ["data/train-00000-of-00002.parquet#2", "missing-file", true],
      ["data/train-00001-of-00002.parquet#0", "missing-caption", false],
    ]);

    const test = await openDataset({ path: root, captionColumn: "caption", split: "test" });
    expect(byName(test)).toEqual({ "data/test-00000-of-00001.parquet#0": "three" });

    // Past the memory budget, image bytes spill to files named by their hash.
    const spillDir = join(dir.path, "spill");
    const spilled = await openDataset({ path: root, captionColumn: "caption", maxInMemoryBytes: 1, spillDir });
    expect(spilled.items.map((i) => i.source)).toEqual(
      spilled.items.map((i) => ({ kind: "file", path: join(spillDir, i.key) })),
    );
    await expect(openDataset({ path: root })).rejects.toThrow(/no caption column "text".*image, caption/);
  });

  it("opens a single .parquet file", async () => {
    const file = join(dir.path, "single.parquet");
    await writeFile(
      file,
      new Uint8Array(
        shard([{ image: { bytes: await imageBuffer({ width: 8, height: 8 }), path: "a" }, caption: "c" }]),
      ),
    );
    const ds = await openDataset({ path: file, captionColumn: "caption" });
    expect(byName(ds)).toEqual({ "single.parquet#0": "c" });
  });
});

describe("caption folders (kohya)", () => {
  it("pairs images with same-name caption files and reads N_name repeats", async () => {
    const root = join(dir.path, "kohya");
    await writeImage(join(root, "10_sks dog", "a.png"), { width: 32, height: 32, seed: 20 });
    await writeText(join(root, "10_sks dog", "a.txt"), "\uFEFFsks dog, running\nsecond line ignored\n");
    await writeImage(join(root, "10_sks dog", "b.png"), { width: 32, height: 32, seed: 21 });
    await writeImage(join(root, "plain", "c.webp"), { width: 32, height: 32, seed: 22, format: "webp" });
    await writeText(join(root, "plain", "c.txt"), "  a webp  ");
    await writeImage(join(root, "plain", "d.png"), { width: 32, height: 32, seed: 23 });

    const ds = await openDataset({ path: root });
    expect(ds.type).toBe("captions");
    expect(ds.items.map((i) => [i.name, i.caption, i.repeats])).toEqual([
      ["10_sks dog/a.png", "sks dog, running", 10],
      ["10_sks dog/b.png", "sks dog", 10], // kohya: the folder's tokens when there is no caption file
      ["plain/c.webp", "a webp", 1],
      ["plain/d.png", "", 1],
    ]);
    expect(ds.report).toEqual([
      { file: "plain/d.png", code: "missing-caption", reason: expect.stringContaining("plain/d.txt"), skipped: false },
    ]);
    // The config's repeats scale every image's own, as kohya's subset num_repeats.
    const tripled = await openDataset({ path: root, repeats: 3 });
    expect(tripled.items.map((i) => i.repeats)).toEqual(ds.items.map((i) => 3 * i.repeats));
    const skipping = await openDataset({ path: root, type: "captions", missingCaption: "skip" });
    expect(skipping.items.map((i) => i.name)).not.toContain("plain/d.png");

    // A caption file that is not UTF-8 (Latin-1 "café"): replaced and reported, or skipped.
    await writeImage(join(root, "latin", "e.png"), { width: 32, height: 32, seed: 24 });
    await writeText(join(root, "latin", "e.txt"), Uint8Array.from([0x63, 0x61, 0x66, 0xe9]));
    const latin = await openDataset({ path: join(root, "latin") });
    expect(byName(latin)).toEqual({ "e.png": "caf\uFFFD" });
    expect(latin.report.map((r) => [r.file, r.code, r.skipped])).toEqual([["e.txt", "invalid-utf8", false]]);
    await expect(openDataset({ path: join(root, "latin"), invalidUtf8: "skip" })).rejects.toThrow(
      /skipped 1: 1 invalid-utf8/,
    );

    await writeText(join(root, "plain", "d.caption"), "from .caption");
    const other = await openDataset({ path: join(root, "plain"), type: "captions", captionExt: "caption" });
    expect(byName(other)).toEqual({ "c.webp": "", "d.png": "from .caption" });
  });
});

describe("dreambooth", () => {
  it("uses the instance prompt, class images and counts class images still needed", async () => {
    const root = join(dir.path, "db");
    await writeImage(join(root, "instance", "1.jpg"), { width: 48, height: 64, seed: 30, format: "jpeg" });
    await writeImage(join(root, "instance", "2.jpg"), { width: 64, height: 48, seed: 31, format: "jpeg" });
    await writeImage(join(root, "class", "c1.png"), { width: 32, height: 32, seed: 32 });
    const spec = {
      type: "dreambooth" as const,
      path: join(root, "instance"),
      instancePrompt: "a photo of sks dog",
      instanceToken: "sks",
      classDir: join(root, "class"),
      classPrompt: "a photo of a dog",
      numClassImages: 5,
      repeats: 3,
    };
    const ds = await openDataset(spec);
    expect(ds.items.map((i) => [i.name, i.caption, i.role, i.repeats])).toEqual([
      ["1.jpg", "a photo of sks dog", "instance", 3],
      ["2.jpg", "a photo of sks dog", "instance", 3],
      ["class:c1.png", "a photo of a dog", "class", 1],
    ]);
    expect(ds.classImagesNeeded).toBe(4);
    expect(ds.report).toEqual([]);

    const noClassYet = await openDataset({ ...spec, classDir: join(root, "not-generated-yet") });
    expect(noClassYet.classImagesNeeded).toBe(5);

    const missing = await openDataset({ ...spec, instancePrompt: "a photo of a dog" });
    expect(missing.report.map((r) => [r.file, r.code])).toEqual([["instancePrompt", "instance-token"]]);
    await expect(openDataset({ ...spec, instancePrompt: "a photo of dog", tokenCheck: "error" })).rejects.toThrow(
      /does not contain the instance token "sks"/,
    );
    const leaky = await openDataset({ ...spec, classPrompt: "a photo of sks" });
    expect(leaky.report.map((r) => r.file)).toEqual(["classPrompt"]);
    await expect(openDataset({ ...spec, instancePrompt: undefined, type: "dreambooth" })).rejects.toThrow(
      /needs instancePrompt/,
    );
  });

  it("checks captions for the instance token in captioned datasets", async () => {
    const root = join(dir.path, "token-captions");
    await writeImage(join(root, "a.png"), { width: 16, height: 16, seed: 40 });
    await writeText(join(root, "a.txt"), "ohwx man smiling");
    await writeImage(join(root, "b.png"), { width: 16, height: 16, seed: 41 });
    await writeText(join(root, "b.txt"), "a man, ohwxman");
    const ds = await openDataset({ path: root, instanceToken: "ohwx", type: "captions" });
    expect(ds.report.map((r) => [r.file, r.code])).toEqual([["b.png", "instance-token"]]);
  });
});

describe("progress and cancellation", () => {
  it("reports scan progress and stops on an aborted signal", async () => {
    const root = join(dir.path, "hf");
    const events: [string, number, number][] = [];
    await openDataset({ path: root }, { onProgress: (e) => events.push([e.phase, e.step, e.total]) });
    expect(events).toEqual([
      ["scan", 1, 2],
      ["scan", 2, 2],
    ]);
    const controller = new AbortController();
    controller.abort();
    await expect(openDataset({ path: root }, { signal: controller.signal })).rejects.toMatchObject({
      name: "AbortError",
    });
  });
});

describe("dataset paths and hub ids", () => {
  it("keeps local paths, fetches hub ids through the hub cache, and explains failures", async () => {
    expect(await resolveDatasetPath(dir.path)).toBe(dir.path);
    await expect(resolveDatasetPath(join(dir.path, "nope"))).rejects.toBeInstanceOf(DatasetError);
    // A real HTTP hub on loopback serving an imagefolder dataset repo.
    const a = await imageBuffer({ width: 40, height: 30, format: "png" });
    const server = await startHubServer({
      repos: [
        {
          id: "someone/some-dataset",
          type: "dataset",
          files: {
            "metadata.jsonl": '{"file_name": "a.png", "text": "a red square"}\n',
            "a.png": a,
          },
        },
      ],
    });
    const restoreEnv = isolateHubEnv({ HF_HUB_CACHE: join(dir.path, "hf-cache"), HF_ENDPOINT: server.endpoint });
    try {
      const ds = await openDataset({ path: "someone/some-dataset" });
      expect(ds.items.map((i) => i.caption)).toEqual(["a red square"]);
      expect(ds.root.startsWith(join(dir.path, "hf-cache"))).toBe(true);
      await expect(openDataset({ path: "someone/missing" })).rejects.toThrow(/someone\/missing/);
    } finally {
      restoreEnv();
      await server.close();
    }
  });
});
