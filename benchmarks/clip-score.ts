// CLIP scoring throughput: the image path (sharp decode + PIL-exact bicubic resize + crop +
// normalize) on SD-sized PNGs, and whole CLIP score pairs per second with a CLIP folder
// (default the tiny fixture model, where preprocessing dominates; pass a real CLIP folder
// as the first argument to measure the model too). Args: [clipDir] [images] [size].
import sharp from "sharp";

import { ClipScorer } from "../src/eval/clip_score.js";
import { decodeRgb } from "../src/eval/clip_image_processor.js";
import { native } from "../src/native/index.js";
import { tensorFrom } from "../src/tensor.js";
import { fixture } from "../test/helpers/fixtures.js";
import { machine, median, time } from "./_util.js";
import type { Benchmark } from "./run.js";

/** Deterministic noisy gradient PNGs (noise keeps PNG decoding honest). */
async function makeImages(count: number, size: number): Promise<Buffer[]> {
  const out: Buffer[] = [];
  let state = 1;
  for (let n = 0; n < count; n++) {
    const data = Buffer.alloc(size * size * 3);
    for (let i = 0; i < data.length; i++) {
      state = (state * 1103515245 + 12345) % 2 ** 31;
      data[i] = ((i % (size * 3)) / 3 + (state >> 24) + n * 17) & 255;
    }
    out.push(
      await sharp(data, { raw: { width: size, height: size, channels: 3 } })
        .png()
        .toBuffer(),
    );
  }
  return out;
}

export const benchmark: Benchmark = {
  description: "CLIP score: image preprocessing (decode + PIL bicubic + crop + normalize) and pairs/s",
  async run(args) {
    const clipDir = args[0] ?? fixture("tiny-clip");
    const count = Number(args[1] ?? 32);
    const size = Number(args[2] ?? 512);
    const pngs = await makeImages(count, size);
    const scorer = await ClipScorer.load(clipDir);
    const captions = pngs.map((_, i) => `a photo of a thing number ${i}`);

    const decoded = await Promise.all(pngs.map((p) => decodeRgb(p)));
    const one = tensorFrom(decoded[0]!.data, [size, size, 3]);
    const resizeMs = await time(() => native().image.resize(one, { width: 224, height: 224 }), 20, 3);
    const decodeMs = await time(() => Promise.all(pngs.map((p) => decodeRgb(p))), 3);
    const preprocessMs = await time(() => scorer.processor.preprocess(decoded), 3);
    const endToEndMs = await time(() => scorer.pairScores(pngs, captions), 3);
    scorer.dispose();
    const perSecond = (ms: number): number => (count / ms) * 1000;
    return {
      machine: machine(),
      clip: clipDir,
      images: count,
      size,
      resizeBicubicMsPerImage: median(resizeMs),
      decodeImagesPerSecond: perSecond(median(decodeMs)),
      preprocessImagesPerSecond: perSecond(median(preprocessMs)),
      clipScorePairsPerSecond: perSecond(median(endToEndMs)),
    };
  },
};
