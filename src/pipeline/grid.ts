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

/** Label text: 13px sans-serif, about 7px per character; lines 16px apart. */
const CHAR_PX = 7;
const LINE_PX = 16;

/**
 * Composes encoded images (any format sharp reads) into one PNG grid. Cells take the largest
 * image's size. Labels wrap at word boundaries (never cut): a row grows taller, and the column
 * label band deeper, when a label needs more lines than fit.
 */
export async function makeGrid(images: Buffer[], options: GridOptions): Promise<Buffer> {
  if (images.length === 0) throw new Error("makeGrid: no images");
  const columns = Math.max(1, Math.min(options.columns, images.length));
  const rows = Math.ceil(images.length / columns);
  const metas = await Promise.all(images.map((b) => sharp(b).metadata()));
  const cellW = Math.max(...metas.map((m) => m.width ?? 0));
  const cellH = Math.max(...metas.map((m) => m.height ?? 0));
  const gap = options.gap ?? 4;
  const left = options.rowLabels ? (options.labelWidth ?? defaultLabelWidth(options.rowLabels, cellW)) : 0;
  const rowLines = (options.rowLabels ?? []).slice(0, rows).map((l) => wrapLabel(l, left - 8));
  const columnLines = (options.columnLabels ?? []).slice(0, columns).map((l) => wrapLabel(l, cellW));
  // A one-line label keeps the row at the image's height; more lines make room for themselves.
  const rowH = Math.max(cellH, ...rowLines.map((l) => (l.length > 1 ? l.length * LINE_PX + 8 : 0)));
  const deepest = Math.max(0, ...columnLines.map((l) => l.length));
  const top = options.columnLabels ? Math.max(options.labelHeight ?? 28, deepest > 1 ? deepest * LINE_PX + 12 : 0) : 0;
  const width = left + columns * cellW + (columns + 1) * gap;
  const height = top + rows * rowH + (rows + 1) * gap;
  const composites: OverlayOptions[] = images.map((input, i) => ({
    input,
    left: left + gap + (i % columns) * (cellW + gap),
    top: top + gap + Math.floor(i / columns) * (rowH + gap) + Math.floor((rowH - cellH) / 2),
  }));
  if (top || left)
    composites.push({
      input: labelsSvg(width, height, rowLines, columnLines, { cellW, rowH, gap, top, left }),
      left: 0,
      top: 0,
    });
  return sharp({ create: { width, height, channels: 3, background: options.background ?? { r: 255, g: 255, b: 255 } } })
    .composite(composites)
    .png()
    .toBuffer();
}

/** Wide enough for the longest label on about four lines, within 80..320 px. */
function defaultLabelWidth(labels: readonly string[], cellW: number): number {
  const longest = Math.max(0, ...labels.map((l) => l.length));
  return Math.round(Math.min(320, Math.max(80, cellW / 2, (longest / 4) * CHAR_PX + 8)));
}

/** `text` broken at spaces into lines of at most `px` pixels; a word longer than a line is split. */
export function wrapLabel(text: string, px: number): string[] {
  const max = Math.max(1, Math.floor(px / CHAR_PX));
  const lines: string[] = [];
  let line = "";
  for (let word of text.split(/\s+/).filter(Boolean)) {
    while (word.length > max) {
      if (line) lines.push(line);
      line = "";
      lines.push(word.slice(0, max));
      word = word.slice(max);
    }
    if (!line) line = word;
    else if (line.length + 1 + word.length <= max) line += ` ${word}`;
    else {
      lines.push(line);
      line = word;
    }
  }
  if (line) lines.push(line);
  return lines.length ? lines : [""];
}

function escapeXml(text: string): string {
  return text.replace(
    /[<>&"']/g,
    (c) => ({ "<": "&lt;", ">": "&gt;", "&": "&amp;", '"': "&quot;", "'": "&apos;" })[c]!,
  );
}

/** One <text> of several lines (tspans), the first baseline at y. */
function textBlock(lines: string[], x: number, y: number, anchor: "middle" | "end"): string {
  const spans = lines.map((l, i) => `<tspan x="${x}" dy="${i === 0 ? 0 : LINE_PX}">${escapeXml(l)}</tspan>`);
  return `<text x="${x}" y="${y}" text-anchor="${anchor}">${spans.join("")}</text>`;
}

function labelsSvg(
  width: number,
  height: number,
  rowLines: string[][],
  columnLines: string[][],
  g: { cellW: number; rowH: number; gap: number; top: number; left: number },
): Buffer {
  const texts: string[] = [];
  columnLines.forEach((lines, c) => {
    const x = g.left + g.gap + c * (g.cellW + g.gap) + g.cellW / 2;
    texts.push(textBlock(lines, x, g.top - 9 - (lines.length - 1) * LINE_PX, "middle"));
  });
  rowLines.forEach((lines, r) => {
    const middle = g.top + g.gap + r * (g.rowH + g.gap) + g.rowH / 2;
    texts.push(textBlock(lines, g.left - 6, middle - ((lines.length - 1) * LINE_PX) / 2 + 4, "end"));
  });
  return Buffer.from(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}"><style>text{font:13px sans-serif;fill:#222}</style>${texts.join("")}</svg>`,
  );
}
