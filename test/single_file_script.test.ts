// A single file written by diffusers' scripts/convert_diffusers_to_original_stable_diffusion.py
// (test/fixtures-single, see its README): sdtune reads the architecture off it, loads every
// component, and writes back the same keys, shapes and bytes.
import { readFile } from "node:fs/promises";
import { join } from "node:path";

import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { readSafetensors } from "../src/io/safetensors.js";
import { convertDiffusersToSingleFile, convertSingleFileToDiffusers, inspectSingleFile } from "../src/index.js";
import type { Tensor } from "../src/native/index.js";
import { TextEncoder } from "../src/models/text_encoder.js";
import { UNet } from "../src/models/unet.js";
import { VAE } from "../src/models/vae.js";
import { inspectSafetensors } from "../src/io/safetensors.js";
import { fixture, repoRoot, tempDir } from "./helpers/fixtures.js";

const DIR = join(repoRoot, "test", "fixtures-single");
const FILE = join(DIR, "sd1-script.safetensors");

type Configs = Record<"unet" | "vae" | "text_encoder", Record<string, unknown>>;
let source: Configs;
let tmp: { path: string; cleanup(): Promise<void> };
let out: string;
beforeAll(async () => {
  source = JSON.parse(await readFile(join(DIR, "source_configs.json"), "utf8")) as Configs;
  tmp = await tempDir("sdtune-single-script-");
  out = join(tmp.path, "diffusers");
  await convertSingleFileToDiffusers(FILE, out);
});
afterAll(async () => tmp.cleanup());

const bytes = (t: Tensor): Buffer => {
  const v = t.toTypedArray();
  return Buffer.from(v.buffer, v.byteOffset, v.byteLength);
};

describe("a single file written by diffusers' converter", () => {
  it("is recognised as SD 1.x with a CLIP text encoder", async () => {
    const info = await inspectSingleFile(FILE);
    expect({ family: info.family, textLayout: info.textLayout }).toEqual({ family: "sd1", textLayout: "clip" });
  });

  it("gives the architecture it was made from", async () => {
    const read = async (c: keyof Configs): Promise<Record<string, unknown>> =>
      JSON.parse(await readFile(join(out, c, "config.json"), "utf8")) as Record<string, unknown>;
    const fields: Record<keyof Configs, string[]> = {
      unet: [
        "in_channels",
        "out_channels",
        "layers_per_block",
        "block_out_channels",
        "down_block_types",
        "up_block_types",
        "cross_attention_dim",
        "attention_head_dim",
      ],
      vae: ["in_channels", "out_channels", "latent_channels", "layers_per_block", "block_out_channels"],
      text_encoder: [
        "vocab_size",
        "hidden_size",
        "intermediate_size",
        "num_hidden_layers",
        "num_attention_heads",
        "hidden_act",
      ],
    };
    for (const [component, names] of Object.entries(fields) as [keyof Configs, string[]][]) {
      const got = await read(component);
      for (const name of names)
        expect({ component, name, value: got[name] }).toEqual({ component, name, value: source[component][name] });
    }
  });

  it("loads every component", async () => {
    const models = [
      await UNet.load(join(out, "unet")),
      await VAE.load(join(out, "vae")),
      await TextEncoder.load(join(out, "text_encoder")),
    ];
    for (const m of models) m.dispose();
    expect(models.length).toBe(3);
  });

  it("is written back with the same keys, shapes, dtypes and bytes", async () => {
    const back = join(tmp.path, "back.safetensors");
    await convertDiffusersToSingleFile(out, back);
    const a = (await readSafetensors(FILE)).tensors;
    const b = (await readSafetensors(back)).tensors;
    expect([...b.keys()].sort()).toEqual([...a.keys()].sort());
    const differing = [...a].filter(([k, t]) => {
      const u = b.get(k)!;
      return u.dtype !== t.dtype || u.shape.join() !== t.shape.join() || !bytes(u).equals(bytes(t));
    });
    expect(differing.map(([k]) => k)).toEqual([]);
  });

  it("names and shapes an SD 2.x (open_clip) text encoder as the converter's v2.0 function does", async () => {
    // sd2_text_keys.json: convert_text_enc_state_dict_v20 applied to the tiny-sd fixture's text encoder.
    const expected = JSON.parse(await readFile(join(DIR, "sd2_text_keys.json"), "utf8")) as Record<string, number[]>;
    const file = join(tmp.path, "tiny-sd.safetensors");
    await convertDiffusersToSingleFile(fixture("tiny-sd"), file, { textEncoderLayout: "openclip" });
    const written = Object.fromEntries(
      (await inspectSafetensors(file)).tensors
        .filter((t) => t.name.startsWith("cond_stage_model."))
        .map((t) => [t.name, t.shape]),
    );
    expect(written).toEqual(expected);
  });
});
