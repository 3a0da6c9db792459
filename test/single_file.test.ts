// Single-file checkpoints on the tiny fixture pipeline: writing one (both text encoder layouts),
// reading it back bit for bit, generating from it exactly as from the folder, and the refusals.
import { existsSync } from "node:fs";
import { readFile, readdir, rm, utimes, writeFile } from "node:fs/promises";
import { join } from "node:path";

import sharp from "sharp";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { inspectSafetensors, readSafetensors, writeSafetensors } from "../src/io/safetensors.js";
import {
  convertDiffusersToSingleFile,
  convertSingleFileToDiffusers,
  inspectSingleFile,
  loadPipeline,
  pruneCache,
  resolveModel,
} from "../src/index.js";
import type { Tensor } from "../src/native/index.js";
import { fixture, tempDir } from "./helpers/fixtures.js";

const SD = fixture("tiny-sd");
const COMPONENTS = [
  ["unet", "diffusion_pytorch_model.safetensors"],
  ["vae", "diffusion_pytorch_model.safetensors"],
  ["text_encoder", "model.safetensors"],
] as const;

let tmp: { path: string; cleanup(): Promise<void> };
let single: string;
let textConfig: { hidden_size: number; num_hidden_layers: number; hidden_act: string };
beforeAll(async () => {
  tmp = await tempDir("sdtune-single-");
  process.env.SDTUNE_CACHE_DIR = join(tmp.path, "cache");
  single = join(tmp.path, "tiny.safetensors");
  await convertDiffusersToSingleFile(SD, single);
  textConfig = JSON.parse(await readFile(join(SD, "text_encoder", "config.json"), "utf8")) as typeof textConfig;
});
afterAll(async () => {
  delete process.env.SDTUNE_CACHE_DIR;
  await tmp.cleanup();
});

/** Every tensor of two files has the same name, dtype, shape and bytes. */
async function expectSameTensors(a: string, b: string): Promise<void> {
  const [x, y] = [await readSafetensors(a), await readSafetensors(b)];
  expect([...y.tensors.keys()].sort()).toEqual([...x.tensors.keys()].sort());
  const bytes = (t: Tensor): Buffer => {
    const v = t.toTypedArray();
    return Buffer.from(v.buffer, v.byteOffset, v.byteLength);
  };
  const differing: string[] = [];
  for (const [name, t] of x.tensors) {
    const u = y.tensors.get(name)!;
    if (u.dtype !== t.dtype || u.shape.join() !== t.shape.join() || !bytes(u).equals(bytes(t))) differing.push(name);
  }
  expect(differing).toEqual([]);
}

describe("writing a single file", () => {
  it("holds the three components under their LDM prefixes, the text encoder as open_clip for a gelu encoder", async () => {
    const header = await inspectSafetensors(single);
    const names = header.tensors.map((t) => t.name);
    expect(textConfig.hidden_act).toBe("gelu");
    for (const prefix of ["model.diffusion_model.", "first_stage_model.", "cond_stage_model.model."]) {
      expect(names.some((n) => n.startsWith(prefix))).toBe(true);
    }
    expect(names.every((n) => /^(model\.diffusion_model|first_stage_model|cond_stage_model\.model)\./.test(n))).toBe(
      true,
    );
    const fused = header.tensors.find(
      (t) => t.name === "cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight",
    );
    expect(fused?.shape).toEqual([3 * textConfig.hidden_size, textConfig.hidden_size]);
    const layers = new Set(names.map((n) => /resblocks\.(\d+)\./.exec(n)?.[1]).filter(Boolean));
    expect(layers.size).toBe(textConfig.num_hidden_layers);
    const q = header.tensors.find((t) => t.name === "first_stage_model.encoder.mid.attn_1.q.weight");
    expect(q?.shape.length).toBe(4);
    const info = await inspectSingleFile(single);
    expect({ family: info.family, textLayout: info.textLayout, hasEma: info.hasEma }).toEqual({
      family: "sd2",
      textLayout: "openclip",
      hasEma: false,
    });
  });

  it("writes the CLIP (SD 1.x) text layout on request, and reads it back", async () => {
    const clip = join(tmp.path, "clip.safetensors");
    await convertDiffusersToSingleFile(SD, clip, { textEncoderLayout: "clip" });
    const names = (await inspectSafetensors(clip)).tensors.map((t) => t.name);
    expect(names).toContain("cond_stage_model.transformer.text_model.encoder.layers.0.self_attn.q_proj.weight");
    expect((await inspectSingleFile(clip)).family).toBe("sd1");
    const out = join(tmp.path, "from-clip");
    await convertSingleFileToDiffusers(clip, out);
    await expectSameTensors(
      join(SD, "text_encoder", "model.safetensors"),
      join(out, "text_encoder", "model.safetensors"),
    );
  });

  it("casts to float16 on request", async () => {
    const half = join(tmp.path, "half.safetensors");
    await convertDiffusersToSingleFile(SD, half, { dtype: "float16" });
    const dtypes = new Set((await inspectSafetensors(half)).tensors.map((t) => t.dtype));
    expect([...dtypes]).toEqual(["F16"]);
  });
});

describe("reading a single file", () => {
  it("converts back to the same folder: every tensor bit for bit, every config file byte for byte", async () => {
    const out = join(tmp.path, "roundtrip");
    await convertSingleFileToDiffusers(single, out);
    for (const [component, file] of COMPONENTS) {
      await expectSameTensors(join(SD, component, file), join(out, component, file));
    }
    for (const rel of ["model_index.json", "unet/config.json", "vae/config.json", "text_encoder/config.json"]) {
      expect(await readFile(join(out, rel), "utf8")).toBe(await readFile(join(SD, rel), "utf8"));
    }
    for (const entry of await readdir(join(SD, "tokenizer"))) {
      expect(await readFile(join(out, "tokenizer", entry), "utf8")).toBe(
        await readFile(join(SD, "tokenizer", entry), "utf8"),
      );
    }
    expect(await readFile(join(out, "scheduler", "scheduler_config.json"), "utf8")).toBe(
      await readFile(join(SD, "scheduler", "scheduler_config.json"), "utf8"),
    );
  });

  it("generates the same pixels as the folder with the same seed", async () => {
    const cfg = JSON.parse(await readFile(fixture("golden", "pipeline_cfg.json"), "utf8")) as {
      prompt: string;
      num_inference_steps: number;
      height: number;
      width: number;
    };
    const request = {
      prompt: cfg.prompt,
      width: cfg.width,
      height: cfg.height,
      steps: cfg.num_inference_steps,
      seed: 7,
    };
    const fromFolder = await loadPipeline(SD);
    const fromFile = await loadPipeline(single);
    try {
      const a = await fromFolder.generate(request);
      const b = await fromFile.generate(request);
      // The PNGs differ only in the model name of their "parameters" chunk: compare the pixels.
      const pixels = (png: Buffer): Promise<Buffer> => sharp(png).raw().toBuffer();
      expect((await pixels(b.images[0]!.png!)).equals(await pixels(a.images[0]!.png!))).toBe(true);
      expect(b.images[0]!.parameters.replace(/Model: [^,]*/, "")).toBe(
        a.images[0]!.parameters.replace(/Model: [^,]*/, ""),
      );
      expect(fromFile.name).toBe("tiny.safetensors");
    } finally {
      fromFolder.dispose();
      fromFile.dispose();
    }
  });

  it("converts once into the sdtune cache and reuses the folder", async () => {
    const first = await resolveModel(single);
    expect(first.startsWith(join(tmp.path, "cache", "single-file"))).toBe(true);
    const again = await resolveModel(single);
    expect(again).toBe(first);
  });

  it("infers the architecture from keys and shapes when the file carries no configs", async () => {
    const bare = join(tmp.path, "bare.safetensors");
    const { tensors } = await readSafetensors(single);
    await writeSafetensors(bare, tensors, { format: "pt" });
    // The fixture's 32-wide text encoder has no standard head count: without configs it is refused...
    await expect(convertSingleFileToDiffusers(bare, join(tmp.path, "bare-out"))).rejects.toThrow(
      /not a multiple of 64.*pass `config`/,
    );
    // ...and with the folder's configs (diffusers' from_single_file(config=...)) it reads.
    const out = join(tmp.path, "bare-config");
    await convertSingleFileToDiffusers(bare, out, { config: SD });
    for (const [component, file] of COMPONENTS) {
      await expectSameTensors(join(SD, component, file), join(out, component, file));
    }
  });

  it("reads the prediction type from the .yaml beside the file, and an explicit option over it", async () => {
    const file = join(tmp.path, "v.safetensors");
    await convertDiffusersToSingleFile(SD, file);
    await writeFile(join(tmp.path, "v.yaml"), 'model:\n  params:\n    parameterization: "v"\n');
    const scheduler = async (out: string): Promise<unknown> =>
      (
        JSON.parse(await readFile(join(out, "scheduler", "scheduler_config.json"), "utf8")) as {
          prediction_type: unknown;
        }
      ).prediction_type;
    await convertSingleFileToDiffusers(file, join(tmp.path, "v-out"));
    expect(await scheduler(join(tmp.path, "v-out"))).toBe("v_prediction");
    await convertSingleFileToDiffusers(file, join(tmp.path, "eps-out"), { predictionType: "epsilon" });
    expect(await scheduler(join(tmp.path, "eps-out"))).toBe("epsilon");
  });
});

describe("refusals", () => {
  it("refuses pickled checkpoints, saying how to convert them", async () => {
    const ckpt = join(tmp.path, "model.ckpt");
    await writeFile(ckpt, "not read");
    await expect(loadPipeline(ckpt)).rejects.toThrow(
      /model\.ckpt: a pickled checkpoint.*runs arbitrary code.*save_file/,
    );
  });

  it("names other families and what is supported", async () => {
    const { tensors } = await readSafetensors(single);
    const convIn = tensors.get("model.diffusion_model.input_blocks.0.0.weight")!;
    const cases: [string, [string, typeof convIn][], RegExp][] = [
      [
        "sdxl",
        [["conditioner.embedders.0.transformer.x", convIn], ...tensors],
        /SDXL checkpoint \(found conditioner\.embedders/,
      ],
      ["flux", [["double_blocks.0.img_attn.qkv.weight", convIn]], /Flux checkpoint/],
      ["sd3", [["model.diffusion_model.joint_blocks.0.x", convIn]], /Stable Diffusion 3 checkpoint/],
    ];
    for (const [name, entries, pattern] of cases) {
      const path = join(tmp.path, `${name}.safetensors`);
      await writeSafetensors(path, entries);
      await expect(inspectSingleFile(path)).rejects.toThrow(pattern);
      await expect(inspectSingleFile(path)).rejects.toThrow(/supports Stable Diffusion 1\.x and 2\.x/);
    }
  });

  it("names an inpainting model by its input channels", async () => {
    const { tensors } = await readSafetensors(single);
    const convIn = tensors.get("model.diffusion_model.input_blocks.0.0.weight")!;
    const [out, , kh, kw] = convIn.shape as [number, number, number, number];
    const { tensorFrom } = await import("../src/tensor.js");
    const nine = tensorFrom(new Float32Array(out * 9 * kh * kw), [out, 9, kh, kw]);
    const path = join(tmp.path, "inpaint.safetensors");
    await writeSafetensors(
      path,
      [...tensors].map(([k, t]) => [k, k.endsWith("input_blocks.0.0.weight") ? nine : t] as [string, Tensor]),
    );
    await expect(inspectSingleFile(path)).rejects.toThrow(/inpainting model \(UNet in_channels 9\)/);
  });

  it("names the file and the first missing key of a partial file, and the file of a truncated one", async () => {
    const { tensors, metadata } = await readSafetensors(single);
    const missing = "model.diffusion_model.out.2.weight";
    const partial = join(tmp.path, "partial.safetensors");
    await writeSafetensors(
      partial,
      [...tensors].filter(([k]) => k !== missing),
      metadata,
    );
    await expect(convertSingleFileToDiffusers(partial, join(tmp.path, "p-out"))).rejects.toThrow(
      `${partial}: missing tensor "${missing}"`,
    );
    const bytes = await readFile(single);
    const truncated = join(tmp.path, "truncated.safetensors");
    await writeFile(truncated, bytes.subarray(0, bytes.length - 100));
    await expect(loadPipeline(truncated)).rejects.toThrow(truncated);
  });

  it("names the user's file and the LDM key when a tensor the architecture does not show is missing", async () => {
    const { tensors, metadata } = await readSafetensors(single);
    const keys = [...tensors.keys()].sort();
    // One resnet weight of the UNet, and a fused open_clip q/k/v: neither changes the inferred architecture.
    const unetKey = keys.find((k) => /^model\.diffusion_model\.input_blocks\.\d+\.0\.in_layers\.0\.weight$/.test(k))!;
    const textKey = keys.find((k) => k.endsWith(".attn.in_proj_weight"))!;
    for (const key of [unetKey, textKey]) {
      const partial = join(tmp.path, `without-${key}.safetensors`);
      await writeSafetensors(
        partial,
        [...tensors].filter(([k]) => k !== key),
        metadata,
      );
      const error = await loadPipeline(partial).then(
        () => undefined,
        (e: unknown) => e as Error,
      );
      expect(error?.message).toContain(
        `${partial}: not a complete Stable Diffusion checkpoint: missing tensor "${key}"`,
      );
      expect(error?.message).not.toContain(join(tmp.path, "cache"));
    }
  });

  it("drops the conversion of an older version of a file, and cache prune those whose file is gone", async () => {
    const file = join(tmp.path, "versions.safetensors");
    await writeFile(file, await readFile(single));
    const first = await resolveModel(file);
    await writeFile(file, Buffer.concat([await readFile(single)]));
    await utimes(file, new Date(), new Date(Date.now() + 5000));
    const second = await resolveModel(file);
    expect(second).not.toBe(first);
    expect(existsSync(first)).toBe(false);
    expect(existsSync(second)).toBe(true);
    await rm(file);
    const pruned = await pruneCache(join(tmp.path, "cache"));
    expect(pruned.removed).toContain(second);
    expect(existsSync(second)).toBe(false);
  });
});
