import sharp from "sharp";
import { describe, expect, it } from "vitest";

import { makeGrid, wrapLabel } from "../src/pipeline/grid.js";
import { addPngText, formatInfotext, readPngText } from "../src/io/png.js";

async function solid(width: number, height: number, r: number): Promise<Buffer> {
  return sharp({ create: { width, height, channels: 3, background: { r, g: 10, b: 20 } } })
    .png()
    .toBuffer();
}

describe("PNG parameters", () => {
  it("writes A1111 infotext into a tEXt chunk that reads back intact and keeps the image valid", async () => {
    const png = await solid(16, 8, 200);
    const text = formatInfotext({
      prompt: "a photo of sks dog",
      negativePrompt: "blurry, low quality",
      steps: 25,
      sampler: "DPM++ 2M Karras",
      guidanceScale: 7.5,
      seed: 1234,
      width: 16,
      height: 8,
      loras: { mine: 0.8 },
    });
    expect(text).toBe(
      "a photo of sks dog <lora:mine:0.8>\nNegative prompt: blurry, low quality\n" +
        'Steps: 25, Sampler: DPM++ 2M Karras, CFG scale: 7.5, Seed: 1234, Size: 16x8, Lora scales: "mine: 0.8"',
    );
    const tagged = addPngText(png, { parameters: text });
    expect(readPngText(tagged)).toEqual({ parameters: text });
    const meta = await sharp(tagged).metadata();
    expect([meta.width, meta.height]).toEqual([16, 8]);
    const { data } = await sharp(tagged).raw().toBuffer({ resolveWithObject: true });
    expect(data[0]).toBe(200);
  });

  it("writes Model hash and A1111's quoted Lora hashes", () => {
    const text = formatInfotext({
      prompt: "p",
      steps: 2,
      sampler: "Euler a",
      guidanceScale: 7,
      seed: 1,
      width: 8,
      height: 8,
      model: "tiny-sd",
      modelHash: "0123456789",
      loras: { a: 1, b: 0.5 },
      loraHashes: { a: "aaaaaaaaaaaa", b: "bbbbbbbbbbbb" },
    });
    expect(text.split("\n").at(-1)).toBe(
      "Steps: 2, Sampler: Euler a, CFG scale: 7, Seed: 1, Size: 8x8, Model hash: 0123456789, Model: tiny-sd, " +
        'Lora scales: "a: 1, b: 0.5", Lora hashes: "a: aaaaaaaaaaaa, b: bbbbbbbbbbbb"',
    );
  });

  it("uses iTXt (UTF-8) for text outside Latin-1", async () => {
    const tagged = addPngText(await solid(4, 4, 1), { parameters: "東京 タワー 🐶" });
    expect(tagged.includes(Buffer.from("iTXt"))).toBe(true);
    expect(readPngText(tagged).parameters).toBe("東京 タワー 🐶");
    // Still a valid image with its pixels.
    const meta = await sharp(tagged).metadata();
    expect([meta.format, meta.width, meta.height]).toEqual(["png", 4, 4]);
    const { data } = await sharp(tagged).raw().toBuffer({ resolveWithObject: true });
    expect([...data.subarray(0, 3)]).toEqual([1, 10, 20]);
  });

  it("refuses what is not a PNG", () => {
    expect(() => addPngText(Buffer.from("GIF89a........................"), { a: "b" })).toThrow(/not a PNG/);
  });
});

describe("grids", () => {
  it("lays images out in rows and columns with labels", async () => {
    const images = await Promise.all([10, 60, 110, 160, 210].map((r) => solid(20, 10, r)));
    const grid = await makeGrid(images, {
      columns: 2,
      gap: 2,
      columnLabels: ["a", "b"],
      rowLabels: ["x", "y", "z"],
      labelHeight: 20,
      labelWidth: 30,
    });
    const meta = await sharp(grid).metadata();
    expect(meta.width).toBe(30 + 2 * 20 + 3 * 2);
    expect(meta.height).toBe(20 + 3 * 10 + 4 * 2);
    // Cell (row 1, column 1) holds the fourth image.
    const { data, info } = await sharp(grid).raw().toBuffer({ resolveWithObject: true });
    const x = 30 + 2 + 20 + 2 + 5;
    const y = 20 + 2 + 10 + 2 + 5;
    expect(data[(y * info.width + x) * info.channels]).toBe(160);
  });
});

describe("grid labels", () => {
  it("wrap at word boundaries and keep every character", () => {
    const prompt = "a photo of sks person giving a thumbs up on a beach at sunset";
    const lines = wrapLabel(prompt, 100);
    expect(lines.length).toBeGreaterThan(1);
    expect(lines.every((l) => l.length <= Math.floor(100 / 7))).toBe(true);
    expect(lines.join(" ")).toBe(prompt);
    expect(wrapLabel("abcdefghij", 28)).toEqual(["abcd", "efgh", "ij"]);
  });

  it("grow the row instead of cutting a long prompt", async () => {
    const images = await Promise.all([10, 60].map((r) => solid(20, 10, r)));
    const prompt = "a photo of sks person giving a thumbs up on a beach";
    const labelWidth = 80;
    const grid = await makeGrid(images, { columns: 2, gap: 2, rowLabels: [prompt], labelWidth });
    const lines = wrapLabel(prompt, labelWidth - 8).length;
    expect(lines).toBeGreaterThan(1);
    const meta = await sharp(grid).metadata();
    expect(meta.height).toBe(lines * 16 + 8 + 2 * 2);
    // The SVG text holds the whole prompt: no ellipsis anywhere.
    expect(wrapLabel(prompt, labelWidth - 8).join(" ")).toBe(prompt);
  });
});
