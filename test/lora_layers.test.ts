// LoRA adapters on the models against the reference: every file format reproduces
// diffusers' outputs at scale 1.0 and 0.5 (golden/lora.safetensors), fuse matches the
// reference fused weights and unfuse restores the base bit for bit, several adapters
// add up, misfits are reported, and trainable adapters line up with peft's names, init
// and the training-time forward / backward (golden/lora_train.safetensors).
import { copyFile } from "node:fs/promises";
import { join } from "node:path";

import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";

import { inspectSafetensors, writeSafetensors } from "../src/io/safetensors.js";

import {
  applyLora,
  applyLoraFile,
  createTrainableLora,
  disposeLora,
  extractLora,
  fuseLora,
  listLoras,
  loadLoraFile,
  loraParameters,
  removeLora,
  saveLora,
  setLoraEnabled,
  setLoraScales,
  unfuseLora,
  type LoraModels,
  type LoraWeights,
} from "../src/lora/index.js";
import { TextEncoder } from "../src/models/text_encoder.js";
import { UNet } from "../src/models/unet.js";
import { native, type Tensor } from "../src/native/index.js";
import {
  expectClose,
  fixture,
  fixtureJson,
  get,
  golden,
  goldenAdamW,
  goldenReadmeNumber,
  loraFixture,
  type LoraFacts,
  tempDir,
  TOL,
} from "./helpers/fixtures.js";

const FILES = {
  kohya: fixture("lora", "kohya", "lora.safetensors"),
  diffusers: fixture("lora", "diffusers", "pytorch_lora_weights.safetensors"),
  peft: fixture("lora", "peft", "pytorch_lora_weights.safetensors"),
  peft_adapter_unet: fixture("lora", "peft_adapter_unet"),
};
const TARGETS = ["to_q", "to_k", "to_v", "to_out.0"];
const TE_LAYERS = fixtureJson<{ num_hidden_layers: number }>(
  "tiny-sd",
  "text_encoder",
  "config.json",
).num_hidden_layers;
// LoraConfig(r=.., lora_alpha=..) of the training references (recorded in golden/README.md).
const TRAIN_RANK = goldenReadmeNumber("lora_train", /LoraConfig\(r=(\d+)/);
const TRAIN_ALPHA = goldenReadmeNumber("lora_train", /lora_alpha=([\d.]+)/);

let unet: UNet;
let textEncoder: TextEncoder;
let models: LoraModels;
let g: Map<string, Tensor>;
let train: Map<string, Tensor>;
let UNET: LoraFacts;
let TE: LoraFacts;
/** The modules golden/lora.safetensors stores fused weights of (fused_weight.<component>.<path>). */
let FUSED_UNET: string;
let FUSED_TE: string;
/** Shapes of the base weights, by parameter name. */
let unetShapes: Map<string, number[]>;
let teShapes: Map<string, number[]>;

beforeAll(async () => {
  unet = await UNet.load(fixture("tiny-sd", "unet"));
  textEncoder = await TextEncoder.load(fixture("tiny-sd", "text_encoder"));
  models = { unet, textEncoder };
  g = await golden("lora");
  train = await golden("lora_train");
  ({ unet: UNET, textEncoder: TE } = await loraFixture());
  const fused = (component: string) =>
    [...g.keys()].find((k) => k.startsWith(`fused_weight.${component}.`))!.slice(`fused_weight.${component}.`.length);
  FUSED_UNET = fused("unet");
  FUSED_TE = fused("text_encoder");
  const shapes = async (file: string) =>
    new Map((await inspectSafetensors(file)).tensors.map((t) => [t.name, t.shape]));
  unetShapes = await shapes(fixture("tiny-sd", "unet", "diffusion_pytorch_model.safetensors"));
  teShapes = await shapes(fixture("tiny-sd", "text_encoder", "model.safetensors"));
});
afterAll(() => {
  unet.dispose();
  textEncoder.dispose();
});
// Every test starts from the bare base models.
afterEach(async () => {
  await unfuseLora(models);
  await setLoraEnabled(models, true);
  const lists = await listLoras(models);
  const names = new Set([...(lists.unet ?? []), ...(lists.textEncoder ?? [])].map((a) => a.name));
  for (const name of names) await removeLora(models, name);
});

const unetOut = () => unet.forward(get(g, "sample"), get(g, "timesteps"), get(g, "encoder_hidden_states"));
const teOut = async () => (await textEncoder.forward(get(g, "te_input_ids"))).lastHiddenState;
const bytes = (t: Tensor): Buffer => {
  const a = t.toTypedArray();
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength);
};
async function weight(model: UNet | TextEncoder, name: string): Promise<Tensor> {
  const state = new Map(await model.handle.stateDict());
  const t = state.get(name);
  if (!t) throw new Error(`no weight ${name}`);
  return t.clone();
}

describe("LoRA files on the UNet and text encoder (golden/lora.safetensors)", () => {
  it("starts from the reference base outputs", async () => {
    await expectClose(await unetOut(), get(g, "unet_out_base"), TOL.forward, "unet base");
    await expectClose(await teOut(), get(g, "te_last_hidden_base"), TOL.forward, "te base");
  });

  for (const [format, path] of Object.entries(FILES)) {
    it(`${format}: reproduces diffusers at scale 1.0 and 0.5, and the base once removed`, async () => {
      const withTe = format !== "peft_adapter_unet";
      const on: LoraModels = withTe ? models : { unet };
      const name = await applyLoraFile(on, path, { name: format });
      expect(name).toBe(format);
      await expectClose(await unetOut(), get(g, "unet_out_lora_scale_1.0"), TOL.forward, `${format} unet 1.0`);
      if (withTe) await expectClose(await teOut(), get(g, "te_last_hidden_lora_scale_1.0"), TOL.forward, "te 1.0");

      await setLoraScales(on, { [format]: 0.5 });
      await expectClose(await unetOut(), get(g, "unet_out_lora_scale_0.5"), TOL.forward, `${format} unet 0.5`);
      if (withTe) await expectClose(await teOut(), get(g, "te_last_hidden_lora_scale_0.5"), TOL.forward, "te 0.5");

      const removed = await removeLora(on, format);
      expect(removed).toEqual(withTe ? { unet: UNET.modules, textEncoder: TE.modules } : { unet: UNET.modules });
      await expectClose(await unetOut(), get(g, "unet_out_base"), TOL.forward, "unet after remove");
    });
  }

  it("takes the scale at apply time", async () => {
    await applyLoraFile(models, FILES.kohya, { scale: 0.5 });
    await expectClose(await unetOut(), get(g, "unet_out_lora_scale_0.5"), TOL.forward, "unet 0.5");
    await expectClose(await teOut(), get(g, "te_last_hidden_lora_scale_0.5"), TOL.forward, "te 0.5");
    const lists = await listLoras(models);
    expect(lists.unet).toEqual([
      {
        name: "default_0",
        layers: UNET.modules,
        minRank: UNET.rank,
        maxRank: UNET.rank,
        multiplier: 0.5,
        enabled: true,
        fusedLayers: 0,
        trainable: false,
        type: "lora",
      },
    ]);
  });
});

describe("fuse and unfuse", () => {
  it("fuses to base + alpha/rank * up @ down, gives the unfused output, and unfuses bit for bit", async () => {
    const before = new Map<string, Tensor>();
    for (const model of [unet, textEncoder]) {
      for (const [name, t] of await model.handle.stateDict()) before.set(`${model === unet}:${name}`, t.clone());
    }
    await applyLoraFile(models, FILES.kohya, { name: "k" });
    const unfused = { unet: await unetOut(), te: await teOut() };

    expect(await fuseLora(models)).toEqual({ unet: UNET.modules, textEncoder: TE.modules });
    const tight = { atol: 1e-6, rtol: 1e-5 };
    await expectClose(await weight(unet, `${FUSED_UNET}.weight`), get(g, `fused_weight.unet.${FUSED_UNET}`), tight);
    await expectClose(
      await weight(textEncoder, `${FUSED_TE}.weight`),
      get(g, `fused_weight.text_encoder.${FUSED_TE}`),
      tight,
    );
    const fused = { unet: await unetOut(), te: await teOut() };
    await expectClose(fused.unet, unfused.unet, TOL.forward, "fused vs unfused unet");
    await expectClose(fused.te, unfused.te, TOL.forward, "fused vs unfused te");
    await expectClose(fused.unet, get(g, "unet_out_lora_scale_1.0"), TOL.forward, "fused unet vs reference");
    expect((await listLoras(models)).unet![0]!.fusedLayers).toBe(UNET.modules);

    // A fused adapter cannot change without unfusing first.
    await expect(setLoraScales(models, { k: 0.5 })).rejects.toThrow(/"k" is fused into the weights/);
    await expect(removeLora(models, "k")).rejects.toThrow(/unfuse it before removing/);
    await expect(setLoraEnabled(models, false)).rejects.toThrow(/unfuse it first/);

    expect(await unfuseLora(models)).toEqual({ unet: UNET.modules, textEncoder: TE.modules });
    for (const model of [unet, textEncoder]) {
      for (const [name, t] of await model.handle.stateDict()) {
        expect(bytes(t).equals(bytes(before.get(`${model === unet}:${name}`)!)), name).toBe(true);
      }
    }
    // Unfused again, the adapter is live again.
    await expectClose(await unetOut(), unfused.unet, { atol: 0, rtol: 0 }, "after unfuse");
  });

  it("fuses several adapters with their scales (the sum), and fuse_lora's scale on top", async () => {
    await applyLoraFile(models, FILES.kohya, { name: "a", scale: 0.25 });
    await applyLoraFile(models, FILES.diffusers, { name: "b", scale: 0.75 });
    await expectClose(await unetOut(), get(g, "unet_out_lora_scale_1.0"), TOL.forward, "a 0.25 + b 0.75");
    await fuseLora(models, { scale: 0.5 });
    await expectClose(await unetOut(), get(g, "unet_out_lora_scale_0.5"), TOL.forward, "fused at 0.5");
    await expectClose(await teOut(), get(g, "te_last_hidden_lora_scale_0.5"), TOL.forward, "te fused at 0.5");
    await unfuseLora(models);
    await expectClose(await unetOut(), get(g, "unet_out_lora_scale_1.0"), TOL.forward, "unfused again");
  });

  it("fuses only the named adapters", async () => {
    await applyLoraFile(models, FILES.kohya, { name: "a", scale: 0.5 });
    await applyLoraFile(models, FILES.peft, { name: "b", scale: 0.5 });
    expect(await fuseLora(models, { names: ["a"] })).toEqual({ unet: UNET.modules, textEncoder: TE.modules });
    const lists = await listLoras(models);
    expect(lists.unet!.map((a) => [a.name, a.fusedLayers])).toEqual([
      ["a", UNET.modules],
      ["b", 0],
    ]);
    await expectClose(await unetOut(), get(g, "unet_out_lora_scale_1.0"), TOL.forward, "a fused + b live");
    await expect(fuseLora(models, { names: ["nope"] })).rejects.toThrow(/no LoRA adapter named "nope"/);
  });

  it("fuses into a bfloat16 UNet (float32 sum, rounded once) and unfuses exactly", async () => {
    const bf16 = await UNet.load(fixture("tiny-sd", "unet"), { dtype: "bfloat16" });
    const dir = await tempDir("sdtune-lora-bf16-");
    let ref: UNet | undefined;
    try {
      const before = await bf16.handle.stateDict();
      const base = new Map(before.map(([n, t]) => [n, t.clone()]));
      await applyLoraFile({ unet: bf16 }, FILES.peft_adapter_unet, { name: "k" });
      const live = await bf16.forward(get(g, "sample"), get(g, "timesteps"), get(g, "encoder_hidden_states"));
      expect(live.dtype).toBe("bfloat16");
      await expectClose(live, get(g, "unet_out_lora_scale_1.0"), { atol: 0.1, rtol: 0.1 }, "bf16 with LoRA");
      await fuseLora({ unet: bf16 });

      // The same bfloat16 weights held in float32, fused there (one float32 rounding), then rounded
      // to bfloat16: what "sum in float32, round once" must give, bit for bit.
      const widened: [string, Tensor][] = [];
      for (const [n, t] of base) widened.push([n, await t.to({ dtype: "float32" })]);
      await writeSafetensors(join(dir.path, "diffusion_pytorch_model.safetensors"), widened);
      await copyFile(fixture("tiny-sd", "unet", "config.json"), join(dir.path, "config.json"));
      ref = await UNet.load(dir.path);
      await applyLoraFile({ unet: ref }, FILES.peft_adapter_unet, { name: "k" });
      await fuseLora({ unet: ref });
      const refState = new Map(await ref.handle.stateDict());
      let changed = 0;
      for (const [n, t] of await bf16.handle.stateDict()) {
        expect(t.dtype).toBe("bfloat16");
        expect(bytes(t).equals(bytes(await refState.get(n)!.to({ dtype: "bfloat16" }))), n).toBe(true);
        if (!bytes(t).equals(bytes(base.get(n)!))) changed++;
      }
      expect(changed).toBe(UNET.modules); // the PEFT folder adapts the same UNet modules

      await unfuseLora({ unet: bf16 });
      for (const [n, t] of await bf16.handle.stateDict()) expect(bytes(t).equals(bytes(base.get(n)!)), n).toBe(true);
    } finally {
      bf16.dispose();
      ref?.dispose();
      await dir.cleanup();
    }
  });
});

describe("several adapters", () => {
  it("sums active adapters at their scales; set_adapters, disable and enable", async () => {
    await applyLoraFile(models, FILES.kohya, { name: "a" });
    await applyLoraFile(models, FILES.peft, { name: "b" });
    await setLoraScales(models, { a: 0.25, b: 0.25 });
    await expectClose(await unetOut(), get(g, "unet_out_lora_scale_0.5"), TOL.forward, "0.25 + 0.25");
    await expectClose(await teOut(), get(g, "te_last_hidden_lora_scale_0.5"), TOL.forward, "te 0.25 + 0.25");

    await setLoraScales(models, { b: 1.0 }); // a stays loaded, inactive
    await expectClose(await unetOut(), get(g, "unet_out_lora_scale_1.0"), TOL.forward, "b only");
    expect((await listLoras(models)).unet!.map((x) => [x.name, x.enabled])).toEqual([
      ["a", false],
      ["b", true],
    ]);

    await setLoraEnabled(models, false);
    await expectClose(await unetOut(), get(g, "unet_out_base"), TOL.forward, "disabled");
    await setLoraEnabled(models, true);
    await expectClose(await unetOut(), get(g, "unet_out_lora_scale_1.0"), TOL.forward, "enabled again");

    await expect(setLoraScales(models, { c: 1 })).rejects.toThrow(/no LoRA adapter named "c"/);
    await expect(applyLoraFile(models, FILES.kohya, { name: "a" })).rejects.toThrow(/already on this model/);
  });
});

describe("LoRAs that do not fit", () => {
  function fakeLora(entries: [string, number[], number[]][]): LoraWeights {
    const adapters = new Map(
      entries.map(([key, down, up]) => [
        key,
        {
          down: native().ops.randn(down, { seed: 1 }),
          up: native().ops.randn(up, { seed: 2 }),
          alpha: 4,
          rank: down[0]!,
        },
      ]),
    );
    return { format: "peft", adapters, metadata: {}, warnings: [] };
  }

  it("names the key and both shapes, lists unmatched keys, and attaches nothing", async () => {
    const toQ = `${FUSED_UNET.replace(/\.attn\d\.to_\w+$/, "")}.attn1.to_q`;
    const [qOut, qIn] = unetShapes.get(`${toQ}.weight`)!;
    const [cOut, cIn] = unetShapes.get("down_blocks.0.resnets.0.conv1.weight")!;
    const [c2Out, c2In] = unetShapes.get("down_blocks.0.resnets.0.conv2.weight")!;
    const [teOut, teIn] = teShapes.get("text_model.encoder.layers.0.self_attn.q_proj.weight")!;
    const weights = fakeLora([
      [`unet.${toQ}`, [4, 2 * qIn!], [qOut!, 4]],
      ["unet.down_blocks.0.resnets.0.conv1", [4, cIn!, 3, 3], [cOut!, 4, 1, 1]], // LoCon on a 3x3 conv: fits
      ["unet.down_blocks.0.resnets.0.conv2", [4, c2In!, 1, 1], [c2Out!, 4, 1, 1]], // 1x1 down on a 3x3 conv: does not
      ["unet.down_blocks.9.attentions.0.proj_in", [4, cOut!], [cOut!, 4]],
      ["unet.down_blocks.0.resnets.0.norm1", [4, cIn!], [cIn!, 4]],
      ["text_encoder.text_model.encoder.layers.0.self_attn.q_proj", [4, teIn!], [teOut!, 4]],
    ]);
    let message = "";
    try {
      await applyLora(models, weights, { name: "bad" });
    } catch (error) {
      message = (error as Error).message;
    }
    expect(message).toContain(
      `shape mismatch unet.${toQ}: LoRA down [4, ${2 * qIn!}] / up [${qOut}, 4] does not fit the model's weight [${qOut}, ${qIn}]`,
    );
    expect(message).toMatch(
      new RegExp(
        `unet\\.down_blocks\\.0\\.resnets\\.0\\.conv2: LoRA down \\[4, ${c2In}, 1, 1\\].*weight \\[${c2Out}, ${c2In}, 3, 3\\]`,
      ),
    );
    expect(message).toMatch(/unmatched key unet\.down_blocks\.9\.attentions\.0\.proj_in: no such module/);
    expect(message).toMatch(
      /unmatched key unet\.down_blocks\.0\.resnets\.0\.norm1: a .*, not a Linear or Conv2d layer/,
    );
    expect(message).not.toMatch(/conv1/);
    expect(message).toMatch(/made for another base model/);
    expect(await listLoras(models)).toEqual({ unet: [], textEncoder: [] });
    disposeLora(weights);
  });

  it("refuses components without a model, and rolls back a partial apply", async () => {
    const toQ = `${FUSED_UNET.replace(/\.attn\d\.to_\w+$/, "")}.attn1.to_q`;
    const [qOut, qIn] = unetShapes.get(`${toQ}.weight`)!;
    const [teOut, teIn] = teShapes.get("text_model.encoder.layers.0.self_attn.q_proj.weight")!;
    const weights = fakeLora([
      [`unet.${toQ}`, [4, qIn!], [qOut!, 4]],
      ["text_encoder.text_model.encoder.layers.0.self_attn.q_proj", [4, teIn!], [teOut!, 4]],
      ["text_encoder_2.text_model.encoder.layers.0.self_attn.q_proj", [4, teIn!], [teOut!, 4]],
    ]);
    await expect(applyLora({ unet }, weights)).rejects.toThrow(
      /1 adapters for "text_encoder" \(pass models.textEncoder\)[\s\S]*1 adapters for "text_encoder_2"/,
    );
    weights.adapters.delete("text_encoder_2.text_model.encoder.layers.0.self_attn.q_proj");
    weights.adapters.set(
      "text_encoder.text_model.encoder.layers.0.self_attn.nope",
      weights.adapters.get("text_encoder.text_model.encoder.layers.0.self_attn.q_proj")!,
    );
    await expect(applyLora(models, weights, { name: "half" })).rejects.toThrow(/text_encoder\..*nope: no such module/);
    expect(await listLoras(models)).toEqual({ unet: [], textEncoder: [] }); // the UNet part was removed again
    disposeLora(weights);
  });

  it("accepts a 2-D LoRA on a 1x1 conv and 1x1 weights on a Linear", async () => {
    // A Linear [out, in] and a 1x1 Conv2d [out, in, 1, 1] of the fixture's UNet.
    const [tOut, tIn] = unetShapes.get("down_blocks.0.resnets.0.time_emb_proj.weight")!;
    const [sOut, sIn] = unetShapes.get("up_blocks.0.resnets.0.conv_shortcut.weight")!;
    const weights = fakeLora([
      ["unet.down_blocks.0.resnets.0.time_emb_proj", [4, tIn!, 1, 1], [tOut!, 4, 1, 1]],
      ["unet.up_blocks.0.resnets.0.conv_shortcut", [4, sIn!], [sOut!, 4]],
    ]);
    await applyLora({ unet }, weights, { name: "shapes" });
    const params = await loraParameters(unet, "shapes");
    expect(params.map(([n, t]) => [n, t.shape])).toEqual([
      ["down_blocks.0.resnets.0.time_emb_proj.lora_A.weight", [4, tIn]],
      ["down_blocks.0.resnets.0.time_emb_proj.lora_B.weight", [tOut, 4]],
      ["up_blocks.0.resnets.0.conv_shortcut.lora_A.weight", [4, sIn, 1, 1]],
      ["up_blocks.0.resnets.0.conv_shortcut.lora_B.weight", [sOut, 4, 1, 1]],
    ]);
    disposeLora(weights);
  });
});

describe("trainable adapters (golden/lora_train.safetensors)", () => {
  const goldenNames = (prefix: string) =>
    [...train.keys()].filter((k) => k.startsWith(prefix)).map((k) => k.slice(prefix.length));
  const forward = () =>
    unet.forward(get(train, "noisy_latents"), get(train, "timesteps"), get(train, "encoder_hidden_states"));

  it("creates peft-named float32 parameters with the gaussian init (std 1/r, B = 0)", async () => {
    const lora = await createTrainableLora(unet, { targets: TARGETS, rank: TRAIN_RANK, init: "gaussian", seed: 0 });
    expect(lora.name).toBe("default_0");
    expect(lora.parameters.map(([n]) => n).sort()).toEqual(goldenNames("gaussian_init.init.").sort());
    const a: number[] = [];
    for (const [name, t] of lora.parameters) {
      expect(t.dtype).toBe("float32");
      expect(t.shape).toEqual(get(train, `gaussian_init.init.${name}`).shape);
      const values = t.toTypedArray() as Float32Array;
      if (name.endsWith("lora_B.weight")) expect(values.every((v) => v === 0)).toBe(true);
      else a.push(...values);
    }
    const mean = a.reduce((s, v) => s + v, 0) / a.length;
    const std = Math.sqrt(a.reduce((s, v) => s + (v - mean) ** 2, 0) / a.length);
    // Thousands of draws: the sample std is within a few percent of 1/r.
    expect(a.length).toBeGreaterThan(1000);
    expect(Math.abs(std - 1 / TRAIN_RANK)).toBeLessThan(0.05 / TRAIN_RANK);
    expect(Math.abs(mean)).toBeLessThan(0.01);
    // B = 0: the model's output is the base output.
    await expectClose(await forward(), get(train, "gaussian_init.model_pred_init"), TOL.forward, "gaussian init pred");

    // The same seed draws the same init.
    const again = await createTrainableLora(unet, { name: "again", targets: TARGETS, rank: TRAIN_RANK, seed: 0 });
    for (const [i, [, t]] of again.parameters.entries()) {
      expect(bytes(t).equals(bytes(lora.parameters[i]![1]))).toBe(true);
    }
  });

  it("matches the peft forward and gradients with the reference random init, checkpointing on or off", async () => {
    const init = "random_init.init.";
    const adapters = new Map<string, { down: Tensor; up: Tensor; alpha: number; rank: number }>();
    for (const name of goldenNames(init).filter((n) => n.endsWith(".lora_A.weight"))) {
      const path = name.slice(0, -".lora_A.weight".length);
      adapters.set(`unet.${path}`, {
        down: get(train, `${init}${path}.lora_A.weight`),
        up: get(train, `${init}${path}.lora_B.weight`),
        alpha: TRAIN_ALPHA, // LoraConfig(r, lora_alpha) of the reference
        rank: get(train, `${init}${path}.lora_A.weight`).shape[0]!,
      });
    }
    const name = await applyLora(
      { unet },
      { format: "peft", adapters, metadata: {}, warnings: [] },
      { trainable: true },
    );
    const params = await loraParameters(unet, name);
    expect(params.map(([n]) => n).sort()).toEqual(goldenNames(init).sort());
    await expectClose(await forward(), get(train, "random_init.model_pred_init"), TOL.forward, "random init pred");

    const run = () =>
      native().lora.unetLossAndGradients(
        unet.handle,
        get(train, "noisy_latents"),
        get(train, "timesteps"),
        get(train, "encoder_hidden_states"),
        get(train, "target"),
        name,
      );
    const plain = await run();
    expect(plain.frozenWithGrad).toEqual([]);
    expect(unet.parameterInfo().every((p) => !p.requiresGrad)).toBe(true);
    const losses = get(train, "random_init.losses").toTypedArray() as Float32Array;
    expect((plain.loss.toTypedArray() as Float32Array)[0]).toBeCloseTo(losses[0]!, 5);
    expect(plain.grads.map(([n]) => n).sort()).toEqual(goldenNames("random_init.step1_grad.").sort());
    for (const [n, grad] of plain.grads) {
      await expectClose(grad, get(train, `random_init.step1_grad.${n}`), TOL.gradient, `grad ${n}`);
    }

    unet.setGradientCheckpointing(true);
    try {
      const recomputed = await run();
      for (const [i, [n, grad]] of recomputed.grads.entries()) {
        expect(bytes(grad).equals(bytes(plain.grads[i]![1])), `checkpointing changed ${n}`).toBe(true);
      }
    } finally {
      unet.setGradientCheckpointing(false);
    }

    // The parameters are the live adapter tensors: an optimizer step on them moves the model
    // (README: compare updated parameters with atol 0.2 * lr).
    const { lr, ...hyper } = goldenAdamW("lora_train");
    const adamw = new (native().AdamW)(params, hyper);
    await adamw.step(
      lr,
      plain.grads.map(([, grad]) => grad),
    );
    for (const [n, p] of params) {
      await expectClose(p, get(train, `random_init.after_step1.${n}`), { atol: 0.2 * lr, rtol: 0 }, `step 1 ${n}`);
    }
    const moved = await run();
    const lossAfter = (moved.loss.toTypedArray() as Float32Array)[0]!;
    expect(lossAfter).toBeCloseTo(losses[1]!, 4);
    adamw.dispose();
  });

  it("matches peft target_modules: names, suffixes with dots, regular expressions, and refusals", async () => {
    const byList = await createTrainableLora(unet, { name: "list", targets: ["to_out.0", "proj_in"], rank: 2 });
    const outs = goldenNames("gaussian_init.init.").filter((n) => n.endsWith("to_out.0.lora_A.weight")).length;
    const projIn = unet.parameterInfo().filter((p) => p.name.endsWith(".proj_in.weight")).length;
    expect(projIn).toBeGreaterThan(0);
    expect(byList.parameters.length).toBe((outs + projIn) * 2);
    const regex = await createTrainableLora(unet, {
      name: "regex",
      targets: String.raw`.*attn[12]\.to_(q|k|v|out\.0)`,
      rank: TRAIN_RANK,
      init: "kaiming",
    });
    expect(regex.parameters.map(([n]) => n).sort()).toEqual(goldenNames("gaussian_init.init.").sort());
    for (const [n, t] of regex.parameters) {
      const values = t.toTypedArray() as Float32Array;
      if (n.endsWith("lora_B.weight")) expect(values.every((v) => v === 0)).toBe(true);
      else expect(values.every((v) => Math.abs(v) <= 1 / Math.sqrt(t.shape[1]!))).toBe(true);
    }
    await expect(createTrainableLora(unet, { targets: ["to_q", "to_qq"], rank: 4 })).rejects.toThrow(
      /"to_qq" matches no module/,
    );
    await expect(createTrainableLora(unet, { targets: ["attn1"], rank: 4 })).rejects.toThrow(
      /attn1 is a .*, not a Linear or Conv2d layer/,
    );
    await expect(createTrainableLora(unet, { targets: ["to_q"], rank: 0 })).rejects.toThrow(/rank/);
  });

  it("reads trained adapters back as LoraWeights that save and load in any format", async () => {
    const created = await createTrainableLora(textEncoder, {
      name: "te",
      targets: ["q_proj", "v_proj"],
      rank: 2,
      alpha: 1,
      init: "random",
      seed: 3,
    });
    expect(created.parameters.length).toBe(TE_LAYERS * 2 * 2); // layers x (q, v) x (A, B)
    const tuned = await teOut();
    const extracted = await extractLora(models, "te");
    expect([...extracted.adapters.keys()][0]).toBe("text_encoder.text_model.encoder.layers.0.self_attn.q_proj");
    const dir = await tempDir("sdtune-lora-layers-");
    try {
      await saveLora(`${dir.path}/te.safetensors`, extracted, { format: "kohya" });
      await removeLora(models, "te");
      const reloaded = await loadLoraFile(`${dir.path}/te.safetensors`);
      await applyLora(models, reloaded, { name: "back" });
      await expectClose(await teOut(), tuned, { atol: 1e-6, rtol: 1e-6 }, "saved and reloaded");
      disposeLora(reloaded);
    } finally {
      disposeLora(extracted);
      await dir.cleanup();
    }
  });
});
