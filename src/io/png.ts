// PNG text chunks: generation parameters travel inside the image, under the
// "parameters" keyword as AUTOMATIC1111 writes them (tEXt when the text is
// Latin-1, iTXt UTF-8 otherwise, as PIL's PngInfo.add_text does).
import { crc32 } from "node:zlib";

const SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);

function chunk(type: string, data: Buffer): Buffer {
  const length = Buffer.alloc(4);
  length.writeUInt32BE(data.length);
  const typeAndData = Buffer.concat([Buffer.from(type, "latin1"), data]);
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(typeAndData) >>> 0);
  return Buffer.concat([length, typeAndData, crc]);
}

function isLatin1(text: string): boolean {
  // eslint-disable-next-line no-control-regex
  return /^[\u0000-\u00ff]*$/.test(text);
}

/**
 * Returns a copy of `png` with text chunks inserted right after IHDR. Text chunks already
 * there under the same keywords are dropped, so re-tagging an image replaces its text.
 */
export function addPngText(png: Buffer, entries: Record<string, string>): Buffer {
  if (png.length < 33 || !png.subarray(0, 8).equals(SIGNATURE)) throw new Error("addPngText: not a PNG");
  png = withoutText(png, new Set(Object.keys(entries)));
  const ihdrEnd = 8 + 12 + png.readUInt32BE(8);
  const chunks: Buffer[] = [];
  for (const [keyword, text] of Object.entries(entries)) {
    if (!/^[\x20-\x7e]{1,79}$/.test(keyword)) throw new Error(`addPngText: invalid keyword "${keyword}"`);
    if (isLatin1(text)) {
      chunks.push(
        chunk("tEXt", Buffer.concat([Buffer.from(keyword, "latin1"), Buffer.from([0]), Buffer.from(text, "latin1")])),
      );
    } else {
      // keyword \0 compression-flag(0) method(0) language-tag \0 translated-keyword \0 text
      const head = Buffer.concat([Buffer.from(keyword, "latin1"), Buffer.from([0, 0, 0, 0, 0])]);
      chunks.push(chunk("iTXt", Buffer.concat([head, Buffer.from(text, "utf8")])));
    }
  }
  return Buffer.concat([png.subarray(0, ihdrEnd), ...chunks, png.subarray(ihdrEnd)]);
}

/** `png` without its tEXt / iTXt / zTXt chunks whose keyword is in `keywords`. */
function withoutText(png: Buffer, keywords: Set<string>): Buffer {
  const kept: Buffer[] = [png.subarray(0, 8)];
  let offset = 8;
  let dropped = false;
  while (offset + 12 <= png.length) {
    const length = png.readUInt32BE(offset);
    const type = png.toString("latin1", offset + 4, offset + 8);
    const end = Math.min(png.length, offset + 12 + length);
    const data = png.subarray(offset + 8, offset + 8 + length);
    const zero = data.indexOf(0);
    const isText = type === "tEXt" || type === "iTXt" || type === "zTXt";
    if (isText && zero > 0 && keywords.has(data.toString("latin1", 0, zero))) dropped = true;
    else kept.push(png.subarray(offset, end));
    offset = end;
  }
  if (offset < png.length) kept.push(png.subarray(offset));
  return dropped ? Buffer.concat(kept) : png;
}

/** Every uncompressed tEXt/iTXt entry of a PNG. */
export function readPngText(png: Buffer): Record<string, string> {
  if (!png.subarray(0, 8).equals(SIGNATURE)) throw new Error("readPngText: not a PNG");
  const out: Record<string, string> = {};
  let offset = 8;
  while (offset + 12 <= png.length) {
    const length = png.readUInt32BE(offset);
    const type = png.toString("latin1", offset + 4, offset + 8);
    const data = png.subarray(offset + 8, offset + 8 + length);
    if (type === "tEXt") {
      const zero = data.indexOf(0);
      if (zero > 0) out[data.toString("latin1", 0, zero)] = data.toString("latin1", zero + 1);
    } else if (type === "iTXt") {
      const zero = data.indexOf(0);
      if (zero > 0 && data[zero + 1] === 0) {
        const langEnd = data.indexOf(0, zero + 3);
        const transEnd = data.indexOf(0, langEnd + 1);
        out[data.toString("latin1", 0, zero)] = data.toString("utf8", transEnd + 1);
      }
    } else if (type === "IEND") {
      break;
    }
    offset += 12 + length;
  }
  return out;
}

export interface GenerationParameters {
  prompt: string;
  negativePrompt?: string;
  steps: number;
  sampler: string;
  guidanceScale: number;
  seed: number;
  width: number;
  height: number;
  model?: string;
  modelHash?: string;
  /** name -> scale */
  loras?: Record<string, number>;
  /** name -> A1111's AutoV3 short hash of the LoRA file (12 hex digits), as "Lora hashes". */
  loraHashes?: Record<string, string>;
  clipSkip?: number;
  version?: string;
}

/** A1111's infotext: prompt, "Negative prompt: ...", then "Key: value, ..." on the last line. */
export function formatInfotext(p: GenerationParameters): string {
  const quote = (v: string): string => (/[,:\n"]/.test(v) ? JSON.stringify(v) : v);
  const fields: [string, string | number | undefined][] = [
    ["Steps", p.steps],
    ["Sampler", p.sampler],
    ["CFG scale", p.guidanceScale],
    ["Seed", p.seed],
    ["Size", `${p.width}x${p.height}`],
    ["Model hash", p.modelHash],
    ["Model", p.model],
    ["Clip skip", p.clipSkip],
    [
      "Lora scales",
      p.loras
        ? Object.entries(p.loras)
            .map(([n, s]) => `${n}: ${s}`)
            .join(", ")
        : undefined,
    ],
    [
      "Lora hashes",
      p.loraHashes && Object.keys(p.loraHashes).length
        ? Object.entries(p.loraHashes)
            .map(([n, h]) => `${n}: ${h}`)
            .join(", ")
        : undefined,
    ],
    ["Version", p.version],
  ];
  const last = fields
    .filter(([, v]) => v !== undefined && v !== "")
    .map(([k, v]) => `${k}: ${quote(String(v))}`)
    .join(", ");
  const loraTags = p.loras
    ? Object.entries(p.loras)
        .map(([n, s]) => ` <lora:${n}:${s}>`)
        .join("")
    : "";
  const lines = [p.prompt + loraTags];
  if (p.negativePrompt) lines.push(`Negative prompt: ${p.negativePrompt}`);
  lines.push(last);
  return lines.join("\n");
}
