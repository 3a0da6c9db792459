import { copyFile, mkdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { readSafetensors, writeSafetensors } from "../src/io/safetensors.js";
import { TextEncoder } from "../src/models/text_encoder.js";
import { native, type Tensor } from "../src/native/index.js";
import { tensorFrom } from "../src/tensor.js";
import { expectClose, fixture, fixtureJson, get, golden, TOL, tempDir } from "./helpers/fixtures.js";

const TE_DIR = fixture("tiny-sd", "text_encoder");
// The fixture's own config: sizes come from it, never from this file.
interface ClipTextJson {
  hidden_size: number;
  intermediate_size: number;
  num_hidden_layers: number;
  num_attention_heads: number;
  max_position_embeddings: number;
  vocab_size: number;
  hidden_act: string;
  layer_norm_eps: number;
  eos_token_id: number;
}
const CONFIG = fixtureJson<ClipTextJson>("tiny-sd", "text_encoder", "config.json");
const LAYERS = CONFIG.num_hidden_layers;
/** A parameter name of encoder layer `i`. */
const layer = (i: number, rest: string): string => `text_model.encoder.layers.${i}.${rest}`;

let ref: Map<string, Tensor>;
let te: TextEncoder;
let ids: Tensor;
let dir: { path: string; cleanup(): Promise<void> };

beforeAll(async () => {
  ref = await golden("text_encoder");
  ids = get(ref, "input_ids");
  te = await TextEncoder.load(TE_DIR);
  dir = await tempDir();
});
afterAll(async () => {
  te.dispose();
  await dir.cleanup();
});

/** Row `i` of a stacked [k, ...] golden tensor, as its own tensor. */
function stackedRow(stack: Tensor, i: number): Tensor {
  const all = stack.toTypedArray() as Float32Array;
  const size = all.length / stack.shape[0]!;
  return tensorFrom(all.slice(i * size, (i + 1) * size), stack.shape.slice(1));
}

/** A copy of the text encoder folder with config.json edited. */
async function editedFolder(name: string, edit: (config: Record<string, unknown>) => void): Promise<string> {
  const out = join(dir.path, name);
  await mkdir(out, { recursive: true });
  const config = JSON.parse(await readFile(join(TE_DIR, "config.json"), "utf8")) as Record<string, unknown>;
  edit(config);
  await writeFile(join(out, "config.json"), JSON.stringify(config));
  await copyFile(join(TE_DIR, "model.safetensors"), join(out, "model.safetensors"));
  return out;
}

describe("TextEncoder parity with transformers CLIPTextModel (golden/text_encoder)", () => {
  it("last_hidden_state, pooler_output and every hidden state", async () => {
    const out = await te.forward(ids, { outputHiddenStates: true });
    await expectClose(out.lastHiddenState, get(ref, "last_hidden_state"), TOL.forward, "last_hidden_state");
    await expectClose(out.pooledOutput, get(ref, "pooler_output"), TOL.forward, "pooler_output");
    const stack = get(ref, "hidden_states");
    expect(out.hiddenStates).toHaveLength(stack.shape[0]!);
    for (let i = 0; i < stack.shape[0]!; i++) {
      await expectClose(out.hiddenStates![i]!, stackedRow(stack, i), TOL.forward, `hidden_states[${i}]`);
    }
    const n = out.hiddenStates!.length;
    await expectClose(out.hiddenStates![n - 2]!, get(ref, "hidden_states_penultimate"), TOL.forward, "penultimate");
  });

  it("does not return hidden states unless asked", async () => {
    const out = await te.forward(ids);
    expect(out.hiddenStates).toBeUndefined();
    expect(out.lastHiddenState.shape).toEqual([...ids.shape, CONFIG.hidden_size]);
  });

  it("clipSkip 1 = final_layer_norm(hidden_states[-2]), as diffusers' encode_prompt", async () => {
    const expected = get(ref, "clip_skip_1_prompt_embeds");
    const skipped = await te.forward(ids, { clipSkip: 1 });
    await expectClose(skipped.lastHiddenState, expected, TOL.forward, "clip_skip_1 (skipped layers not run)");
    const full = await te.forward(ids, { clipSkip: 1, outputHiddenStates: true });
    await expectClose(full.lastHiddenState, expected, TOL.forward, "clip_skip_1 (all layers run)");
    expect(full.hiddenStates).toHaveLength(LAYERS + 1);
    // Both paths pool the same clip-skipped state.
    expect(native().ops.maxAbsDiff(full.pooledOutput, skipped.pooledOutput)).toBe(0);
  });

  it("ignores the position_ids buffer of older checkpoints", async () => {
    const folder = join(dir.path, "with-position-ids");
    await mkdir(folder, { recursive: true });
    await copyFile(join(TE_DIR, "config.json"), join(folder, "config.json"));
    const weights = await readSafetensors(join(TE_DIR, "model.safetensors"));
    const P = CONFIG.max_position_embeddings;
    const positions = tensorFrom(
      BigInt64Array.from({ length: P }, (_, i) => BigInt(i)),
      [1, P],
    );
    weights.tensors.set("text_model.embeddings.position_ids", positions);
    await writeSafetensors(join(folder, "model.safetensors"), weights.tensors, { format: "pt" });
    const old = await TextEncoder.load(folder);
    const out = await old.forward(ids);
    await expectClose(out.lastHiddenState, get(ref, "last_hidden_state"), TOL.forward, "last_hidden_state");
    old.dispose();
  });

  it("runs concurrent calls on one model one at a time, with the same results", async () => {
    const [a, b] = await Promise.all([te.forward(ids), te.forward(ids)]);
    expect(native().ops.maxAbsDiff(a.lastHiddenState, b.lastHiddenState)).toBe(0);
  });
});

describe("TextEncoder dtypes", () => {
  it("bfloat16 weights run on the CPU and stay near the float32 reference", async () => {
    const bf = await TextEncoder.load(TE_DIR, { dtype: "bfloat16" });
    expect(bf.dtype).toBe("bfloat16");
    const out = await bf.forward(ids);
    expect(out.lastHiddenState.dtype).toBe("bfloat16");
    // bfloat16 keeps 8 bits of mantissa: ~1e-2 relative per op.
    await expectClose(out.lastHiddenState, get(ref, "last_hidden_state"), { atol: 0.1, rtol: 0.05 }, "bf16");
    bf.dispose();
  });

  it("float16 on the CPU works where libtorch supports it and is refused clearly where not", async () => {
    const major = Number(native().info().libtorchVersion.split(".")[0]);
    const load = TextEncoder.load(TE_DIR, { dtype: "float16" });
    if (major < 2) {
      await expect(load).rejects.toThrow(/cannot run matmul\/layer_norm in Half on the CPU.*"float32" or "bfloat16"/);
      return;
    }
    const half = await load;
    const out = await half.forward(ids);
    await expectClose(out.lastHiddenState, get(ref, "last_hidden_state"), { atol: 0.02, rtol: 0.01 }, "fp16");
    half.dispose();
  });
});

describe("TextEncoder gradient checkpointing", () => {
  const params = [
    "text_model.embeddings.position_embedding.weight",
    layer(0, "self_attn.q_proj.weight"),
    layer(Math.min(1, LAYERS - 1), "mlp.fc1.bias"),
    layer(LAYERS - 1, "self_attn.out_proj.weight"),
    "text_model.final_layer_norm.bias",
  ];
  const rows = 2;
  const length = (): number => get(ref, "input_ids").shape[1]!;
  const small = () =>
    tensorFrom((get(ref, "input_ids").toTypedArray() as BigInt64Array).slice(0, rows * length()), [rows, length()]);

  async function gradients(on: boolean, parameters: string[], clipSkip = 0) {
    te.setGradientCheckpointing(on);
    expect(te.gradientCheckpointing).toBe(on);
    try {
      return await te.lossAndGradients(small(), { parameters, clipSkip });
    } finally {
      te.setGradientCheckpointing(false);
    }
  }

  it("gives the same loss and gradients on and off", async () => {
    const off = await gradients(false, params);
    const on = await gradients(true, params);
    expect(on.loss).toBe(off.loss);
    for (const name of params) {
      const a = off.gradients[name]!;
      expect(a.shape.length).toBeGreaterThan(0);
      expect(native().ops.maxAbsDiff(a, on.gradients[name]!), name).toBe(0);
    }
    // d sum(LN(x) * w + b) / db = number of rows: an exact check that backward really ran.
    const bias = off.gradients["text_model.final_layer_norm.bias"]!.toTypedArray() as Float32Array;
    expect(new Set(bias)).toEqual(new Set([rows * length()]));
    const q = on.gradients[layer(0, "self_attn.q_proj.weight")]!.toTypedArray() as Float32Array;
    expect(q.some((v) => v !== 0)).toBe(true);
  });

  it("reaches a first-layer weight when the embeddings are frozen", async () => {
    const name = layer(0, "mlp.fc2.weight");
    const off = await gradients(false, [name]);
    const on = await gradients(true, [name]);
    const g = on.gradients[name]!.toTypedArray() as Float32Array;
    expect(g.some((v) => v !== 0)).toBe(true);
    expect(native().ops.maxAbsDiff(off.gradients[name]!, on.gradients[name]!)).toBe(0);
  });

  it("with clip skip, the skipped layers get no gradient", async () => {
    const name = layer(LAYERS - 1, "mlp.fc1.weight");
    const { gradients: g } = await gradients(true, [name, layer(LAYERS - 2, "mlp.fc1.weight")], 1);
    expect((g[name]!.toTypedArray() as Float32Array).every((v) => v === 0)).toBe(true);
  });

  it("names an unknown parameter", async () => {
    await expect(te.lossAndGradients(small(), { parameters: ["text_model.nope.weight"] })).rejects.toThrow(
      /no parameter "text_model.nope.weight"/,
    );
  });
});

describe("TextEncoder errors", () => {
  it("lists every checkpoint/config mismatch with names and shapes", async () => {
    const { hidden_size: H, intermediate_size: I } = CONFIG;
    const smallerI = I - 16;
    const folder = await editedFolder("mismatch", (c) => {
      c.intermediate_size = smallerI;
      c.num_hidden_layers = LAYERS - 1;
    });
    const error = (await TextEncoder.load(folder).catch((e: unknown) => e)) as Error;
    expect(error).toBeInstanceOf(Error);
    expect(error.message).toMatch(/text_encoder: the checkpoint does not match the model config/);
    expect(error.message).toContain(
      `text_model.encoder.layers.0.mlp.fc1.weight: checkpoint [${I}, ${H}], model [${smallerI}, ${H}]`,
    );
    // 16 tensors per CLIP layer (q/k/v/out and fc1/fc2 weights and biases, two LayerNorms).
    expect(error.message).toMatch(
      new RegExp(
        `in the checkpoint but not in the model \\(16\\):\\n\\s+text_model\\.encoder\\.layers\\.${LAYERS - 1}\\.`,
      ),
    );
    expect(error.message).toContain(join(folder, "model.safetensors"));
  });

  it("names the file, field and value of an unsupported config value", async () => {
    const act = await editedFolder("bad-act", (c) => (c.hidden_act = "tanh_gelu_2000"));
    await expect(TextEncoder.load(act)).rejects.toThrow(
      new RegExp(`${join(act, "config.json")}: invalid CLIP config: hidden_act = "tanh_gelu_2000": unsupported`),
    );
    const H = CONFIG.hidden_size;
    const k = [5, 7, 11, 13].find((n) => H % n !== 0)!;
    const heads = await editedFolder("bad-heads", (c) => (c.num_attention_heads = k));
    await expect(TextEncoder.load(heads)).rejects.toThrow(
      `num_attention_heads = ${k}: hidden_size ${H} is not divisible by num_attention_heads ${k}`,
    );
    const dropout = await editedFolder("bad-dropout", (c) => (c.attention_dropout = 0.1));
    await expect(TextEncoder.load(dropout)).rejects.toThrow(/attention_dropout = 0\.1: only 0\.0 is supported/);
  });

  it("the native loader checks the config itself too", async () => {
    const config = {
      vocabSize: CONFIG.vocab_size,
      hiddenSize: CONFIG.hidden_size,
      intermediateSize: CONFIG.intermediate_size,
      numHiddenLayers: CONFIG.num_hidden_layers,
      numAttentionHeads: CONFIG.num_attention_heads,
      maxPositionEmbeddings: CONFIG.max_position_embeddings,
      hiddenAct: "swiglu",
      layerNormEps: CONFIG.layer_norm_eps,
      eosTokenId: CONFIG.eos_token_id,
    };
    const files = [join(TE_DIR, "model.safetensors")];
    expect(() => native().TextEncoder.load({ config, files })).toThrow(
      /text_config\.hidden_act "swiglu" is not supported/,
    );
    expect(() => native().TextEncoder.load({ config: { ...config, hiddenAct: "gelu" }, files: [] })).toThrow(
      /options\.files must name at least one/,
    );
  });

  it("says which file is missing", async () => {
    const empty = join(dir.path, "empty");
    await mkdir(empty, { recursive: true });
    await expect(TextEncoder.load(empty)).rejects.toThrow(`${join(empty, "config.json")}: file not found`);
    await copyFile(join(TE_DIR, "config.json"), join(empty, "config.json"));
    await expect(TextEncoder.load(empty)).rejects.toThrow(/no weights found/);
    // A variant the folder lacks falls back to the plain weights, as diffusers does, with a warning.
    const warnings: string[] = [];
    const fallback = await TextEncoder.load(TE_DIR, { variant: "fp16", onWarning: (m) => warnings.push(m) });
    expect(warnings).toEqual([expect.stringMatching(/no "fp16" variant weights .*using model\.safetensors instead/)]);
    fallback.dispose();
    await writeFile(join(empty, "pytorch_model.bin"), "not really a pickle");
    await expect(TextEncoder.load(empty)).rejects.toThrow(/only pickled weights found \(pytorch_model\.bin\)/);
  });

  it("refuses bad inputs before and after crossing into native code", async () => {
    await expect(te.forward(tensorFrom(new Float32Array(4), [1, 4]))).rejects.toThrow(/int64 \[batch, length\]/);
    await expect(te.forward(ids, { clipSkip: LAYERS + 1 })).rejects.toThrow(
      `clipSkip ${LAYERS + 1} must be an integer in [0, ${LAYERS}]`,
    );
    const P = CONFIG.max_position_embeddings;
    const long = tensorFrom(new BigInt64Array(P + 1), [1, P + 1]);
    await expect(te.forward(long)).rejects.toThrow(`${P + 1} tokens per row, more than max_position_embeddings ${P}`);
    const V = CONFIG.vocab_size;
    const outOfVocab = tensorFrom(BigInt64Array.from([0n, BigInt(V)]), [1, 2]);
    await expect(te.forward(outOfVocab)).rejects.toThrow(`token id ${V} outside [0, ${V})`);
  });

  it("dispose() is idempotent and a disposed encoder says so", async () => {
    const other = await TextEncoder.load(TE_DIR);
    const pending = other.forward(ids);
    other.dispose(); // work already queued keeps the model
    other.dispose();
    expect(other.disposed).toBe(true);
    await expect(pending).resolves.toHaveProperty("lastHiddenState");
    await expect(other.forward(ids)).rejects.toThrow(/TextEncoder is disposed/);
  });

  it("loads the text tower of a CLIPModel folder", async () => {
    const clipText = await TextEncoder.load(fixture("tiny-clip"));
    const { text_config: text } = fixtureJson<{ text_config: { hidden_size: number; eos_token_id?: number } }>(
      "tiny-clip",
      "config.json",
    );
    const vocab = fixtureJson<Record<string, number>>("tiny-clip", "vocab.json");
    // transformers' CLIPTextConfig default eos_token_id is the "<|endoftext|>" id when the config has none.
    const eos = text.eos_token_id ?? vocab["<|endoftext|>"]!;
    expect(clipText.config.hidden_size).toBe(text.hidden_size);
    expect(clipText.config.eos_token_id).toBe(eos);
    const prompt = [vocab["<|startoftext|>"]!, vocab["a</w>"]!, eos].map(BigInt);
    const out = await clipText.forward(tensorFrom(BigInt64Array.from(prompt), [1, 3]));
    expect(out.pooledOutput.shape).toEqual([1, text.hidden_size]);
    clipText.dispose();
  });
});
