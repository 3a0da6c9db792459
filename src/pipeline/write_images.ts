// Writing generated images as AUTOMATIC1111 does: <5-digit index>-<seed>.png, numbered
// after the highest index already in the folder, each written atomically, plus an
// optional contact sheet (grid-<index>.png) that carries the first image's parameters.
import { readdir } from "node:fs/promises";
import { join, resolve } from "node:path";

import { makeGrid } from "./grid.js";
import { writeFileAtomic } from "../io/atomic.js";
import { addPngText } from "../io/png.js";
import type { PipelineImage } from "./generate.js";

export interface WrittenImage {
  file: string;
  seed: number;
  prompt: string;
  parameters: string;
}

export interface WriteImagesResult {
  images: WrittenImage[];
  /** The contact sheet, when asked for and there was more than one image. */
  grid?: string;
}

/** Writes `images` (generated with outputType "png") into `dir`, which is created if needed. */
export async function writeImages(
  images: readonly PipelineImage[],
  dir: string,
  options: { grid?: boolean } = {},
): Promise<WriteImagesResult> {
  const out = resolve(dir);
  let index = await nextIndex(out);
  const written: WrittenImage[] = [];
  for (const image of images) {
    if (!image.png) throw new Error('writeImages needs images generated with outputType "png"');
    const file = join(out, `${String(index++).padStart(5, "0")}-${image.seed}.png`);
    await writeFileAtomic(file, image.png);
    written.push({ file, seed: image.seed, prompt: image.prompt, parameters: image.parameters });
  }
  if (!options.grid || images.length < 2) return { images: written };
  const sheet = await makeGrid(
    images.map((i) => i.png!),
    { columns: Math.ceil(Math.sqrt(images.length)) },
  );
  const grid = join(out, `grid-${String(index - 1).padStart(5, "0")}.png`);
  await writeFileAtomic(grid, addPngText(sheet, { parameters: images[0]!.parameters }));
  return { images: written, grid };
}

/** The index after the highest "<NNNNN>-..." file already in `dir` (0 for a new folder). */
async function nextIndex(dir: string): Promise<number> {
  let names: string[];
  try {
    names = await readdir(dir);
  } catch {
    return 0;
  }
  let next = 0;
  for (const name of names) {
    const m = /^(?:grid-)?(\d{5,})-?/.exec(name);
    if (m) next = Math.max(next, Number(m[1]) + 1);
  }
  return next;
}
