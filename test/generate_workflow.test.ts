// `sdtune generate` as A1111 / kohya users drive it: sampler names in their spellings, a
// prompts file with kohya's per-prompt flags, Lora hashes and Model hash in the PNG
// parameters, and --device defaulting to auto.
import { createHash } from "node:crypto";
import { readFile, writeFile } from "node:fs/promises";
import { basename, join } from "node:path";

import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { main } from "../src/cli/main.js";
import { readPngText } from "../src/io/png.js";
import { resolveDevice, runtimeInfo } from "../src/runtime.js";
import { captureCli } from "./helpers/capture.js";
import { fixture, tempDir } from "./helpers/fixtures.js";

const SD = fixture("tiny-sd");
const KOHYA_LORA = fixture("lora", "kohya", "lora.safetensors");
let dir: { path: string; cleanup(): Promise<void> };
beforeAll(async () => {
  dir = await tempDir("sdtune-generate-workflow-");
});
afterAll(async () => dir.cleanup());

const cli = (...argv: string[]) => captureCli(() => main(argv));
const small = ["--model", SD, "--width", "24", "--height", "16", "--steps", "2"];
const lastLine = async (file: string): Promise<string> =>
  readPngText(await readFile(file))
    .parameters!.split("\n")
    .at(-1)!;

/** A1111's AutoV3: sha256 of the bytes after the 8-byte length and the JSON header. */
async function autoV3(path: string): Promise<string> {
  const bytes = await readFile(path);
  const headerLength = Number(bytes.readBigUInt64LE(0));
  return createHash("sha256")
    .update(bytes.subarray(8 + headerLength))
    .digest("hex");
}

describe("generate as A1111 / kohya users drive it", () => {
  it('takes "DPM++ 2M Karras" and writes Model hash and Lora hashes', async () => {
    const out = join(dir.path, "a1111");
    const r = await cli(
      "generate",
      ...small,
      "--sampler",
      "DPM++ 2M Karras",
      "--seed",
      "3",
      "--prompt",
      "a robot",
      "--lora",
      `${KOHYA_LORA}:0.5`,
      "--out",
      out,
    );
    expect(r.code, r.err).toBe(0);
    const unet = await readFile(join(SD, "unet", "diffusion_pytorch_model.safetensors"));
    const modelHash = createHash("sha256").update(unet).digest("hex").slice(0, 10);
    const loraHash = (await autoV3(KOHYA_LORA)).slice(0, 12);
    const line = await lastLine(join(out, "00000-3.png"));
    expect(line).toContain("Sampler: DPM++ 2M Karras,");
    expect(line).toContain(`Model hash: ${modelHash}, Model: ${basename(SD)}`);
    expect(line).toContain(`Lora hashes: "lora: ${loraHash}"`);
  });

  it("takes ComfyUI's \"euler\" + --schedule-type karras and kohya's euler_a", async () => {
    const out = join(dir.path, "comfy");
    let r = await cli(
      "generate",
      ...small,
      "--sampler",
      "euler",
      "--schedule-type",
      "karras",
      "--seed",
      "1",
      "--prompt",
      "x",
      "--out",
      out,
    );
    expect(r.code, r.err).toBe(0);
    expect(await lastLine(join(out, "00000-1.png"))).toContain("Sampler: Euler Karras,");
    r = await cli("generate", ...small, "--sampler", "euler_a", "--seed", "2", "--prompt", "x", "--out", out);
    expect(r.code, r.err).toBe(0);
    expect(await lastLine(join(out, "00001-2.png"))).toContain("Sampler: Euler a,");
    r = await cli("generate", ...small, "--sampler", "DPM++ 2M SDE", "--prompt", "x", "--out", out);
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/unknown sampler "DPM\+\+ 2M SDE"/);
  });

  it("reads kohya's per-prompt flags from a prompts file instead of making them prompt text", async () => {
    const prompts = join(dir.path, "prompts.txt");
    await writeFile(prompts, "a red robot --n blurry --w 32 --h 24 --s 3 --d 11 --l 5\n# skipped\na blue car --d 20\n");
    const out = join(dir.path, "kohya");
    const r = await cli("generate", ...small, "--sampler", "ddim", "--prompts-file", prompts, "--out", out);
    expect(r.code, r.err).toBe(0);
    const first = readPngText(await readFile(join(out, "00000-11.png"))).parameters!.split("\n");
    expect(first[0]).toBe("a red robot");
    expect(first[1]).toBe("Negative prompt: blurry");
    expect(first[2]).toMatch(/^Steps: 3, Sampler: DDIM, CFG scale: 5, Seed: 11, Size: 32x24,/);
    const second = readPngText(await readFile(join(out, "00001-20.png"))).parameters!.split("\n");
    expect(second[0]).toBe("a blue car");
    expect(second.at(-1)).toMatch(/^Steps: 2, Sampler: DDIM, CFG scale: 7.5, Seed: 20, Size: 24x16,/);
  });

  it('resolves device "auto" as training does', () => {
    expect(resolveDevice("auto")).toBe(runtimeInfo().cuda.available ? "cuda:0" : "cpu");
    expect(resolveDevice("cpu")).toBe("cpu");
  });
});
