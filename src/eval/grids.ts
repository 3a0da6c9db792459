// Comparison grids for the report: prompts (rows) x variants (columns), one grid per seed
// (or per sample index when seeds are unknown), split into pages of a few prompts.
import { join } from "node:path";

import sharp from "sharp";

import { writeFileAtomic } from "../io/atomic.js";
import { makeGrid } from "../pipeline/grid.js";

export interface GridImage {
  path: string;
  promptIndex: number;
  seed: number | null;
  sample: number;
}

export interface GridVariant {
  name: string;
  images: readonly GridImage[];
}

export interface GridFile {
  /** Relative to the output folder (POSIX). */
  file: string;
  /** "seed 3" / "sample 0". */
  key: string;
  /** Prompt indices of the rows, top to bottom. */
  prompts: number[];
  /** Variant names of the columns, left to right. */
  variants: string[];
}

/** Prompts per grid image. */
const ROWS_PER_GRID = 8;

export async function writeGrids(
  outputDir: string,
  prompts: readonly string[],
  variants: readonly GridVariant[],
  options: { cell: number; signal?: AbortSignal },
): Promise<GridFile[]> {
  const bySeed = variants.every((v) => v.images.every((i) => i.seed !== null));
  const keyOf = (i: GridImage): number => (bySeed ? i.seed! : i.sample);
  const keys = [...new Set(variants.flatMap((v) => v.images.map(keyOf)))].sort((a, b) => a - b);
  const promptIndices = [...new Set(variants.flatMap((v) => v.images.map((i) => i.promptIndex)))].sort((a, b) => a - b);
  const blank = await sharp({
    create: { width: options.cell, height: options.cell, channels: 3, background: { r: 235, g: 235, b: 235 } },
  })
    .png()
    .toBuffer();
  const thumbnail = async (path: string): Promise<Buffer> =>
    sharp(path, { autoOrient: true })
      .resize(options.cell, options.cell, { fit: "inside", kernel: "lanczos3" })
      .png()
      .toBuffer();

  const out: GridFile[] = [];
  for (const key of keys) {
    for (let page = 0; page * ROWS_PER_GRID < promptIndices.length; page++) {
      options.signal?.throwIfAborted();
      const rows = promptIndices.slice(page * ROWS_PER_GRID, (page + 1) * ROWS_PER_GRID);
      const cells: Buffer[] = [];
      for (const p of rows) {
        for (const v of variants) {
          const image = v.images.find((i) => i.promptIndex === p && keyOf(i) === key);
          cells.push(image ? await thumbnail(image.path) : blank);
        }
      }
      const grid = await makeGrid(cells, {
        columns: variants.length,
        columnLabels: variants.map((v) => v.name),
        rowLabels: rows.map((p) => prompts[p]!),
        labelWidth: Math.min(320, Math.max(200, options.cell)),
      });
      const label = bySeed ? `seed-${key}` : `sample-${key}`;
      const file = `grids/${label}${promptIndices.length > ROWS_PER_GRID ? `-${page + 1}` : ""}.png`;
      await writeFileAtomic(join(outputDir, file), grid);
      out.push({
        file,
        key: bySeed ? `seed ${key}` : `sample ${key}`,
        prompts: rows,
        variants: variants.map((v) => v.name),
      });
    }
  }
  return out;
}
