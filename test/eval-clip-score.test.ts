// CLIP score parity with torchmetrics 1.3.2 + transformers CLIPProcessor (golden/clip_score),
// PIL-exact image preprocessing, and the DreamBooth similarity metrics.
import { existsSync } from "node:fs";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import sharp from "sharp";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { ClipImageProcessor, decodeRgb, parsePreprocessorConfig } from "../src/eval/clip_image_processor.js";
import {
  aggregateClipScore,
  ClipScore,
  clipImageSimilarity,
  ClipScorer,
  clipScore,
  clipTextSimilarity,
  resolveClipModel,
  setClipModelResolver,
} from "../src/eval/clip_score.js";
import { native, type Tensor } from "../src/native/index.js";
import { tensorFrom } from "../src/tensor.js";
import { expectClose, fixture, fixtureJson, get, golden, tempDir, TOL, values } from "./helpers/fixtures.js";
import { isolateHubEnv, startHubServer } from "./helpers/hub_server.js";

interface ClipScoreJson {
  images: string[];
  captions: string[];
  single_pair_index_for_negative_case: number;
}

// The README's forward tolerance, applied on the 100 * cosine scale (observed: ~1e-5).
const SCORE_TOL = TOL.forward;

let ref: Map<string, Tensor>;
let meta: ClipScoreJson;
let images: string[];
let scorer: ClipScorer;
let dir: { path: string; cleanup(): Promise<void> };

beforeAll(async () => {
  ref = await golden("clip_score");
  meta = JSON.parse(await readFile(fixture("golden", "clip_score.json"), "utf8")) as ClipScoreJson;
  images = meta.images.map((p) => fixture(p));
  scorer = await ClipScorer.load(fixture("tiny-clip"));
  dir = await tempDir();
});
afterAll(async () => {
  scorer.dispose();
  await dir.cleanup();
});

const scalar = async (name: string): Promise<number> => (await values(get(ref, name)))[0]!;

describe("CLIPImageProcessor parity (PIL bicubic, center crop, rescale, normalize)", () => {
  it("pixel_values of all four images (down- and upscaling, square, odd sizes) within atol 1e-6", async () => {
    const pixels = await scorer.processor.preprocess(images);
    await expectClose(pixels, get(ref, "pixel_values"), { atol: 1e-6, rtol: 0 }, "pixel_values");
    pixels.dispose();
  });

  it("reads the fixture's preprocessor_config.json into CLIPImageProcessor's settings", () => {
    const file = fixtureJson<{
      size: { shortest_edge: number };
      crop_size: { height: number; width: number };
      resample: number;
      rescale_factor: number;
      image_mean: number[];
    }>("tiny-clip", "preprocessor_config.json");
    expect(scorer.processor.config).toMatchObject({
      shortestEdge: file.size.shortest_edge,
      cropHeight: file.crop_size.height,
      cropWidth: file.crop_size.width,
      resample: file.resample,
      rescaleFactor: file.rescale_factor,
    });
    expect(get(ref, "pixel_values").shape.slice(2)).toEqual([file.crop_size.height, file.crop_size.width]);
  });

  it("accepts transformers' legacy int sizes and explicit height/width, and names bad fields", () => {
    expect(parsePreprocessorConfig({ size: 336, crop_size: 336 })).toMatchObject({
      shortestEdge: 336,
      cropHeight: 336,
      cropWidth: 336,
    });
    const fixed = parsePreprocessorConfig({ size: { height: 256, width: 192 } });
    expect(fixed.shortestEdge).toBeUndefined();
    expect(fixed).toMatchObject({ resizeHeight: 256, resizeWidth: 192 });
    expect(() => parsePreprocessorConfig({ resample: 0 }, "p.json")).toThrow(/p\.json: "resample"/);
    expect(() => parsePreprocessorConfig({ size: { long: 3 } }, "p.json")).toThrow(/"size"/);
    expect(() => parsePreprocessorConfig({ image_mean: [1, 2] }, "p.json")).toThrow(/"image_mean"/);
  });

  it("pads with zeros, centred, when the image is smaller than the crop (transformers' center_crop)", async () => {
    // 3 rows x 5 columns of 200, crop 6x8 without resize or normalization: transformers pads
    // to 6x8 with ceil((6-3)/2) = 2 rows on top and ceil((8-5)/2) = 2 columns on the left.
    const p = new ClipImageProcessor({
      ...parsePreprocessorConfig({}),
      doResize: false,
      cropHeight: 6,
      cropWidth: 8,
      doRescale: false,
      doNormalize: false,
    });
    const out = await p.preprocess([{ data: new Uint8Array(3 * 5 * 3).fill(200), width: 5, height: 3 }]);
    expect(out.shape).toEqual([1, 3, 6, 8]);
    const v = out.toTypedArray() as Float32Array;
    for (let y = 0; y < 6; y++) {
      for (let x = 0; x < 8; x++) {
        const inside = y >= 2 && y < 5 && x >= 2 && x < 7;
        expect(v[y * 8 + x], `(${y}, ${x})`).toBe(inside ? 200 : 0);
      }
    }
    out.dispose();
  });

  it("drops alpha without compositing, as PIL's convert('RGB') does", async () => {
    const png = await sharp(Buffer.from([10, 20, 30, 0, 40, 50, 60, 255]), {
      raw: { width: 2, height: 1, channels: 4 },
    })
      .png()
      .toBuffer();
    const rgb = await decodeRgb(png);
    expect([...rgb.data]).toEqual([10, 20, 30, 40, 50, 60]);
  });

  it("ignores embedded ICC profiles, as PIL does (the stored values are the pixels)", async () => {
    // sharp converts these sRGB pixels into Display P3 and tags the file with that profile.
    const srgb = Buffer.from([200, 30, 40, 10, 220, 60]);
    const png = await sharp(srgb, { raw: { width: 2, height: 1, channels: 3 } })
      .withIccProfile("p3")
      .png()
      .toBuffer();
    const inFile = await sharp(png).keepIccProfile().raw().toBuffer();
    expect([...inFile]).not.toEqual([...srgb]);
    expect([...(await decodeRgb(png)).data]).toEqual([...inFile]);
  });

  it("resizing to the same size is a copy (PIL returns self.copy())", async () => {
    const src = tensorFrom(
      new Uint8Array(4 * 6 * 3).map((_, i) => (i * 37) % 256),
      [4, 6, 3],
    );
    const out = await native().image.resize(src, { width: 6, height: 4 });
    expect([...(out.toTypedArray() as Uint8Array)]).toEqual([...(src.toTypedArray() as Uint8Array)]);
    // Bad arguments are refused on the calling thread, before any work is queued.
    expect(() => native().image.resize(src, { width: 0, height: 4 })).toThrow(/width/);
    expect(() => native().image.resize(src, { width: 3, height: 4, filter: "nearest" as never })).toThrow(
      /nearest is not a convolution filter/,
    );
  });

  it("fails with the file's name when an image cannot be decoded", async () => {
    const bad = join(dir.path, "broken.png");
    await writeFile(bad, "not an image");
    await expect(scorer.processor.preprocess([bad])).rejects.toThrow(/broken\.png/);
  });
});

describe("CLIP score parity with torchmetrics 1.3.2", () => {
  it("per-pair raw scores (100 * cos, unclamped, padding='longest' with the attention mask)", async () => {
    const { scores, truncated } = await scorer.pairScores(images, meta.captions);
    const scored = tensorFrom(Float32Array.from(scores), [scores.length]);
    await expectClose(scored, get(ref, "per_pair_score_raw"), SCORE_TOL, "raw");
    expect(truncated).toEqual([]);
  });

  it("clip_score = max(mean of raw scores, 0): the clamp comes after averaging", async () => {
    const value = await clipScore(scorer, images, meta.captions);
    expect(Math.abs(value - (await scalar("clip_score")))).toBeLessThan(SCORE_TOL.atol);
    // The fixture has a negative pair (golden/clip_score.json names it): clamping per pair
    // would give a different, wrong number, off by the negative scores' share of the mean.
    const raw = await values(get(ref, "per_pair_score_raw"));
    expect(raw[meta.single_pair_index_for_negative_case]).toBeLessThan(0);
    const negativeShare = -[...raw].reduce((s, x) => s + Math.min(x, 0), 0) / raw.length;
    const clampedFirst = [...raw].reduce((s, x) => s + Math.max(x, 0), 0) / raw.length;
    expect(Math.abs(clampedFirst - value)).toBeGreaterThan(negativeShare / 2);
  });

  it("CLIPScore.update(imgs[:2]) + update(imgs[2:]), compute() = max(sum / n, 0)", async () => {
    const metric = new ClipScore(scorer);
    await metric.update(images.slice(0, 2), meta.captions.slice(0, 2));
    await metric.update(images.slice(2), meta.captions.slice(2));
    expect(metric.count).toBe(images.length);
    expect(Math.abs(metric.compute() - (await scalar("clip_score_metric_2_updates")))).toBeLessThan(SCORE_TOL.atol);
    metric.reset();
    expect(() => metric.compute()).toThrow(/no pairs/);
  });

  it("a single negative pair scores 0", async () => {
    const i = meta.single_pair_index_for_negative_case;
    const value = await clipScore(scorer, [images[i]!], [meta.captions[i]!]);
    expect(value).toBe(await scalar("clip_score_single_negative_pair"));
    expect(aggregateClipScore([-3, 1])).toBe(0);
  });

  it("refuses mismatched images and captions with torchmetrics' message", async () => {
    await expect(scorer.pairScores(images, meta.captions.slice(0, 3))).rejects.toThrow(
      `number of images and text examples to be the same but got ${images.length} and 3`,
    );
  });

  it("batching images and captions does not change the scores", async () => {
    const whole = await scorer.pairScores(images, meta.captions);
    const batched = await scorer.pairScores(images, meta.captions, { batchSize: 3 });
    batched.scores.forEach((s, i) => expect(Math.abs(s - whole.scores[i]!)).toBeLessThan(1e-4));
  });

  it("cuts captions longer than the text model's positions (keeping EOS) and reports them", async () => {
    const { text_config: text } = fixtureJson<{ text_config: { max_position_embeddings?: number } }>(
      "tiny-clip",
      "config.json",
    );
    const positions = text.max_position_embeddings ?? 77; // transformers' default
    const long = Array.from({ length: positions + 23 }, () => "cat").join(" ");
    const { scores, truncated } = await scorer.pairScores([images[0]!, images[1]!], [long, meta.captions[1]!]);
    expect(truncated).toEqual([0]);
    expect(Number.isFinite(scores[0])).toBe(true);
  });
});

describe("DreamBooth metrics", () => {
  /** The golden embeddings' rows [from, to) as a float32 tensor. */
  const rows = async (name: string, from: number, to: number): Promise<{ t: Tensor; v: number[][] }> => {
    const all = await values(get(ref, name));
    const d = get(ref, name).shape[1]!;
    const v = Array.from({ length: to - from }, (_, i) => [...all.subarray((from + i) * d, (from + i + 1) * d)]);
    return { t: tensorFrom(Float32Array.from(v.flat()), [to - from, d]), v };
  };
  const cosine = (a: number[], b: number[]): number => {
    const dot = a.reduce((s, x, i) => s + x * b[i]!, 0);
    return dot / Math.hypot(...a) / Math.hypot(...b);
  };

  it("CLIP-I = mean cosine over every (generated, reference) pair of image embeddings", async () => {
    const gen = await rows("image_embeds", 0, 2);
    const real = await rows("image_embeds", 1, 4);
    const expected = gen.v.map((g) => real.v.reduce((s, r) => s + cosine(g, r), 0) / real.v.length);
    const result = await clipImageSimilarity(gen.t, real.t);
    result.perImage.forEach((p, i) => expect(Math.abs(p - expected[i]!)).toBeLessThan(1e-6));
    expect(Math.abs(result.mean - (expected[0]! + expected[1]!) / 2)).toBeLessThan(1e-6);
  });

  it("CLIP-T = mean of the golden raw pair scores / 100 (unclamped)", async () => {
    const raw = [...(await values(get(ref, "per_pair_score_raw")))];
    const expected = raw.reduce((s, x) => s + x, 0) / raw.length / 100;
    expect(Math.abs(clipTextSimilarity(raw) - expected)).toBeLessThan(1e-12);
  });
});

describe("CLIP model resolution", () => {
  it("uses local folders as they are and fetches hub ids through the Hugging Face cache", async () => {
    expect(await resolveClipModel(fixture("tiny-clip"))).toBe(fixture("tiny-clip"));
    await expect(resolveClipModel(join(dir.path, "missing"))).rejects.toThrow(/does not exist/);
    // A real HTTP hub on loopback serving the tiny CLIP repo (plus a pickle that must not be fetched).
    const server = await startHubServer({
      repos: [{ id: "someone/tiny-clip", dir: fixture("tiny-clip"), files: { "pytorch_model.bin": "pickle" } }],
    });
    const restoreEnv = isolateHubEnv({ HF_HUB_CACHE: join(dir.path, "hf-cache"), HF_ENDPOINT: server.endpoint });
    try {
      const fromHub = await ClipScorer.load("someone/tiny-clip");
      expect(fromHub.source).toBe("someone/tiny-clip");
      expect(fromHub.model.path.startsWith(join(dir.path, "hf-cache"))).toBe(true);
      expect(existsSync(join(fromHub.model.path, "pytorch_model.bin"))).toBe(false);
      const viaHub = await fromHub.pairScores(images, meta.captions);
      const local = await scorer.pairScores(images, meta.captions);
      expect(viaHub.scores).toEqual(local.scores);
      fromHub.dispose();
      await expect(ClipScorer.load("someone/missing")).rejects.toThrow(/someone\/missing/);
    } finally {
      restoreEnv();
      await server.close();
    }
    setClipModelResolver(async () => fixture("tiny-clip"));
    try {
      expect(await resolveClipModel("any/id")).toBe(fixture("tiny-clip"));
    } finally {
      setClipModelResolver(undefined);
    }
  });
});
