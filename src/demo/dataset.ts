// The demo's images, drawn with sharp from SVG: a broad concept (a thumbs-up
// hand, many colours and places) and one personal subject (always the same
// purple hand with a star and a red cuff). Deterministic for a seed.
import { mkdir } from "node:fs/promises";
import { join } from "node:path";

import sharp from "sharp";

import { writeFileAtomic } from "../io/atomic.js";

const BACKGROUNDS: [string, string][] = [
  ["blue", "#3b6fd6"],
  ["green", "#3f9e4d"],
  ["white", "#f2f2f2"],
  ["orange", "#e8892b"],
  ["gray", "#808890"],
  ["pink", "#e07aa8"],
];
const SKIN = ["#f1c27d", "#e0ac69", "#c68642", "#8d5524", "#ffdbac"];

function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

interface Hand {
  x: number;
  y: number;
  scale: number;
  skin: string;
  background: string;
  mark?: boolean;
}

/** A fist with a raised thumb, centred near (x, y), as SVG. */
function handSvg(size: number, h: Hand): string {
  const s = h.scale * size;
  const fist = `<rect x="${h.x - 0.3 * s}" y="${h.y - 0.05 * s}" width="${0.6 * s}" height="${0.45 * s}" rx="${0.12 * s}" fill="${h.skin}" stroke="#40302a" stroke-width="${0.03 * s}"/>`;
  const thumb = `<rect x="${h.x - 0.28 * s}" y="${h.y - 0.45 * s}" width="${0.18 * s}" height="${0.5 * s}" rx="${0.09 * s}" fill="${h.skin}" stroke="#40302a" stroke-width="${0.03 * s}"/>`;
  const fingers = [0, 1, 2]
    .map(
      (i) =>
        `<line x1="${h.x - 0.05 * s}" y1="${h.y + (0.07 + i * 0.11) * s}" x2="${h.x + 0.28 * s}" y2="${h.y + (0.07 + i * 0.11) * s}" stroke="#40302a" stroke-width="${0.025 * s}"/>`,
    )
    .join("");
  const mark = h.mark
    ? `<rect x="${h.x - 0.3 * s}" y="${h.y + 0.38 * s}" width="${0.6 * s}" height="${0.12 * s}" fill="#d22"/>` +
      `<circle cx="${h.x + 0.12 * s}" cy="${h.y + 0.12 * s}" r="${0.07 * s}" fill="#fff"/>`
    : "";
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${size}" height="${size}"><rect width="100%" height="100%" fill="${h.background}"/>${thumb}${fist}${fingers}${mark}</svg>`;
}

async function render(svg: string): Promise<Buffer> {
  return sharp(Buffer.from(svg)).png().toBuffer();
}

export interface DemoData {
  /** An imagefolder (metadata.jsonl) of captioned thumbs-up images. */
  conceptDir: string;
  /** A DreamBooth instance folder: the one personal subject. */
  personDir: string;
}

/** Draws the demo datasets into `dir` (idempotent for a seed: same bytes every time). */
export async function writeDemoData(
  dir: string,
  options: { seed?: number; size?: number; concept?: number; person?: number } = {},
): Promise<DemoData> {
  const size = options.size ?? 64;
  const random = rng(options.seed ?? 1234);
  const conceptDir = join(dir, "concept");
  const personDir = join(dir, "person");
  await mkdir(conceptDir, { recursive: true });
  await mkdir(personDir, { recursive: true });
  const rows: string[] = [];
  for (let i = 0; i < (options.concept ?? 16); i++) {
    const [bgName, bg] = BACKGROUNDS[i % BACKGROUNDS.length]!;
    const hand: Hand = {
      x: size * (0.4 + 0.2 * random()),
      y: size * (0.45 + 0.1 * random()),
      scale: 0.6 + 0.25 * random(),
      skin: SKIN[Math.floor(random() * SKIN.length)]!,
      background: bg,
    };
    const name = `thumbs_${String(i).padStart(2, "0")}.png`;
    await writeFileAtomic(join(conceptDir, name), await render(handSvg(size, hand)));
    rows.push(JSON.stringify({ file_name: name, text: `a photo of a thumbs up on a ${bgName} background` }));
  }
  await writeFileAtomic(join(conceptDir, "metadata.jsonl"), `${rows.join("\n")}\n`);
  for (let i = 0; i < (options.person ?? 5); i++) {
    const hand: Hand = {
      x: size * (0.42 + 0.16 * random()),
      y: size * (0.45 + 0.1 * random()),
      scale: 0.7 + 0.1 * random(),
      skin: "#8a4fd0",
      background: BACKGROUNDS[(i * 2) % BACKGROUNDS.length]![1],
      mark: true,
    };
    await writeFileAtomic(join(personDir, `sks_${i}.png`), await render(handSvg(size, hand)));
  }
  return { conceptDir, personDir };
}
