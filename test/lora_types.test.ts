// DoRA, LoHa and LoKr against their reference code: test/golden/lora_types.safetensors holds, per
// case, seeded factors on one fixture UNet layer with the output, the gradients of sum(y * g) and
// the merged weight that LyCORIS' functional code (LoHa, LoKr) and peft's DoRA layers computed
// (scripts/golden/lora_types.py). Tolerances: the fixtures' float32 forward / gradient tolerances;
// merged weights 1e-5 (one float32 product chain against another).
import { join } from "node:path";

import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";

import { readSafetensors, writeSafetensors } from "../src/io/safetensors.js";
import {
  applyLora,
  applyLoraFile,
  createTrainableLora,
  disposeLora,
  extractLora,
  fuseLora,
  listLoras,
  loadLoraFile,
  removeLora,
  saveLora,
  setLoraScales,
  unfuseLora,
  type LoraWeights,
} from "../src/lora/index.js";
import { UNet } from "../src/models/unet.js";
import { native, type Tensor } from "../src/native/index.js";
import { tensorFrom } from "../src/tensor.js";
import { expectClose, fixture, get, repoRoot, tempDir, TOL, values } from "./helpers/fixtures.js";

interface Case {
  path: string;
  type: "dora" | "loha" | "lokr";
  alpha: number;
  rank: number;
  factor?: number;
  decompose_both?: boolean;
}

const TIGHT = { atol: 1e-5, rtol: 1e-5 };
let unet: UNet;
let g: Map<string, Tensor>;
let cases: [string, Case][];
let dir: { path: string; cleanup(): Promise<void> };

beforeAll(async () => {
  unet = await UNet.load(fixture("tiny-sd", "unet"));
  const file = await readSafetensors(join(repoRoot, "test", "golden", "lora_types.safetensors"));
  g = file.tensors;
  cases = Object.entries(file.metadata)
    .filter(([, v]) => v.startsWith("{"))
    .map(([k, v]) => [k, JSON.parse(v) as Case]);
  dir = await tempDir("sdtune-lora-types-");
});
afterAll(async () => {
  unet.dispose();
  await dir.cleanup();
});
afterEach(async () => {
  await unfuseLora({ unet });
  for (const a of (await listLoras({ unet })).unet ?? []) await removeLora({ unet }, a.name);
});

/** The golden case's factors as LoraWeights for the UNet. */
function weightsOf(name: string, c: Case): LoraWeights {
  const key = `unet.${c.path}`;
  const factors = Object.fromEntries(
    [...g]
      .filter(([k]) => k.startsWith(`${name}.`) && !/\.(x|g|y|merged)$/.test(k) && !k.includes(".grad."))
      .map(([k, t]) => [k.slice(name.length + 1), t]),
  );
  const weights: LoraWeights = { format: "kohya", adapters: new Map(), metadata: {}, warnings: [] };
  if (c.type === "dora") {
    const { lora_A: down, lora_B: up, magnitude } = factors;
    const out = up!.shape[0]!;
    weights.adapters.set(key, {
      down: down!,
      up: up!,
      alpha: c.alpha,
      rank: c.rank,
      magnitude: magnitude!.reshape([out]),
    });
  } else {
    weights.lycoris = new Map([[key, { type: c.type, factors, alpha: c.alpha, rank: c.rank }]]);
  }
  return weights;
}

/** Our parameter name for a golden factor name. */
const paramName = (path: string, factor: string): string =>
  `${path}.${{ lora_A: "lora_A.weight", lora_B: "lora_B.weight", magnitude: "lora_magnitude_vector" }[factor] ?? factor}`;

async function baseWeight(path: string): Promise<Tensor> {
  const t = new Map(await unet.handle.stateDict()).get(`${path}.weight`);
  if (!t) throw new Error(`no weight ${path}`);
  return t.clone();
}

const bytes = (t: Tensor): Buffer => {
  const a = t.toTypedArray();
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength);
};

describe("each type against its reference (LyCORIS functional code, peft's DoRA layers)", () => {
  it("output and gradients of one layer match, fuse gives the reference merged weight, unfuse restores it exactly", async () => {
    expect(cases.map(([, c]) => c.type).sort()).toEqual(["dora", "dora", "loha", "loha", "lokr", "lokr", "lokr"]);
    for (const [name, c] of cases) {
      const before = await baseWeight(c.path);
      await applyLora({ unet }, weightsOf(name, c), { name, trainable: true });
      const r = await native().lora.layerForward(unet.handle, c.path, name, get(g, `${name}.x`), get(g, `${name}.g`));
      await expectClose(r.output, get(g, `${name}.y`), TOL.forward, `${name} output`);
      const grads = new Map(r.grads);
      const goldenGrads = [...g.keys()].filter((k) => k.startsWith(`${name}.grad.`));
      expect(grads.size, name).toBe(goldenGrads.length);
      for (const k of goldenGrads) {
        const factor = k.slice(`${name}.grad.`.length);
        const ours = grads.get(paramName(c.path, factor));
        expect(ours, `${name}: gradient of ${factor}`).toBeDefined();
        const expected = get(g, k);
        await expectClose(ours!, expected.reshape(ours!.shape), TOL.gradient, `${name} grad ${factor}`);
      }
      expect(await fuseLora({ unet }, { names: [name] })).toEqual({ unet: 1 });
      await expectClose(await baseWeight(c.path), get(g, `${name}.merged`), TIGHT, `${name} merged`);
      expect(await unfuseLora({ unet })).toEqual({ unet: 1 });
      expect(bytes(await baseWeight(c.path)).equals(bytes(before)), `${name} unfused`).toBe(true);
      await removeLora({ unet }, name);
    }
  });

  it("creates LyCORIS' factor shapes (its factorization, decompose_both); every new type starts at the base output", async () => {
    for (const [name, c] of cases) {
      const [x, dy] = [get(g, `${name}.x`), get(g, `${name}.g`)];
      const base = (await native().lora.layerForward(unet.handle, c.path, "", x, dy)).output;
      const options = { factor: c.factor, decomposeBoth: c.decompose_both, seed: 1 };
      const targets = `${c.path.replace(/\./g, "\\.")}`;
      const created = await createTrainableLora(unet, { name, targets, ...c, ...options });
      const r = await native().lora.layerForward(unet.handle, c.path, name, x, dy);
      await expectClose(r.output, base, { atol: 1e-6, rtol: 0 }, `${name}: a new adapter changes nothing yet`);
      const params = new Map(created.parameters.map(([n, t]) => [n.slice(c.path.length + 1), t]));
      if (c.type === "dora") {
        // peft's init: m = ||W + s B A|| per output channel, with B = 0 here: ||W||.
        const w = await values(await baseWeight(c.path));
        const m = await values(params.get("lora_magnitude_vector")!);
        const per = w.length / m.length;
        for (let o = 0; o < m.length; o++) {
          const norm = Math.hypot(...w.subarray(o * per, (o + 1) * per));
          expect(Math.abs(m[o]! - norm), `${name} magnitude ${o}`).toBeLessThan(1e-5 * norm);
        }
      } else {
        const flat = (s: number[]) => [s[0], s.slice(1).reduce((a, b) => a * b, 1)];
        const goldenShapes = [...g]
          .filter(([k]) => k.startsWith(`${name}.grad.`))
          .map(([k, t]) => [k.slice(`${name}.grad.`.length), flat(t.shape)]);
        const ours = [...params].map(([n, t]) => [n, flat(t.shape)]);
        expect(Object.fromEntries(ours), name).toEqual(Object.fromEntries(goldenShapes));
      }
      await removeLora({ unet }, name);
    }
  });
});

describe("files in the LyCORIS / kohya layout (what A1111 and ComfyUI read)", () => {
  it("saves every type with LyCORIS' keys and alpha, and loads it back to the same outputs", async () => {
    for (const [name, c] of cases) {
      await applyLora({ unet }, weightsOf(name, c), { name });
      const [x, dy] = [get(g, `${name}.x`), get(g, `${name}.g`)];
      const before = (await native().lora.layerForward(unet.handle, c.path, "", x, dy)).output;
      const weights = await extractLora({ unet }, name);
      const file = join(dir.path, `${name}.safetensors`);
      await saveLora(file, weights, { format: "kohya" });
      disposeLora(weights);
      const stem = `lora_unet_${c.path.replace(/\./g, "_")}`;
      const saved = await readSafetensors(file);
      const keys = [...saved.tensors.keys()].map((k) => k.slice(stem.length + 1)).sort();
      const expected = [...g.keys()]
        .filter((k) => k.startsWith(`${name}.grad.`))
        .map(
          (k) =>
            ({ lora_A: "lora_down.weight", lora_B: "lora_up.weight", magnitude: "dora_scale" })[
              k.slice(`${name}.grad.`.length)
            ] ?? k.slice(`${name}.grad.`.length),
        );
      expect(keys, name).toEqual([...expected, "alpha"].sort());
      expect(saved.metadata.ss_network_alpha, name).toBe(c.alpha.toFixed(1));
      expect(saved.metadata.ss_network_module, name).toBe("lycoris.kohya");
      expect(JSON.parse(saved.metadata.ss_network_args!).algo, name).toBe(c.type === "dora" ? "lora" : c.type);
      if (c.type === "dora") {
        const scale = saved.tensors.get(`${stem}.dora_scale`)!;
        expect(
          scale.shape.slice(1).every((d) => d === 1),
          "dora_scale is [out, 1, ...]",
        ).toBe(true);
      }
      await removeLora({ unet }, name);
      await applyLoraFile({ unet }, file, { name });
      const after = (await native().lora.layerForward(unet.handle, c.path, "", x, dy)).output;
      await expectClose(after, before, { atol: 0, rtol: 0 }, `${name} reloaded`);
      await expectClose(after, get(g, `${name}.y`), TOL.forward, `${name} reloaded vs reference`);
      await removeLora({ unet }, name);
    }
  });

  it("DoRA also goes through PEFT / diffusers keys (lora_magnitude_vector, as peft saves it)", async () => {
    for (const [name, c] of cases.filter(([, k]) => k.type === "dora")) {
      await applyLora({ unet }, weightsOf(name, c), { name });
      const weights = await extractLora({ unet }, name);
      for (const format of ["peft", "diffusers"] as const) {
        const file = join(dir.path, `${name}-${format}.safetensors`);
        await saveLora(file, weights, { format });
        const saved = await readSafetensors(file);
        const magnitude = saved.tensors.get(`unet.${c.path}.lora_magnitude_vector.weight`);
        expect(magnitude?.shape, `${name} ${format}`).toEqual(get(g, `${name}.magnitude`).shape);
        await applyLoraFile({ unet }, file, { name: format });
        await setLoraScales({ unet }, { [format]: 1 });
        const [x, dy] = [get(g, `${name}.x`), get(g, `${name}.g`)];
        const out = (await native().lora.layerForward(unet.handle, c.path, "", x, dy)).output;
        await expectClose(out, get(g, `${name}.y`), TOL.forward, `${name} via ${format}`);
        await removeLora({ unet }, format);
      }
      disposeLora(weights);
      await removeLora({ unet }, name);
    }
  });

  it("refuses what it cannot apply exactly, naming the key", async () => {
    const [name, c] = cases.find(([, k]) => k.type === "loha")!;
    const weights = weightsOf(name, c);
    await expect(saveLora(join(dir.path, "x"), weights, { format: "diffusers" })).rejects.toThrow(
      /save LoHa and LoKr as "kohya".*is LoHa/s,
    );
    const stem = `lora_unet_${c.path.replace(/\./g, "_")}`;
    const tucker = join(dir.path, "tucker.safetensors");
    const w1a = get(g, `${name}.hada_w1_a`);
    await writeSafetensors(tucker, [
      [`${stem}.hada_w1_a`, w1a],
      [`${stem}.hada_t1`, w1a],
    ]);
    await expect(loadLoraFile(tucker)).rejects.toThrow(
      /hada_t1.*Tucker-decomposed LoHa\/LoKr \(use_tucker\) is not supported/,
    );
    const [dname, dc] = cases.find(([, k]) => k.type === "dora" && !k.path.includes("conv"))!;
    const inputAxis = join(dir.path, "input-axis.safetensors");
    const down = get(g, `${dname}.lora_A`);
    await writeSafetensors(inputAxis, [
      [`${stem}.lora_down.weight`, down],
      [`${stem}.lora_up.weight`, get(g, `${dname}.lora_B`)],
      [`${stem}.dora_scale`, tensorFrom(new Float32Array(down.shape[1]!).fill(1), [1, down.shape[1]!])],
    ]);
    expect(dc.type).toBe("dora");
    await expect(loadLoraFile(inputAxis)).rejects.toThrow(/dora_scale.*input axis/);
  });
});
