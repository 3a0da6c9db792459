// What the training tests share: a small captioned imagefolder, and comparing two
// safetensors files tensor by tensor (same names, bit-identical values).
import { join } from "node:path";
import { expect } from "vitest";

import { readSafetensors } from "../../src/io/safetensors.js";
import { native } from "../../src/native/index.js";
import { writeImage, writeText } from "./images.js";

/** `count` 20x20 images img<i>.png (seeds seed + i) captioned "picture <i>" in metadata.jsonl. */
export async function writeCaptionedImages(dir: string, count: number, seed: number): Promise<string> {
  for (let i = 0; i < count; i++) await writeImage(join(dir, `img${i}.png`), { width: 20, height: 20, seed: seed + i });
  const rows = Array.from({ length: count }, (_, i) =>
    JSON.stringify({ file_name: `img${i}.png`, text: `picture ${i}` }),
  );
  await writeText(join(dir, "metadata.jsonl"), rows.join("\n"));
  return dir;
}

/** Both files hold the same tensor names with bit-identical values. */
export async function expectSameTensors(a: string, b: string): Promise<void> {
  const x = (await readSafetensors(a)).tensors;
  const y = (await readSafetensors(b)).tensors;
  expect([...x.keys()].sort()).toEqual([...y.keys()].sort());
  for (const [name, t] of x) expect(native().ops.maxAbsDiff(t, y.get(name)!), `${a}: ${name}`).toBe(0);
}
