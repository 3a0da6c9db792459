// `sdtune convert` on the tiny fixture pipeline: folder -> single file -> folder, EMA weights,
// dtypes, and usage errors.
import { readFile } from "node:fs/promises";
import { join } from "node:path";

import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { main } from "../src/cli/main.js";
import { inspectSafetensors, readSafetensors, writeSafetensors } from "../src/io/safetensors.js";
import type { Tensor } from "../src/native/index.js";
import { tensorFrom } from "../src/tensor.js";
import { captureCli } from "./helpers/capture.js";
import { fixture, tempDir } from "./helpers/fixtures.js";

const SD = fixture("tiny-sd");
const cli = (...argv: string[]) => captureCli(() => main(argv));

let tmp: { path: string; cleanup(): Promise<void> };
beforeAll(async () => {
  tmp = await tempDir("sdtune-convert-");
});
afterAll(async () => {
  await tmp.cleanup();
});

const bytes = (t: Tensor): Buffer => {
  const v = t.toTypedArray();
  return Buffer.from(v.buffer, v.byteOffset, v.byteLength);
};

describe("sdtune convert", () => {
  it("converts a folder to a single file and back, bit for bit", async () => {
    const file = join(tmp.path, "tiny.safetensors");
    expect((await cli("convert", SD, "--to", "single-file", file)).code).toBe(0);
    const out = join(tmp.path, "back");
    const r = await cli("convert", file, "--to", "diffusers", out);
    expect(r.code).toBe(0);
    expect(r.out).toContain("wrote unet");
    for (const [component, name] of [
      ["unet", "diffusion_pytorch_model.safetensors"],
      ["vae", "diffusion_pytorch_model.safetensors"],
      ["text_encoder", "model.safetensors"],
    ] as const) {
      const a = (await readSafetensors(join(SD, component, name))).tensors;
      const b = (await readSafetensors(join(out, component, name))).tensors;
      expect([...b.keys()].sort()).toEqual([...a.keys()].sort());
      expect([...a].filter(([k, t]) => !bytes(t).equals(bytes(b.get(k)!))).map(([k]) => k)).toEqual([]);
    }
    expect(await readFile(join(out, "unet", "config.json"), "utf8")).toBe(
      await readFile(join(SD, "unet", "config.json"), "utf8"),
    );
  });

  it("uses EMA weights with --ema, keeps or drops them when re-saving, and casts with --dtype", async () => {
    const file = join(tmp.path, "plain.safetensors");
    await cli("convert", SD, "--to", "single-file", file);
    const { tensors, metadata } = await readSafetensors(file);
    // EMA copies that differ from the weights: every float32 value plus one.
    const ema: [string, Tensor][] = [];
    for (const [name, t] of tensors) {
      if (!name.startsWith("model.diffusion_model.")) continue;
      const values = Float32Array.from(t.toTypedArray() as Float32Array, (v) => v + 1);
      ema.push([`model_ema.${name.split(".").slice(1).join("")}`, tensorFrom(values, t.shape, "float32")]);
    }
    const withEma = join(tmp.path, "ema.safetensors");
    await writeSafetensors(withEma, [...tensors, ...ema], metadata);

    const out = join(tmp.path, "ema-out");
    expect((await cli("convert", withEma, "--to", "diffusers", out, "--ema")).code).toBe(0);
    const unet = (await readSafetensors(join(out, "unet", "diffusion_pytorch_model.safetensors"))).tensors;
    const convIn = unet.get("conv_in.weight")!.toTypedArray() as Float32Array;
    const emaConvIn = new Map(ema).get("model_ema.diffusion_modelinput_blocks00weight")!.toTypedArray();
    expect(Buffer.from(convIn.buffer, convIn.byteOffset, convIn.byteLength)).toEqual(
      Buffer.from(emaConvIn.buffer, emaConvIn.byteOffset, emaConvIn.byteLength),
    );

    const kept = join(tmp.path, "kept.safetensors");
    const dropped = join(tmp.path, "dropped.safetensors");
    expect((await cli("convert", withEma, "--to", "single-file", kept, "--dtype", "bf16")).code).toBe(0);
    expect((await cli("convert", withEma, "--to", "single-file", dropped, "--no-ema")).code).toBe(0);
    const keptHeader = await inspectSafetensors(kept);
    expect(keptHeader.tensors.filter((t) => t.name.startsWith("model_ema.")).length).toBe(ema.length);
    expect(new Set(keptHeader.tensors.map((t) => t.dtype))).toEqual(new Set(["BF16"]));
    const droppedNames = (await inspectSafetensors(dropped)).tensors.map((t) => t.name);
    expect(droppedNames.some((n) => n.startsWith("model_ema."))).toBe(false);
    expect(droppedNames.length).toBe(tensors.size);
  });

  it("refuses to overwrite without --force, and diffusers -> diffusers", async () => {
    const file = join(tmp.path, "tiny.safetensors");
    const again = await cli("convert", SD, "--to", "single-file", file);
    expect(again.code).toBe(2);
    expect(again.err).toContain("--force");
    const folder = await cli("convert", SD, "--to", "diffusers", join(tmp.path, "x"));
    expect(folder.code).toBe(2);
    expect(folder.err).toContain("diffusers already");
    const ckpt = await cli("convert", join(tmp.path, "model.ckpt"), "--to", "diffusers", join(tmp.path, "y"));
    expect(ckpt.code).not.toBe(0);
    expect(ckpt.err).toContain("pickled checkpoint");
  });
});
