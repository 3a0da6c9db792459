// Kohya names <-> module paths (vocabulary, base model, LDM blocks), PEFT configs,
// kohya metadata formatting, and the errors bad LoRA files get.
import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { inspectSafetensors, readSafetensors, writeSafetensors } from "../src/io/safetensors.js";
import {
  baseModuleNamesFromModel,
  diffusersToLdm,
  kohyaResolver,
  kohyaTrainingMetadata,
  ldmToDiffusers,
  loadLoraFile,
  LoraFormatError,
  saveLora,
  SD_UNET_LAYOUT,
  SDXL_UNET_LAYOUT,
  toKohyaName,
  unetLayoutFromModuleNames,
  type BaseModuleNames,
} from "../src/lora/index.js";
import { pyFloat, pyJson } from "../src/lora/formats/kohya_metadata.js";
import { isKnownModulePath, underscored } from "../src/lora/formats/names.js";
import { UNet } from "../src/models/unet.js";
import type { Tensor } from "../src/native/index.js";
import { tensorFrom } from "../src/tensor.js";
import { fixture, fixtureJson, loraFixture, tempDir } from "./helpers/fixtures.js";

let dir: { path: string; cleanup(): Promise<void> };
let base: BaseModuleNames;
/** Linear / Conv2d modules of the tiny SD model: what a LoRA can target. */
const targets: Record<string, string[]> = {};
beforeAll(async () => {
  dir = await tempDir("sdtune-lora-names-");
  base = await baseModuleNamesFromModel(fixture("tiny-sd"));
  for (const [component, file] of [
    ["unet", fixture("tiny-sd", "unet", "diffusion_pytorch_model.safetensors")],
    ["text_encoder", fixture("tiny-sd", "text_encoder", "model.safetensors")],
  ] as const) {
    targets[component] = (await inspectSafetensors(file)).tensors
      .filter((t) => t.name.endsWith(".weight") && (t.shape.length === 2 || t.shape.length === 4))
      .map((t) => t.name.slice(0, -".weight".length))
      .filter((name) => !name.endsWith("_embedding")); // token / position embeddings are not Linear
  }
});
afterAll(async () => dir.cleanup());

const f32 = (shape: number[], fill = 0.5): Tensor =>
  tensorFrom(new Float32Array(shape.reduce((a, b) => a * b, 1)).fill(fill), shape);

/** Writes a small LoRA file with the given keys (shapes) and returns its path. */
async function loraFile(name: string, shapes: Record<string, number[]>, metadata: Record<string, string> = {}) {
  const path = join(dir.path, name);
  await writeSafetensors(
    path,
    Object.entries(shapes).map(([k, s]) => [k, f32(s)] as [string, Tensor]),
    metadata,
  );
  return path;
}

async function problemsOf(promise: Promise<unknown>): Promise<string[]> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(LoraFormatError);
  return (error as LoraFormatError).problems;
}

describe("kohya names", () => {
  it("the vocabulary reads back every Linear/Conv2d module of a real SD UNet and CLIP text encoder", () => {
    const resolver = kohyaResolver();
    let count = 0;
    for (const [component, names] of Object.entries(targets)) {
      for (const path of names) {
        const key = `${component}.${path}`;
        expect(isKnownModulePath(component as "unet", path), key).toBe(true);
        expect(resolver.resolve(toKohyaName(key)), key).toEqual({ key });
        count++;
      }
    }
    expect(count).toBeGreaterThan(50);
    expect(toKohyaName("unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_out.0")).toBe(
      "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_out_0",
    );
    expect(toKohyaName("text_encoder.text_model.encoder.layers.0.self_attn.q_proj")).toBe(
      "lora_te_text_model_encoder_layers_0_self_attn_q_proj",
    );
    expect(toKohyaName("text_encoder.text_model.encoder.layers.0.mlp.fc1", { numberedTextEncoders: true })).toBe(
      "lora_te1_text_model_encoder_layers_0_mlp_fc1",
    );
    expect(toKohyaName("text_encoder_2.text_model.encoder.layers.0.mlp.fc2")).toBe(
      "lora_te2_text_model_encoder_layers_0_mlp_fc2",
    );
  });

  it("names outside the vocabulary need the base model, which also settles them exactly", () => {
    expect(kohyaResolver().resolve("lora_unet_my_block_proj_x")).toMatchObject({
      error: expect.stringContaining("--base"),
    });
    expect(kohyaResolver({ unet: ["my_block.proj_x.weight"] }).resolve("lora_unet_my_block_proj_x")).toEqual({
      key: "unet.my_block.proj_x",
    });
    expect(kohyaResolver({ unet: ["a_b.c", "a.b_c"] }).resolve("lora_unet_a_b_c")).toMatchObject({
      error: expect.stringContaining("ambiguous"),
    });
    expect(kohyaResolver(base).resolve("lora_unet_down_blocks_7_resnets_0_conv1")).toMatchObject({
      error: expect.stringContaining("has no module"),
    });
    expect(kohyaResolver().resolve("lora_vae_decoder_conv_in")).toMatchObject({
      error: expect.stringContaining("prefix"),
    });
    expect(kohyaResolver().resolve("lora_te_model_transformer_resblocks_0_attn_out_proj")).toMatchObject({
      error: expect.stringContaining("OpenCLIP"),
    });
  });
});

describe("LDM / CompVis block names", () => {
  it("maps the SD 1.x/2.x blocks as the diffusers <-> LDM conversion script does", () => {
    const pairs: [string, string][] = [
      ["input_blocks_0_0", "conv_in"],
      ["input_blocks_1_1_proj_in", "down_blocks_0_attentions_0_proj_in"],
      ["input_blocks_2_0_in_layers_2", "down_blocks_0_resnets_1_conv1"],
      ["input_blocks_3_0_op", "down_blocks_0_downsamplers_0_conv"],
      ["input_blocks_4_0_skip_connection", "down_blocks_1_resnets_0_conv_shortcut"],
      ["input_blocks_10_0_emb_layers_1", "down_blocks_3_resnets_0_time_emb_proj"],
      ["middle_block_0_out_layers_3", "mid_block_resnets_0_conv2"],
      ["middle_block_1_transformer_blocks_0_attn1_to_q", "mid_block_attentions_0_transformer_blocks_0_attn1_to_q"],
      ["middle_block_2_in_layers_2", "mid_block_resnets_1_conv1"],
      ["output_blocks_2_0_in_layers_2", "up_blocks_0_resnets_2_conv1"],
      ["output_blocks_2_1_conv", "up_blocks_0_upsamplers_0_conv"],
      ["output_blocks_3_1_transformer_blocks_0_ff_net_2", "up_blocks_1_attentions_0_transformer_blocks_0_ff_net_2"],
      ["output_blocks_5_2_conv", "up_blocks_1_upsamplers_0_conv"],
      ["output_blocks_11_1_proj_out", "up_blocks_3_attentions_2_proj_out"],
      ["time_embed_0", "time_embedding_linear_1"],
      ["out_2", "conv_out"],
    ];
    for (const [ldm, diffusers] of pairs) {
      expect(ldmToDiffusers(ldm, SD_UNET_LAYOUT), ldm).toBe(diffusers);
      expect(diffusersToLdm(diffusers, SD_UNET_LAYOUT), diffusers).toBe(ldm);
    }
    expect(ldmToDiffusers("input_blocks_12_0_in_layers_2", SD_UNET_LAYOUT)).toBeUndefined();
    expect(ldmToDiffusers("output_blocks_0_1_proj_in", SD_UNET_LAYOUT)).toBeUndefined(); // up block 0 has no attention
    // SDXL (sd-scripts' SDXL LoRAs use these names).
    expect(ldmToDiffusers("input_blocks_4_1_transformer_blocks_1_attn2_to_k", SDXL_UNET_LAYOUT)).toBe(
      "down_blocks_1_attentions_0_transformer_blocks_1_attn2_to_k",
    );
    expect(ldmToDiffusers("output_blocks_2_2_conv", SDXL_UNET_LAYOUT)).toBe("up_blocks_0_upsamplers_0_conv");
    expect(ldmToDiffusers("label_emb_0_0", SDXL_UNET_LAYOUT)).toBe("add_embedding_linear_1");
  });

  it("reads the layout of a UNet from its module names and maps every layer both ways", () => {
    const layout = unetLayoutFromModuleNames(base.unet!)!;
    // What the fixture's unet/config.json describes: attention in the CrossAttn* blocks, a
    // downsampler after every down block but the last, an upsampler after every up block but the last.
    const config = fixtureJson<{ layers_per_block: number; down_block_types: string[]; up_block_types: string[] }>(
      "tiny-sd",
      "unet",
      "config.json",
    );
    const notLast = (_: string, i: number, all: string[]): boolean => i < all.length - 1;
    expect(layout).toEqual({
      layersPerBlock: config.layers_per_block,
      downAttention: config.down_block_types.map((t) => t.startsWith("CrossAttn")),
      downsample: config.down_block_types.map(notLast),
      upAttention: config.up_block_types.map((t) => t.startsWith("CrossAttn")),
      upsample: config.up_block_types.map(notLast),
    });
    for (const path of targets.unet!) {
      const ldm = diffusersToLdm(underscored(path), layout);
      expect(ldm, path).toBeDefined();
      expect(ldmToDiffusers(ldm!, layout), path).toBe(underscored(path));
    }
  });

  it("loads a kohya file with LDM names and can write them back", async () => {
    // The indices below were worked by hand for this layout (SD-2 style, one layer per block),
    // so the base is a UNet built from it rather than the fixture's.
    const unet = await UNet.fromConfig(
      {
        ...fixtureJson<Record<string, unknown>>("tiny-sd", "unet", "config.json"),
        block_out_channels: [32, 64],
        layers_per_block: 1,
        down_block_types: ["CrossAttnDownBlock2D", "DownBlock2D"],
        up_block_types: ["UpBlock2D", "CrossAttnUpBlock2D"],
        attention_head_dim: [2, 4],
        use_linear_projection: true,
      },
      { seed: 0 },
    );
    const layoutBase: BaseModuleNames = {
      unet: unet
        .parameterInfo()
        .filter((p) => p.name.endsWith(".weight"))
        .map((p) => p.name.slice(0, -".weight".length)),
    };
    unet.dispose();
    const names = {
      input_blocks_1_1_transformer_blocks_0_attn1_to_q:
        "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q",
      input_blocks_2_0_op: "unet.down_blocks.0.downsamplers.0.conv",
      input_blocks_3_0_in_layers_2: "unet.down_blocks.1.resnets.0.conv1",
      output_blocks_1_1_conv: "unet.up_blocks.0.upsamplers.0.conv",
      output_blocks_3_1_proj_in: "unet.up_blocks.1.attentions.1.proj_in",
    };
    const shapes: Record<string, number[]> = {};
    for (const ldm of Object.keys(names)) {
      const conv = ldm.includes("op") || ldm.includes("conv") || ldm.includes("layers");
      shapes[`lora_unet_${ldm}.lora_down.weight`] = conv ? [2, 32, 3, 3] : [2, 32];
      shapes[`lora_unet_${ldm}.lora_up.weight`] = conv ? [32, 2, 1, 1] : [32, 2];
    }
    const path = await loraFile("ldm.safetensors", shapes);
    const weights = await loadLoraFile(path, { baseModuleNames: layoutBase });
    expect([...weights.adapters.keys()]).toEqual(Object.values(names).sort());
    expect(weights.adapters.get("unet.down_blocks.0.downsamplers.0.conv")!.down.shape).toEqual([2, 32, 3, 3]);
    const layout = unetLayoutFromModuleNames(layoutBase.unet!)!;
    const saved = await saveLora(join(dir.path, "ldm-out.safetensors"), weights, {
      format: "kohya",
      kohyaNaming: "ldm",
      unetLayout: layout,
    });
    const written = (await inspectSafetensors(saved.path)).tensors
      .map((t) => t.name)
      .filter((n) => n.endsWith(".lora_down.weight"));
    expect(written.sort()).toEqual(
      Object.keys(names)
        .map((n) => `lora_unet_${n}.lora_down.weight`)
        .sort(),
    );
    // Without the base model an SD 1.x/2.x layout is assumed, where these indices mean other blocks.
    await expect(loadLoraFile(path)).rejects.toThrow(/no counterpart in this UNet layout|no module/);
  });
});

describe("PEFT configs", () => {
  it("reads alpha, alpha_pattern and rsLoRA from diffusers' lora_adapter_metadata", async () => {
    const peft = await readSafetensors(fixture("lora", "peft", "pytorch_lora_weights.safetensors"));
    const { unet, textEncoder } = await loraFixture(); // the file's ranks
    const metadata = {
      format: "pt",
      lora_adapter_metadata: JSON.stringify({
        "unet.r": unet.rank,
        "unet.lora_alpha": 8,
        "unet.alpha_pattern": { "attn2.to_k": 2 },
        "text_encoder.r": textEncoder.rank,
        "text_encoder.lora_alpha": 3,
        "text_encoder.use_rslora": true,
      }),
    };
    const path = join(dir.path, "peft-meta.safetensors");
    await writeSafetensors(path, peft.tensors, metadata);
    const weights = await loadLoraFile(path);
    const keys = [...weights.adapters.keys()];
    const attn2 = keys.filter((k) => k.startsWith("unet.") && k.endsWith(".attn2.to_k"));
    const attn1 = keys.filter((k) => k.startsWith("unet.") && k.endsWith(".attn1.to_k"));
    expect(attn2.length).toBeGreaterThan(0);
    for (const k of attn2) expect(weights.adapters.get(k)!.alpha, k).toBe(2);
    for (const k of attn1) expect(weights.adapters.get(k)!.alpha, k).toBe(8);
    // rsLoRA scales by alpha / sqrt(r): sdtune's alpha (scale * rank) is 3 * sqrt(r).
    const teKey = keys.find((k) => k.startsWith("text_encoder."))!;
    expect(weights.adapters.get(teKey)!.alpha).toBeCloseTo(3 * Math.sqrt(textEncoder.rank), 12);
    // Saved to diffusers format the factor is folded and the metadata describing raw weights is dropped.
    const saved = await saveLora(join(dir.path, "peft-meta-out.safetensors"), weights, { format: "peft" });
    expect((await inspectSafetensors(saved.path)).metadata.lora_adapter_metadata).toBeUndefined();
  });

  it("rejects a PEFT config whose rank disagrees with the tensors", async () => {
    const folder = join(dir.path, "bad-adapter");
    await mkdir(folder);
    await writeSafetensors(join(folder, "adapter_model.safetensors"), [
      ["base_model.model.conv_in.lora_A.weight", f32([2, 4, 3, 3])],
      ["base_model.model.conv_in.lora_B.weight", f32([32, 2, 1, 1])],
    ]);
    await writeFile(join(folder, "adapter_config.json"), JSON.stringify({ peft_type: "LORA", r: 8, lora_alpha: 8 }));
    expect(await problemsOf(loadLoraFile(folder))).toEqual([
      'module "unet.conv_in": the adapter config gives rank 8 but the tensors have rank 2',
    ]);
  });
});

describe("errors name what is wrong", () => {
  it("lists every unknown or unsupported kohya key", async () => {
    const path = await loraFile("unknown.safetensors", {
      "lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": [2, 32],
      "lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight": [32, 2],
      "lora_unet_down_blocks_0_frobnicator_9.lora_down.weight": [2, 32],
      "lora_unet_down_blocks_0_frobnicator_9.lora_up.weight": [32, 2],
      "lora_unet_conv_in.hada_t1": [2, 2, 3, 3],
    });
    const problems = await problemsOf(loadLoraFile(path));
    expect(problems).toHaveLength(2);
    expect(problems.join("\n")).toContain('"lora_unet_down_blocks_0_frobnicator_9": not a known unet layer');
    expect(problems.join("\n")).toContain('"lora_unet_conv_in.hada_t1": Tucker-decomposed LoHa/LoKr');
  });

  it("names the missing half and shows both shapes on a rank mismatch", async () => {
    const path = await loraFile("halves.safetensors", {
      "lora_unet_conv_in.lora_down.weight": [2, 4, 3, 3],
      "lora_te_text_model_encoder_layers_0_mlp_fc1.lora_down.weight": [4, 32],
      "lora_te_text_model_encoder_layers_0_mlp_fc1.lora_up.weight": [64, 2],
      "lora_te_text_model_encoder_layers_0_mlp_fc2.lora_down.weight": [4, 64],
      "lora_te_text_model_encoder_layers_0_mlp_fc2.lora_up.weight": [32, 4, 1, 1],
    });
    expect(await problemsOf(loadLoraFile(path))).toEqual([
      'module "text_encoder.text_model.encoder.layers.0.mlp.fc1": rank mismatch: ' +
        '"lora_te_text_model_encoder_layers_0_mlp_fc1.lora_down.weight" is [4, 32] (rank 4) but ' +
        '"lora_te_text_model_encoder_layers_0_mlp_fc1.lora_up.weight" is [64, 2] (rank 2)',
      'module "text_encoder.text_model.encoder.layers.0.mlp.fc2": "lora_te_text_model_encoder_layers_0_mlp_fc2.lora_down.weight" ' +
        '[4, 64] and "lora_te_text_model_encoder_layers_0_mlp_fc2.lora_up.weight" [32, 4, 1, 1] disagree on Linear vs Conv2d',
      'module "unet.conv_in": has "lora_unet_conv_in.lora_down.weight" but "lora_unet_conv_in.lora_up.weight" is missing',
    ]);
  });

  it("handles diffusers-format files the same way", async () => {
    const path = await loraFile("diffusers-bad.safetensors", {
      "unet.conv_in.lora.down.weight": [2, 4, 3, 3],
      "unet.mid_block.attentions.0.proj_in.lora_B.weight": [64, 2],
      "unet.mid_block.attentions.0.proj_in.alpha": [],
    });
    expect((await problemsOf(loadLoraFile(path))).sort()).toEqual([
      '"unet.mid_block.attentions.0.proj_in.alpha": per-module alpha tensors are not part of the diffusers/PEFT formats',
    ]);
    const halves = await loraFile("diffusers-halves.safetensors", {
      "unet.conv_in.lora.down.weight": [2, 4, 3, 3],
      "unet.mid_block.attentions.0.proj_in.lora_B.weight": [64, 2],
    });
    expect(await problemsOf(loadLoraFile(halves))).toEqual([
      'module "unet.conv_in": has "unet.conv_in.lora.down.weight" but "unet.conv_in.lora.up.weight" is missing',
      'module "unet.mid_block.attentions.0.proj_in": has "unet.mid_block.attentions.0.proj_in.lora_B.weight" but ' +
        '"unet.mid_block.attentions.0.proj_in.lora_A.weight" is missing',
    ]);
  });

  it("refuses mixed formats, pickles, non-LoRA files and modules the base model lacks", async () => {
    const mixed = await loraFile("mixed.safetensors", {
      "lora_unet_conv_in.lora_down.weight": [2, 4, 3, 3],
      "unet.conv_in.lora_A.weight": [2, 4, 3, 3],
    });
    expect((await problemsOf(loadLoraFile(mixed)))[0]).toContain("mixes kohya keys with peft keys");
    await writeFile(join(dir.path, "old.ckpt"), "not read");
    await expect(loadLoraFile(join(dir.path, "old.ckpt"))).rejects.toThrow(/pickle runs arbitrary code/);
    await expect(loadLoraFile(join(dir.path, "missing.safetensors"))).rejects.toThrow(/no such file/);
    const vae = fixture("tiny-sd", "vae", "diffusion_pytorch_model.safetensors");
    expect((await problemsOf(loadLoraFile(vae)))[0]).toContain("no LoRA keys found");
    const extra = await loraFile("extra.safetensors", {
      "unet.down_blocks.5.attentions.0.proj_in.lora_A.weight": [2, 32],
      "unet.down_blocks.5.attentions.0.proj_in.lora_B.weight": [32, 2],
    });
    expect(await problemsOf(loadLoraFile(extra, { baseModuleNames: base }))).toEqual([
      'module "unet.down_blocks.5.attentions.0.proj_in": the base model\'s unet has no module "down_blocks.5.attentions.0.proj_in"',
    ]);
  });
});

describe("long operations", () => {
  it("report progress and stop on an aborted signal", async () => {
    const events: number[] = [];
    const kohya = fixture("lora", "kohya", "lora.safetensors");
    const weights = await loadLoraFile(kohya, { onProgress: (e) => events.push(e.step) });
    expect(events).toHaveLength(44);
    expect(events.at(-1)).toBe(44);
    const aborted = AbortSignal.abort();
    await expect(loadLoraFile(kohya, { signal: aborted })).rejects.toMatchObject({ name: "AbortError" });
    await expect(
      saveLora(join(dir.path, "never.safetensors"), weights, { format: "diffusers", signal: aborted }),
    ).rejects.toMatchObject({ name: "AbortError" });
    await expect(inspectSafetensors(join(dir.path, "never.safetensors"))).rejects.toThrow();
  });
});

describe("kohya metadata", () => {
  it("formats values as Python's str() does", () => {
    // Expected strings printed by CPython 3.11: repr(x) and json.dumps(...).
    const cases: [number, string][] = [
      [0.0001, "0.0001"],
      [1e-5, "1e-05"],
      [8, "8.0"],
      [1e16, "1e+16"],
      [1700000000.123456, "1700000000.123456"],
      [0.1 + 0.2, "0.30000000000000004"],
      [-2.5e-7, "-2.5e-07"],
      [123456789012345.6, "123456789012345.6"],
      [123456789, "123456789.0"],
      [5e-324, "5e-324"],
      [1.7976931348623157e308, "1.7976931348623157e+308"],
    ];
    for (const [x, s] of cases) expect(pyFloat(x)).toBe(s);
    expect(pyJson({ ss: { "a b": 3, "caf\u00e9": 1 }, list: [1, 2.5, null, true, "\u{1F600}"] })).toBe(
      '{"ss": {"a b": 3, "caf\\u00e9": 1}, "list": [1, 2.5, null, true, "\\ud83d\\ude00"]}',
    );
  });

  it("builds the ss_* entries train_network.py writes", () => {
    expect(
      kohyaTrainingMetadata({
        learningRate: 1e-4,
        textEncoderLr: null,
        maxTrainSteps: 1600,
        resolution: [512, 768],
        v2: true,
        vParameterization: true,
        gradientCheckpointing: false,
        tagFrequency: { "10_dog": { dog: 10 } },
      }),
    ).toEqual({
      ss_learning_rate: "0.0001",
      ss_text_encoder_lr: "None",
      ss_max_train_steps: "1600",
      ss_resolution: "(512, 768)",
      ss_v2: "True",
      ss_base_model_version: "sd_v2_v",
      ss_gradient_checkpointing: "False",
      ss_tag_frequency: '{"10_dog": {"dog": 10}}',
    });
  });
});
