import { copyFile, mkdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";

import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { readSafetensors, writeSafetensors } from "../src/io/safetensors.js";
import { nativeUNetConfig, parseUNetConfig } from "../src/models/config.js";
import { UNet } from "../src/models/unet.js";
import { native, type Tensor } from "../src/native/index.js";
import { expectClose, fixture, fixtureJson, get, golden, tempDir, TOL } from "./helpers/fixtures.js";

const unetDir = fixture("tiny-sd", "unet");
// Sizes and block layout from the fixture's own config.
interface UNetJson {
  attention_head_dim: number | number[];
  block_out_channels: number[];
  down_block_types: string[];
  cross_attention_dim: number;
  in_channels: number;
  out_channels: number;
}
const CONFIG = fixtureJson<UNetJson>("tiny-sd", "unet", "config.json");
const [C0, C1] = CONFIG.block_out_channels as [number, number];
const BLOCKS = CONFIG.block_out_channels.length;
const HEADS = Array.isArray(CONFIG.attention_head_dim)
  ? CONFIG.attention_head_dim
  : CONFIG.block_out_channels.map(() => CONFIG.attention_head_dim as number);
/** The first down block with attention (its transformer parameters are named below). */
const CROSS = CONFIG.down_block_types.indexOf("CrossAttnDownBlock2D");

async function tinyConfig(): Promise<Record<string, unknown>> {
  return JSON.parse(await readFile(join(unetDir, "config.json"), "utf8")) as Record<string, unknown>;
}

/** A unet/ folder in a temp dir with the fixture's weights and a modified config. */
async function folderWith(dir: string, config: Record<string, unknown>): Promise<string> {
  await mkdir(dir, { recursive: true });
  await writeFile(join(dir, "config.json"), JSON.stringify(config));
  // A copy: a link out of the model folder would be refused (src/models/files.ts modelFile).
  await copyFile(
    join(unetDir, "diffusion_pytorch_model.safetensors"),
    join(dir, "diffusion_pytorch_model.safetensors"),
  );
  return dir;
}

describe("UNet2DConditionModel against diffusers (golden/unet.safetensors)", () => {
  let unet: UNet;
  let g: Map<string, Tensor>;
  beforeAll(async () => {
    unet = await UNet.load(unetDir);
    g = await golden("unet");
  });
  afterAll(() => unet.dispose());

  it("reads the config with diffusers' meaning of attention_head_dim", () => {
    expect(unet.config.attention_head_dim).toEqual(CONFIG.attention_head_dim);
    expect(unet.dtype).toBe("float32");
    expect(unet.device).toBe("cpu");
    const names = unet.parameterInfo().map((p) => p.name);
    expect(names).toContain(`down_blocks.${CROSS}.attentions.0.transformer_blocks.0.attn1.to_out.0.weight`);
    expect(names).toContain("up_blocks.0.upsamplers.0.conv.weight");
    expect(unet.parameterInfo().every((p) => !p.requiresGrad)).toBe(true);
  });

  it("matches with a 0-dim int timestep broadcast to the batch, layer by layer", async () => {
    const { output, intermediates } = await unet.forwardWithIntermediates(
      get(g, "sample"),
      get(g, "timestep_scalar"),
      get(g, "encoder_hidden_states"),
    );
    await expectClose(output, get(g, "out_scalar_t"), TOL.forward, "out_scalar_t");
    const stored = [...g.keys()].filter((k) => k.startsWith("intermediate.")).map((k) => k.slice(13));
    expect(Object.keys(intermediates).sort()).toEqual(stored.sort());
    for (const name of stored) {
      await expectClose(intermediates[name]!, get(g, `intermediate.${name}`), TOL.forward, name);
    }
  });

  it("matches with per-sample int timesteps", async () => {
    const out = await unet.forward(get(g, "sample"), get(g, "timesteps_batch"), get(g, "encoder_hidden_states"));
    await expectClose(out, get(g, "out_batch_t"), TOL.forward, "out_batch_t");
  });

  it("matches with fractional float timesteps", async () => {
    const out = await unet.forward(get(g, "sample"), get(g, "timesteps_float"), get(g, "encoder_hidden_states"));
    await expectClose(out, get(g, "out_float_t"), TOL.forward, "out_float_t");
  });

  it("matches with real text-encoder hidden states", async () => {
    const out = await unet.forward(get(g, "sample"), get(g, "timesteps_batch"), get(g, "encoder_hidden_states_text"));
    await expectClose(out, get(g, "out_text_ehs"), TOL.forward, "out_text_ehs");
  });

  it("takes a plain number as the timestep", async () => {
    const t = Number((get(g, "timestep_scalar").toTypedArray() as BigInt64Array)[0]);
    const out = await unet.forward(get(g, "sample"), t, get(g, "encoder_hidden_states"));
    await expectClose(out, get(g, "out_scalar_t"), TOL.forward, "number timestep");
  });

  it("refuses inputs of the wrong shape before running", async () => {
    const sample = get(g, "sample");
    const ehs = get(g, "encoder_hidden_states");
    const batch = sample.shape[0]!;
    await expect(unet.forward(ehs, 1, ehs)).rejects.toThrow(
      `sample must be [batch, ${CONFIG.in_channels}, height, width]`,
    );
    await expect(unet.forward(sample, 1, sample)).rejects.toThrow(
      `encoderHiddenStates must be [${batch}, length, ${CONFIG.cross_attention_dim}]`,
    );
    const tooMany = native().ops.randn([batch + 1]);
    await expect(unet.forward(sample, tooMany, ehs)).rejects.toThrow(`one value per sample (${batch})`);
  });
});

describe("UNet backward against diffusers (golden/unet_backward.safetensors)", () => {
  let unet: UNet;
  let g: Map<string, Tensor>;
  beforeAll(async () => {
    unet = await UNet.load(unetDir);
    g = await golden("unet_backward");
  });
  afterAll(() => unet.dispose());

  const run = (): ReturnType<UNet["lossAndGradients"]> =>
    unet.lossAndGradients(get(g, "sample"), get(g, "timesteps"), get(g, "encoder_hidden_states"), get(g, "target"));

  it("matches the loss, the output and every stored gradient", async () => {
    const { loss, output, grads } = await run();
    await expectClose(loss, get(g, "loss"), TOL.gradient, "loss");
    await expectClose(output, get(g, "output"), TOL.gradient, "output");
    const stored = [...g.keys()].filter((k) => k.startsWith("grad."));
    expect(stored.length).toBeGreaterThan(0);
    for (const key of stored) {
      const name = key.slice(5);
      expect(grads[name], `gradient of ${name}`).toBeDefined();
      await expectClose(grads[name]!, get(g, key), TOL.gradient, key);
    }
    // Every parameter got a gradient, and the model is frozen again afterwards.
    expect(Object.keys(grads).sort()).toEqual(
      unet
        .parameterInfo()
        .map((p) => p.name)
        .sort(),
    );
    expect(unet.parameterInfo().every((p) => !p.requiresGrad)).toBe(true);
  });

  it("gives bit-identical gradients with gradient checkpointing on and off", async () => {
    expect(unet.gradientCheckpointing).toBe(false);
    const plain = await run();
    unet.setGradientCheckpointing(true);
    expect(unet.gradientCheckpointing).toBe(true);
    const recomputed = await run();
    unet.setGradientCheckpointing(false);
    expect(native().ops.maxAbsDiff(recomputed.loss, plain.loss)).toBe(0);
    expect(native().ops.maxAbsDiff(recomputed.output, plain.output)).toBe(0);
    for (const [name, grad] of Object.entries(plain.grads)) {
      expect(native().ops.maxAbsDiff(recomputed.grads[name]!, grad), name).toBe(0);
    }
  });
});

describe("SD-1-style UNet (conv projections, 2 transformer layers, per-block cross dims)", () => {
  it("builds from a config, runs, and checkpoints to identical gradients", async () => {
    const config = {
      ...(await tinyConfig()),
      use_linear_projection: false,
      attention_head_dim: 2,
      transformer_layers_per_block: 2,
      only_cross_attention: CONFIG.block_out_channels.map((_, i) => i === 0),
      cross_attention_dim: 24,
      layers_per_block: CONFIG.block_out_channels.map((_, i) => i + 1),
    };
    const unet = await UNet.fromConfig(config, { seed: 1 });
    const names = unet.parameterInfo();
    const projIn = names.find((p) => p.name === "down_blocks.0.attentions.0.proj_in.weight");
    expect(projIn?.shape).toEqual([C0, C0, 1, 1]);
    expect(names.some((p) => p.name === "mid_block.attentions.0.transformer_blocks.1.ff.net.2.weight")).toBe(true);
    // only_cross_attention: attn1 reads the context too.
    const attn1k = names.find((p) => p.name === "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_k.weight");
    expect(attn1k?.shape).toEqual([C0, 24]);
    // Odd spatial size: the up path upsamples to the skip sizes.
    const sample = native().ops.randn([2, CONFIG.in_channels, 7, 9], { seed: 2 });
    const ehs = native().ops.randn([2, 5, 24], { seed: 3 });
    const target = native().ops.randn([2, CONFIG.out_channels, 7, 9], { seed: 4 });
    const out = await unet.forward(sample, 500, ehs);
    expect(out.shape).toEqual([2, CONFIG.out_channels, 7, 9]);
    const plain = await unet.lossAndGradients(sample, 500, ehs, target);
    unet.setGradientCheckpointing(true);
    const recomputed = await unet.lossAndGradients(sample, 500, ehs, target);
    for (const [name, grad] of Object.entries(plain.grads)) {
      expect(native().ops.maxAbsDiff(recomputed.grads[name]!, grad), name).toBe(0);
    }
    unet.dispose();
    unet.dispose(); // idempotent
    expect(unet.disposed).toBe(true);
    await expect(unet.forward(sample, 1, ehs)).rejects.toThrow(/disposed/);
  });
});

// unet/config.json of published checkpoints, verbatim (values as on the Hugging Face hub).
const SD15_UNET = {
  _class_name: "UNet2DConditionModel",
  _diffusers_version: "0.17.0.dev0",
  act_fn: "silu",
  addition_embed_type: null,
  addition_embed_type_num_heads: 64,
  attention_head_dim: 8,
  block_out_channels: [320, 640, 1280, 1280],
  center_input_sample: false,
  class_embed_type: null,
  class_embeddings_concat: false,
  conv_in_kernel: 3,
  conv_out_kernel: 3,
  cross_attention_dim: 768,
  cross_attention_norm: null,
  down_block_types: ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
  downsample_padding: 1,
  dual_cross_attention: false,
  encoder_hid_dim: null,
  flip_sin_to_cos: true,
  freq_shift: 0,
  in_channels: 4,
  layers_per_block: 2,
  mid_block_only_cross_attention: null,
  mid_block_scale_factor: 1,
  mid_block_type: "UNetMidBlock2DCrossAttn",
  norm_eps: 1e-5,
  norm_num_groups: 32,
  num_class_embeds: null,
  only_cross_attention: false,
  out_channels: 4,
  projection_class_embeddings_input_dim: null,
  resnet_out_scale_factor: 1.0,
  resnet_skip_time_act: false,
  resnet_time_scale_shift: "default",
  sample_size: 64,
  time_cond_proj_dim: null,
  time_embedding_act_fn: null,
  time_embedding_dim: null,
  time_embedding_type: "positional",
  timestep_post_act: null,
  up_block_types: ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
  upcast_attention: null,
  use_linear_projection: false,
};
const SD21_BASE_UNET = {
  _class_name: "UNet2DConditionModel",
  _diffusers_version: "0.10.0.dev0",
  act_fn: "silu",
  attention_head_dim: [5, 10, 20, 20],
  block_out_channels: [320, 640, 1280, 1280],
  center_input_sample: false,
  cross_attention_dim: 1024,
  down_block_types: ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
  downsample_padding: 1,
  dual_cross_attention: false,
  flip_sin_to_cos: true,
  freq_shift: 0,
  in_channels: 4,
  layers_per_block: 2,
  mid_block_scale_factor: 1,
  norm_eps: 1e-5,
  norm_num_groups: 32,
  num_class_embeds: null,
  only_cross_attention: false,
  out_channels: 4,
  sample_size: 64,
  up_block_types: ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
  use_linear_projection: true,
};

describe("less common UNet config values", () => {
  it("builds and runs scale_shift, custom time embeddings, odd kernels, no mid block", async () => {
    const unet = await UNet.fromConfig(
      {
        ...(await tinyConfig()),
        resnet_time_scale_shift: "scale_shift",
        time_embedding_dim: 96,
        time_embedding_act_fn: "silu",
        timestep_post_act: "gelu",
        conv_in_kernel: 1,
        conv_out_kernel: 5,
        center_input_sample: true,
        mid_block_type: null,
        act_fn: "mish",
      },
      { seed: 5 },
    );
    const shapes = new Map(unet.parameterInfo().map((p) => [p.name, p.shape]));
    expect(shapes.get("time_embedding.linear_1.weight")).toEqual([96, C0]);
    expect(shapes.get("down_blocks.0.resnets.0.time_emb_proj.weight")).toEqual([2 * C0, 96]); // 2 * channels
    expect(shapes.get("conv_in.weight")).toEqual([C0, CONFIG.in_channels, 1, 1]);
    expect(shapes.get("conv_out.weight")).toEqual([CONFIG.out_channels, C0, 5, 5]);
    expect([...shapes.keys()].some((k) => k.startsWith("mid_block."))).toBe(false);
    const sample = native().ops.randn([1, CONFIG.in_channels, 8, 8], { seed: 1 });
    const out = await unet.forward(sample, 10.5, native().ops.randn([1, 3, CONFIG.cross_attention_dim]));
    expect(out.shape).toEqual([1, CONFIG.out_channels, 8, 8]);
    expect(Array.from(out.toTypedArray() as Float32Array).every(Number.isFinite)).toBe(true);
    unet.dispose();
  });
});

describe("published SD configs", () => {
  it("SD 1.5: 8 heads everywhere (head dim 40..160), conv projections, cross 768, null upcast_attention", () => {
    const n = nativeUNetConfig(parseUNetConfig(SD15_UNET, "sd15/unet/config.json"));
    expect(n.numAttentionHeads).toEqual([8, 8, 8, 8]);
    expect(n.crossAttentionDim).toEqual([768, 768, 768, 768]);
    expect(n.layersPerBlock).toEqual([2, 2, 2, 2]);
    expect(n.useLinearProjection).toBe(false);
    expect(n.upcastAttention).toBe(false);
    expect(n.midBlockType).toBe("UNetMidBlock2DCrossAttn");
  });

  it("SD 2.x: per-block head counts [5, 10, 20, 20] (head dim 64), linear projections, cross 1024", () => {
    const n = nativeUNetConfig(parseUNetConfig(SD21_BASE_UNET, "sd21/unet/config.json"));
    expect(n.numAttentionHeads).toEqual([5, 10, 20, 20]);
    expect(n.crossAttentionDim).toEqual([1024, 1024, 1024, 1024]);
    expect(n.useLinearProjection).toBe(true);
    const v = nativeUNetConfig(
      parseUNetConfig({ ...SD21_BASE_UNET, upcast_attention: true }, "sd21-v/unet/config.json"),
    );
    expect(v.upcastAttention).toBe(true);
  });

  it("SDXL is refused by name", () => {
    const sdxl = { ...SD21_BASE_UNET, addition_embed_type: "text_time", addition_time_embed_dim: 256 };
    expect(() => parseUNetConfig(sdxl, "sdxl/unet/config.json")).toThrow(
      /^sdxl\/unet\/config\.json: "addition_embed_type" = "text_time" is not supported/,
    );
  });
});

describe("UNet loading", () => {
  let tmp: { path: string; cleanup(): Promise<void> };
  beforeAll(async () => {
    tmp = await tempDir("sdtune-unet-");
  });
  afterAll(() => tmp.cleanup());

  it("reports every weight that does not fit the config, with names and shapes, in one error", async () => {
    const wider = [C0, 2 * C1, ...CONFIG.block_out_channels.slice(2)];
    const dir = await folderWith(join(tmp.path, "mismatch"), { ...(await tinyConfig()), block_out_channels: wider });
    const error = await UNet.load(dir).catch((e: Error) => e);
    expect(error).toBeInstanceOf(Error);
    const message = (error as Error).message;
    expect(message).toMatch(/^unet: the checkpoint does not match the model config/);
    expect(message).toMatch(/shape mismatches \(\d+\):/);
    expect(message).toContain(
      `down_blocks.1.resnets.0.conv1.weight: checkpoint [${C1}, ${C0}, 3, 3], model [${2 * C1}, ${C0}, 3, 3]`,
    );
    expect(message).toContain(join(dir, "diffusion_pytorch_model.safetensors"));
  });

  it("names the missing folder, config or weights", async () => {
    await expect(UNet.load(join(tmp.path, "nowhere"))).rejects.toThrow(/config\.json: file not found/);
    const dir = join(tmp.path, "no-weights");
    await mkdir(dir);
    await writeFile(join(dir, "config.json"), JSON.stringify(await tinyConfig()));
    await expect(UNet.load(dir)).rejects.toThrow(/no-weights: no weights found/);
  });

  it("refuses a folder with only pickled weights", async () => {
    const dir = join(tmp.path, "pickle");
    await mkdir(dir);
    await writeFile(join(dir, "config.json"), JSON.stringify(await tinyConfig()));
    await writeFile(join(dir, "diffusion_pytorch_model.bin"), Buffer.from("not really a pickle"));
    await expect(UNet.load(dir)).rejects.toThrow(/only pickled weights found \(diffusion_pytorch_model\.bin\)/);
  });

  it("names the file, field and value of an unsupported config", async () => {
    for (const [field, value, pattern] of [
      ["addition_embed_type", "text_time", /"addition_embed_type" = "text_time" is not supported \(SDXL/],
      ["class_embed_type", "timestep", /"class_embed_type" = "timestep" is not supported/],
      ["time_cond_proj_dim", 256, /"time_cond_proj_dim" = 256 is not supported/],
      ["dual_cross_attention", true, /"dual_cross_attention" = true is not supported/],
      ["num_attention_heads", 8, /"num_attention_heads" = 8 is not supported/],
      [
        "down_block_types",
        ["SimpleCrossAttnDownBlock2D", "DownBlock2D"],
        /"down_block_types\.0" = "SimpleCrossAttnDownBlock2D"/,
      ],
      ["mid_block_type", "UNetMidBlock2DSimpleCrossAttn", /"mid_block_type" = "UNetMidBlock2DSimpleCrossAttn"/],
      ["resnet_time_scale_shift", "ada_group", /"resnet_time_scale_shift" = "ada_group"/],
      ["act_fn", "tanh", /"act_fn" = "tanh": Invalid option/],
      [
        "attention_head_dim",
        [3, ...HEADS.slice(1)], // channels are multiples of 32 (GroupNorm): never divisible by 3
        new RegExp(`"attention_head_dim\\.0" = 3 .*does not divide block_out_channels\\.0 = ${C0}`),
      ],
      [
        "layers_per_block",
        Array(BLOCKS + 1).fill(1),
        new RegExp(
          `"layers_per_block" = \\[${Array(BLOCKS + 1)
            .fill(1)
            .join(",")}\\] must be a single value or one per down block \\(${BLOCKS}\\)`,
        ),
      ],
    ] as const) {
      const dir = join(tmp.path, `unsupported-${field}`);
      await mkdir(dir);
      await writeFile(join(dir, "config.json"), JSON.stringify({ ...(await tinyConfig()), [field]: value }));
      const error = await UNet.load(dir).catch((e: Error) => e);
      expect((error as Error).message, field).toMatch(pattern);
      expect((error as Error).message, field).toContain(join(dir, "config.json"));
    }
  });

  it("fills diffusers' defaults for fields a config leaves out", () => {
    const config = parseUNetConfig(
      {
        block_out_channels: [32, 64],
        down_block_types: ["CrossAttnDownBlock2D", "DownBlock2D"],
        up_block_types: ["UpBlock2D", "CrossAttnUpBlock2D"],
      },
      "x.json",
    );
    expect(config.layers_per_block).toBe(2);
    expect(config.attention_head_dim).toBe(8);
    expect(config.cross_attention_dim).toBe(1280);
    expect(config.norm_eps).toBe(1e-5);
    expect(config.flip_sin_to_cos).toBe(true);
  });

  it("loads in bfloat16 and runs on the CPU", async () => {
    const g = await golden("unet");
    const unet = await UNet.load(unetDir, { dtype: "bfloat16" });
    expect(unet.dtype).toBe("bfloat16");
    expect(unet.parameterInfo().every((p) => p.dtype === "bfloat16")).toBe(true);
    const out = await unet.forward(get(g, "sample"), get(g, "timesteps_batch"), get(g, "encoder_hidden_states"));
    expect(out.dtype).toBe("bfloat16");
    // bfloat16 keeps ~3 significant digits; the result must still follow the float32 reference.
    await expectClose(await out.to({ dtype: "float32" }), get(g, "out_batch_t"), { atol: 0.1, rtol: 0.1 }, "bf16");
    unet.dispose();
  });

  it("loads an fp16 weight variant", async () => {
    const dir = join(tmp.path, "variant");
    await mkdir(dir);
    await copyFile(join(unetDir, "config.json"), join(dir, "config.json"));
    const { tensors } = await readSafetensors(join(unetDir, "diffusion_pytorch_model.safetensors"));
    const half = new Map<string, Tensor>();
    for (const [name, t] of tensors) half.set(name, await t.to({ dtype: "float16" }));
    await writeSafetensors(join(dir, "diffusion_pytorch_model.fp16.safetensors"), half);
    await expect(UNet.load(dir)).rejects.toThrow(/no weights found/);
    const unet = await UNet.load(dir, { variant: "fp16" });
    expect(unet.dtype).toBe("float32");
    const g = await golden("unet");
    const out = await unet.forward(get(g, "sample"), get(g, "timesteps_batch"), get(g, "encoder_hidden_states"));
    // Weights rounded to float16 (11-bit mantissa): close to, not equal to, the float32 reference.
    await expectClose(out, get(g, "out_batch_t"), { atol: 2e-2, rtol: 2e-2 }, "fp16 variant");
    unet.dispose();
  });

  it("validates dtype and device before loading", async () => {
    await expect(UNet.load(unetDir, { dtype: "float64" as never })).rejects.toThrow(/dtype "float64" is not supported/);
    await expect(UNet.load(unetDir, { device: "tpu" })).rejects.toThrow(/device "tpu" is not valid/);
    // float16 on the CPU: refused at load where libtorch cannot multiply half matrices there (1.13), else it runs.
    const half = await UNet.load(unetDir, { dtype: "float16" }).catch((e: Error) => e);
    if (half instanceof Error) {
      expect(half.message).toMatch(/"float16" cannot run on the CPU with this libtorch .*use bfloat16 or float32/);
    } else {
      const g = await golden("unet");
      const out = await half.forward(get(g, "sample"), 1, get(g, "encoder_hidden_states"));
      expect(out.dtype).toBe("float16");
      half.dispose();
    }
  });
});
