// A small evaluation setup on disk: two variant folders of real PNGs (the golden CLIP-score
// images) with prompts from metadata.jsonl and from PNG parameters, instance images, and
// training runs with metrics.jsonl files.
import { copyFile, mkdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";

import { addPngText, formatInfotext } from "../../src/io/png.js";
import { fixture } from "./fixtures.js";

export interface EvalFixture {
  root: string;
  /** golden/clip_score.json */
  golden: { images: string[]; captions: string[] };
  /** Variant "golden": the four golden images with their golden captions (seed 0), via metadata.jsonl. */
  goldenDir: string;
  /** Variant "tagged": two prompts x seeds 1, 2 from PNG parameters (with a <lora:..> tag to strip). */
  taggedDir: string;
  instanceDir: string;
  /** A single-stage run (metrics.jsonl + report.html) and a two-stage run (one folder per stage). */
  runDir: string;
  stagedRunDir: string;
}

export async function makeEvalFixture(root: string): Promise<EvalFixture> {
  const golden = JSON.parse(await readFile(fixture("golden", "clip_score.json"), "utf8")) as EvalFixture["golden"];
  const goldenDir = join(root, "golden-images");
  await mkdir(goldenDir, { recursive: true });
  const rows: string[] = [];
  for (const [i, rel] of golden.images.entries()) {
    const name = `img${i}.png`;
    await copyFile(fixture(rel), join(goldenDir, name));
    rows.push(JSON.stringify({ file_name: name, prompt: golden.captions[i], seed: 0 }));
  }
  await writeFile(join(goldenDir, "metadata.jsonl"), `${rows.join("\n")}\n`);

  const taggedDir = join(root, "tagged");
  await mkdir(taggedDir, { recursive: true });
  let k = 0;
  for (const [p, prompt] of golden.captions.slice(0, 2).entries()) {
    for (const seed of [1, 2]) {
      const png = await readFile(fixture(golden.images[(p * 2 + seed) % golden.images.length]!));
      const text = formatInfotext({
        prompt,
        steps: 20,
        sampler: "Euler a",
        guidanceScale: 7,
        seed,
        width: 64,
        height: 64,
        loras: { style: 0.7 },
      });
      await writeFile(join(taggedDir, `out-${k++}.png`), addPngText(png, { parameters: text }));
    }
  }

  const instanceDir = join(root, "instance");
  await mkdir(instanceDir, { recursive: true });
  await copyFile(fixture(golden.images[1]!), join(instanceDir, "a.png"));
  await copyFile(fixture(golden.images[2]!), join(instanceDir, "b.png"));

  const runDir = join(root, "run-1");
  await mkdir(runDir, { recursive: true });
  const lines = Array.from({ length: 60 }, (_, s) =>
    JSON.stringify({
      step: s + 1,
      loss: 0.2 + 0.1 * Math.exp(-s / 20) + 0.01 * Math.sin(s),
      lr: 1e-4 * Math.min(1, (s + 1) / 10),
    }),
  );
  lines.splice(10, 0, JSON.stringify({ event: "checkpoint", step: 10 }));
  await writeFile(join(runDir, "metrics.jsonl"), `${lines.join("\n")}\n{"step": 61, "lo`);
  await writeFile(join(runDir, "report.html"), "<!doctype html><title>training</title><p>training report</p>");

  const stagedRunDir = join(root, "run-2");
  for (const [i, stage] of ["concept", "personal"].entries()) {
    await mkdir(join(stagedRunDir, stage), { recursive: true });
    const stageLines = Array.from({ length: 30 }, (_, s) =>
      JSON.stringify({ step: s + 1, loss: 0.3 - 0.002 * s - 0.05 * i, lr: 5e-5 }),
    );
    await writeFile(join(stagedRunDir, stage, "metrics.jsonl"), `${stageLines.join("\n")}\n`);
  }
  return { root, golden, goldenDir, taggedDir, instanceDir, runDir, stagedRunDir };
}
