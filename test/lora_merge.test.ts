// Merging LoRAs into a full diffusers folder (mergeLoraIntoModel, `sdtune lora merge`):
// the written folder has the base's layout and keys, reloads, and reproduces the LoRA's
// reference outputs (golden/lora.safetensors).
import { existsSync } from "node:fs";
import { copyFile, link, mkdir, readdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";

import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from "vitest";

import { main } from "../src/cli/main.js";
import { parseLoraSpec } from "../src/cli/lora.js";
import { inspectSafetensors } from "../src/io/safetensors.js";
import { mergeLoraIntoModel } from "../src/lora/index.js";
import { TextEncoder } from "../src/models/text_encoder.js";
import { UNet } from "../src/models/unet.js";
import type { Tensor } from "../src/native/index.js";
import { expectClose, fixture, get, golden, loraFixture, type LoraFacts, tempDir, TOL } from "./helpers/fixtures.js";
import { captureCli } from "./helpers/capture.js";

const base = fixture("tiny-sd");
const KOHYA = fixture("lora", "kohya", "lora.safetensors");
const PEFT = fixture("lora", "peft", "pytorch_lora_weights.safetensors");

let dir: { path: string; cleanup(): Promise<void> };
let g: Map<string, Tensor>;
let UNET: LoraFacts;
let TE: LoraFacts;
beforeAll(async () => {
  dir = await tempDir("sdtune-lora-merge-");
  g = await golden("lora");
  ({ unet: UNET, textEncoder: TE } = await loraFixture());
});
afterAll(async () => dir.cleanup());
afterEach(() => vi.restoreAllMocks());

/** Every file under `root`, relative, sorted. */
async function files(root: string, prefix = ""): Promise<string[]> {
  const out: string[] = [];
  for (const entry of await readdir(join(root, prefix), { withFileTypes: true })) {
    const rel = prefix ? `${prefix}/${entry.name}` : entry.name;
    if (entry.isDirectory()) out.push(...(await files(root, rel)));
    else out.push(rel);
  }
  return out.sort();
}

/** The merged folder's UNet and text encoder outputs against the reference at `scale`. */
async function expectLoraOutputs(folder: string, scale: "1.0" | "0.5", tolerance = TOL.forward): Promise<void> {
  const unet = await UNet.load(join(folder, "unet"));
  const te = await TextEncoder.load(join(folder, "text_encoder"));
  try {
    const out = await unet.forward(get(g, "sample"), get(g, "timesteps"), get(g, "encoder_hidden_states"));
    await expectClose(out, get(g, `unet_out_lora_scale_${scale}`), tolerance, `merged unet ${scale}`);
    const hidden = (await te.forward(get(g, "te_input_ids"))).lastHiddenState;
    await expectClose(hidden, get(g, `te_last_hidden_lora_scale_${scale}`), tolerance, `merged te ${scale}`);
  } finally {
    unet.dispose();
    te.dispose();
  }
}

describe("mergeLoraIntoModel", () => {
  it("writes a complete diffusers folder with the base's keys and the fused weights", async () => {
    const out = join(dir.path, "merged");
    const events: number[] = [];
    const result = await mergeLoraIntoModel({
      base,
      loras: [{ path: KOHYA }],
      out,
      onProgress: (e) => events.push(e.step),
    });
    expect(result.layers).toEqual({ unet: UNET.modules, textEncoder: TE.modules });
    expect(result.weightFiles).toEqual([
      join(out, "text_encoder", "model.safetensors"),
      join(out, "unet", "diffusion_pytorch_model.safetensors"),
    ]);
    expect(events.at(-1)).toBe(6);
    expect(await files(out)).toEqual(await files(base));
    for (const same of [
      "model_index.json",
      "unet/config.json",
      "text_encoder/config.json",
      "scheduler/scheduler_config.json",
    ]) {
      expect(await readFile(join(out, same), "utf8"), same).toBe(await readFile(join(base, same), "utf8"));
    }
    for (const same of ["vae/diffusion_pytorch_model.safetensors", "tokenizer/vocab.json", "tokenizer/merges.txt"]) {
      expect((await readFile(join(out, same))).equals(await readFile(join(base, same))), same).toBe(true);
    }
    for (const weights of ["unet/diffusion_pytorch_model.safetensors", "text_encoder/model.safetensors"]) {
      const written = await inspectSafetensors(join(out, weights));
      const original = await inspectSafetensors(join(base, weights));
      expect(written.metadata).toEqual({ format: "pt" });
      const shape = (h: typeof written) => h.tensors.map((t) => [t.name, t.dtype, t.shape]).sort();
      expect(shape(written)).toEqual(shape(original));
    }
    expect((await readdir(dir.path)).filter((e) => e.startsWith("."))).toEqual([]);
    await expectLoraOutputs(out, "1.0");
  });

  it("merges several LoRAs at their scales (the sum)", async () => {
    const out = join(dir.path, "two");
    await mergeLoraIntoModel({
      base,
      loras: [
        { path: KOHYA, scale: 0.25 },
        { path: PEFT, scale: 0.25 },
      ],
      out,
    });
    await expectLoraOutputs(out, "0.5");
  });

  it("writes float16 weights on request and the variant it read", async () => {
    // A base whose UNet has only fp16-variant weights (the file's contents do not matter here).
    const variantBase = join(dir.path, "variant-base");
    for (const f of await files(base)) {
      const target = join(
        variantBase,
        f
          .replace("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.fp16.safetensors")
          .replace("model.safetensors", "model.fp16.safetensors"),
      );
      await mkdir(join(target, ".."), { recursive: true });
      await copyFile(join(base, f), target);
    }
    const out = join(dir.path, "half");
    await mergeLoraIntoModel({ base: variantBase, loras: [{ path: KOHYA }], out, dtype: "float16", variant: "fp16" });
    expect(await readdir(join(out, "unet"))).toEqual(["config.json", "diffusion_pytorch_model.fp16.safetensors"]);
    expect(await readdir(join(out, "text_encoder"))).toEqual(["config.json", "model.fp16.safetensors"]);
    const header = await inspectSafetensors(join(out, "unet", "diffusion_pytorch_model.fp16.safetensors"));
    expect(new Set(header.tensors.map((t) => t.dtype))).toEqual(new Set(["F16"]));
    const unet = await UNet.load(join(out, "unet"), { variant: "fp16" });
    try {
      const y = await unet.forward(get(g, "sample"), get(g, "timesteps"), get(g, "encoder_hidden_states"));
      await expectClose(y, get(g, "unet_out_lora_scale_1.0"), { atol: 1e-2, rtol: 1e-2 }, "fp16 merged");
    } finally {
      unet.dispose();
    }
  });

  it("refuses a non-empty output folder unless forced, and the base folder itself", async () => {
    const out = join(dir.path, "occupied");
    await mkdir(out, { recursive: true });
    await writeFile(join(out, "keep.txt"), "x");
    await expect(mergeLoraIntoModel({ base, loras: [{ path: KOHYA }], out })).rejects.toThrow(
      /not empty; choose another output or pass --force/,
    );
    expect(await readdir(out)).toEqual(["keep.txt"]);
    await mergeLoraIntoModel({ base, loras: [{ path: KOHYA, scale: 0.5 }], out, force: true });
    expect(existsSync(join(out, "keep.txt"))).toBe(false);
    await expectLoraOutputs(out, "0.5");
    await expect(mergeLoraIntoModel({ base, loras: [{ path: KOHYA }], out: join(base, "unet") })).rejects.toThrow(
      /must be outside the base model folder/,
    );
  });

  it("stops when cancelled and leaves nothing behind", async () => {
    const out = join(dir.path, "cancelled");
    const controller = new AbortController();
    const merging = mergeLoraIntoModel({
      base,
      loras: [{ path: KOHYA }],
      out,
      signal: controller.signal,
      onProgress: (e) => {
        if (e.step === 4) controller.abort(); // while writing the components
      },
    });
    await expect(merging).rejects.toMatchObject({ name: "AbortError" });
    expect(existsSync(out)).toBe(false);
    expect((await readdir(dir.path)).filter((e) => e.startsWith("."))).toEqual([]);
  });

  it("leaves nothing behind when the LoRA does not fit", async () => {
    // A base without a text encoder: the LoRA's text-encoder adapters have nowhere to go.
    const other = join(dir.path, "no-te-base");
    for (const f of (await files(base)).filter((f) => !f.startsWith("text_encoder/"))) {
      await mkdir(join(other, f, ".."), { recursive: true });
      await link(join(base, f), join(other, f)).catch(() => copyFile(join(base, f), join(other, f)));
    }
    const out = join(dir.path, "never");
    await expect(mergeLoraIntoModel({ base: other, loras: [{ path: KOHYA }], out })).rejects.toThrow(
      new RegExp(`${TE.modules} adapters for "text_encoder"`),
    );
    expect(existsSync(out)).toBe(false);
    expect((await readdir(dir.path)).filter((e) => e.startsWith("."))).toEqual([]);
  });
});

describe("sdtune lora merge", () => {
  const cli = (...argv: string[]) => captureCli(() => main(argv));

  it("parses FILE[:SCALE]", () => {
    expect(parseLoraSpec("a.safetensors:0.8")).toEqual({ path: "a.safetensors", scale: 0.8 });
    expect(parseLoraSpec("a.safetensors")).toEqual({ path: "a.safetensors" });
    expect(parseLoraSpec("C:\\loras\\a.safetensors")).toEqual({ path: "C:\\loras\\a.safetensors" });
    expect(parseLoraSpec("dir:x/a.safetensors:-1e-1")).toEqual({ path: "dir:x/a.safetensors", scale: -0.1 });
  });

  it("merges from the command line", async () => {
    const out = join(dir.path, "cli");
    const result = await cli(
      "lora",
      "merge",
      "--model",
      base,
      "--lora",
      `${KOHYA}:0.25`,
      "--lora",
      `${PEFT}:0.25`,
      "--out",
      out,
    );
    expect(result.err).toBe("");
    expect(result.code).toBe(0);
    expect(result.out).toMatch(
      new RegExp(`wrote .*cli \\(2 LoRAs merged: unet ${UNET.modules} layers, textEncoder ${TE.modules} layers\\)`),
    );
    await expectLoraOutputs(out, "0.5");
  });

  it("reports usage errors and failures", async () => {
    const missing = await cli("lora", "merge", "--model", base, "--lora", KOHYA);
    expect(missing.code).toBe(2);
    expect(missing.err).toMatch(/--out is required/);
    const badDtype = await cli("lora", "merge", "--model", base, "--lora", KOHYA, "--out", "x", "--dtype", "int8");
    expect(badDtype.code).toBe(2);
    const occupied = await cli("lora", "merge", "--model", base, "--lora", KOHYA, "--out", join(dir.path, "cli"));
    expect(occupied.code).toBe(1);
    expect(occupied.err).toMatch(/not empty/);
  });
});
