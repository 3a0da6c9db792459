// Data parallel with prior preservation and caches: the ranks split the missing class images
// (by image number) and the missing cached latents and text embeddings (by key), and the run
// trains what one process with the global batch trains, from the same class images.
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";

import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { cli, metrics, ranks, writeConfig, writeData } from "./helpers/dist.js";
import { tempDir } from "./helpers/fixtures.js";

/** As in dist_train.test.ts: the ranks' gradients are averaged after backward, not summed inside it. */
const TOL = 1e-5;
const CLASS_IMAGES = 3;

let dir: { path: string; cleanup(): Promise<void> };
let data: string;
beforeAll(async () => {
  dir = await tempDir("sdtune-dist-prior-");
  data = await writeData(dir.path);
});
afterAll(async () => dir.cleanup());

function dreambooth(out: string, batch: number): Promise<string> {
  return writeConfig(dir.path, out, data, [
    "method: dreambooth",
    "instance_prompt: a photo of sks dog",
    "prior_preservation:",
    "  class_prompt: a photo of a dog",
    `  class_data_dir: ${join(dir.path, out, "classes")}`,
    `  num_class_images: ${CLASS_IMAGES}`,
    "  sample_batch_size: 2",
    "  num_inference_steps: 2",
    "cache_latents: true",
    "center_crop: true",
    "cache_text_embeddings: true",
    `cache_dir: ${join(dir.path, out, "cache")}`,
    `train_batch_size: ${batch}`,
    "max_train_steps: 2",
  ]);
}

const pngs = (classDir: string): string[] =>
  readdirSync(classDir)
    .filter((f) => f.endsWith(".png"))
    .sort();

describe("data-parallel class images and caches (2 processes, Gloo)", () => {
  it("splits the class images and caches across ranks and trains what one process trains", async () => {
    // One thread, as each rank has: CPU reductions split by thread count, and these are compared bit for bit.
    const single = cli(["train", "--config", await dreambooth("one", 2), "--progress", "plain"], {
      OMP_NUM_THREADS: "1",
    });
    const two = await ranks(["train", "--config", await dreambooth("two", 1), "--progress", "plain"], 2);
    const codes = await Promise.all([single.done, ...two.map((p) => p.done)]);
    expect(codes, [single, ...two].map((p) => p.stderr()).join("\n---\n")).toEqual([0, 0, 0]);

    // The same class images, byte for byte: each image's seed is the run seed + its number.
    const one = join(dir.path, "one", "classes");
    const split = join(dir.path, "two", "classes");
    expect(pngs(split)).toEqual(pngs(one));
    expect(pngs(one)).toHaveLength(CLASS_IMAGES);
    for (const f of pngs(one)) expect(readFileSync(join(split, f)).equals(readFileSync(join(one, f))), f).toBe(true);

    // Rank 0 reports its own share: numbers 0, 2, ... of the missing ones (one process: all of them).
    const share = Math.ceil(CLASS_IMAGES / 2);
    expect(single.stderr()).toMatch(new RegExp(`class images img ${CLASS_IMAGES}/${CLASS_IMAGES} `));
    expect(two[0]!.stderr()).toMatch(new RegExp(`class images img ${share}/${share} `));

    // Trained from the split caches, the losses are those of one process with the global batch.
    const a = metrics(join(dir.path, "one"));
    const b = metrics(join(dir.path, "two"));
    expect(b).toHaveLength(2);
    b.forEach((line, i) => {
      expect(Math.abs((line.loss as number) - (a[i]!.loss as number)), `loss at step ${i + 1}`).toBeLessThan(TOL);
    });
  }, 240_000);
});
