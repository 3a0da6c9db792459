// Contact-sheet grids: images in rows and columns, optionally with row and
// column labels, composed with sharp.
import sharp, { type OverlayOptions } from "sharp";

export interface GridOptions {
  columns: number;
  /** Labels above each column / left of each row (escaped into SVG text). */
  columnLabels?: string[];
  rowLabels?: string[];
  gap?: number;
  background?: { r: number; g: number; b: number };
  labelHeight?: number;
  labelWidth?: number;
}

/** Composes encoded images (any format sharp reads) into one PNG grid. Cells take the largest image's size. */
export async function makeGrid(images: Buffer[], options: GridOptions): Promise<Buffer> {
  if (images.length === 0) throw new Error("makeGrid: no images");
  const columns = Math.max(1, Math.min(options.columns, images.length));
  const rows = Math.ceil(images.length / columns);
  const metas = await Promise.all(images.map((b) => sharp(b).metadata()));
  const cellW = Math.max(...metas.map((m) => m.width ?? 0));
  const cellH = Math.max(...metas.map((m) => m.height ?? 0));
  const gap = options.gap ?? 4;
  const top = options.columnLabels ? (options.labelHeight ?? 28) : 0;
  const left = options.rowLabels ? (options.labelWidth ?? Math.min(240, Math.max(80, cellW / 2))) : 0;
  const width = left + columns * cellW + (columns + 1) * gap;
  const height = top + rows * cellH + (rows + 1) * gap;
  const composites: OverlayOptions[] = images.map((input, i) => ({
    input,
    left: left + gap + (i % columns) * (cellW + gap),
    top: top + gap + Math.floor(i / columns) * (cellH + gap),
  }));
  if (top || left)
    composites.push({
      input: labelsSvg(width, height, options, { cellW, cellH, gap, top, left, columns, rows }),
      left: 0,
      top: 0,
    });
  return sharp({ create: { width, height, channels: 3, background: options.background ?? { r: 255, g: 255, b: 255 } } })
    .composite(composites)
    .png()
    .toBuffer();
}

function escapeXml(text: string): string {
  return text.replace(
    /[<>&"']/g,
    (c) => ({ "<": "&lt;", ">": "&gt;", "&": "&amp;", '"': "&quot;", "'": "&apos;" })[c]!,
  );
}

function labelsSvg(
  width: number,
  height: number,
  o: GridOptions,
  g: { cellW: number; cellH: number; gap: number; top: number; left: number; columns: number; rows: number },
): Buffer {
  const texts: string[] = [];
  const clip = (s: string, px: number): string =>
    s.length * 7 > px ? `${s.slice(0, Math.max(1, Math.floor(px / 7) - 1))}…` : s;
  o.columnLabels?.slice(0, g.columns).forEach((label, c) => {
    const x = g.left + g.gap + c * (g.cellW + g.gap) + g.cellW / 2;
    texts.push(`<text x="${x}" y="${g.top - 9}" text-anchor="middle">${escapeXml(clip(label, g.cellW))}</text>`);
  });
  o.rowLabels?.slice(0, g.rows).forEach((label, r) => {
    const y = g.top + g.gap + r * (g.cellH + g.gap) + g.cellH / 2;
    texts.push(`<text x="${g.left - 6}" y="${y}" text-anchor="end">${escapeXml(clip(label, g.left - 8))}</text>`);
  });
  return Buffer.from(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}"><style>text{font:13px sans-serif;fill:#222}</style>${texts.join("")}</svg>`,
  );
}
