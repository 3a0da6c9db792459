// LoRA tools on the fixture model and LoRA: extraction from (base + the fixture LoRA merged
// in) recovers the LoRA's products; resize keeps the top singular values; several LoRAs
// merged into one equal the weighted sum of their products; block weights at 0 leave their
// layers at the base weights; an incompatible file names its first misfit and its base.
import { basename, join } from "node:path";

import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { main } from "../src/cli/main.js";
import { writeSafetensors } from "../src/io/safetensors.js";
import {
  applyLoraFile,
  disposeLora,
  extractLoraFromModels,
  fuseLora,
  IncompatibleLoraError,
  loadLoraFile,
  loraBlockOf,
  mergeLoraIntoModel,
  mergeLoras,
  parseBlockWeights,
  resizeLora,
  saveLora,
  toKohyaName,
  type LoraAdapter,
  type LoraWeights,
} from "../src/lora/index.js";
import { unetLayoutFromModuleNames } from "../src/models/ldm.js";
import { TextEncoder } from "../src/models/text_encoder.js";
import { UNet } from "../src/models/unet.js";
import { native } from "../src/native/index.js";
import { readSafetensors } from "../src/io/safetensors.js";
import { captureCli } from "./helpers/capture.js";
import { fixture, loraFixture, tempDir } from "./helpers/fixtures.js";

const BASE = fixture("tiny-sd");
const KOHYA = fixture("lora", "kohya", "lora.safetensors");

let dir: { path: string; cleanup(): Promise<void> };
let tuned: string;
let reference: LoraWeights;
beforeAll(async () => {
  dir = await tempDir("sdtune-lora-tools-");
  tuned = join(dir.path, "tuned");
  await mergeLoraIntoModel({ base: BASE, loras: [{ path: KOHYA }], out: tuned });
  reference = await loadLoraFile(KOHYA);
});
afterAll(async () => {
  disposeLora(reference);
  await dir.cleanup();
});

/** alpha / rank * up @ down as float64 numbers (a conv's factors as 2-D matrices). */
async function product(a: LoraAdapter, scale = 1): Promise<Float64Array> {
  const up = a.up.reshape([a.up.shape[0]!, a.rank]);
  const down = a.down.reshape([a.rank, a.down.numel / a.rank]);
  const p = await native().ops.matmul(await up.to({ dtype: "float64" }), await down.to({ dtype: "float64" }));
  const values = Float64Array.from(p.toTypedArray() as Float64Array, (v) => (v * scale * a.alpha) / a.rank);
  p.dispose();
  return values;
}

/** max |a - b| / max |b|. */
function relativeError(a: Float64Array, b: Float64Array): number {
  expect(a.length).toBe(b.length);
  let diff = 0;
  let size = 0;
  for (let i = 0; i < a.length; i++) {
    diff = Math.max(diff, Math.abs(a[i]! - b[i]!));
    size = Math.max(size, Math.abs(b[i]!));
  }
  return diff / size;
}

const frobenius2 = (x: Float64Array): number => x.reduce((s, v) => s + v * v, 0);

/** Singular values of one adapter's product (every one, descending). */
async function singularValues(a: LoraAdapter): Promise<number[]> {
  const r = await native().loraTools.lowRankOfProduct(a.up, a.down, a.alpha / a.rank, { rank: a.rank });
  const s = [...(r.singular.toTypedArray() as Float64Array)];
  for (const t of [r.up, r.down, r.singular]) t?.dispose();
  return s;
}

describe("extractLoraFromModels", () => {
  it("recovers a merged-in LoRA's products to float32 precision and skips unchanged layers", async () => {
    // Asked for twice the LoRA's rank: each layer keeps only its numerical rank (the LoRA's).
    const facts = await loraFixture();
    const result = await extractLoraFromModels({ base: BASE, tuned, rank: 2 * facts.unet.rank, convRank: 2 });
    try {
      const keys = [...result.weights.adapters.keys()];
      expect(keys).toEqual([...reference.adapters.keys()]);
      expect(result.skipped.length).toBeGreaterThan(0);
      for (const s of result.skipped) expect(s.relativeNorm).toBe(0);
      for (const [key, ref] of reference.adapters) {
        const got = result.weights.adapters.get(key)!;
        expect(got.rank, key).toBe(ref.rank);
        expect(got.alpha, key).toBe(got.rank);
        expect(relativeError(await product(got), await product(ref)), key).toBeLessThan(1e-5);
      }
      for (const layer of result.layers) expect(layer.energy).toBeCloseTo(1, 6);
      // The base it was made from, for incompatible-file errors (the fixture is not 1024 wide: not SD 2.x).
      expect(result.weights.metadata.ss_sd_model_name).toBe(basename(BASE));
      expect(result.weights.metadata.ss_v2).toBe("False");
    } finally {
      disposeLora(result.weights);
    }
  });

  it("keeps the top singular values at a lower rank and reports the energy left", async () => {
    const result = await extractLoraFromModels({ base: BASE, tuned, rank: 2 });
    try {
      expect(result.layers.length).toBe(reference.adapters.size);
      for (const layer of result.layers.filter((_, i) => i % 4 === 0)) {
        const ref = await singularValues(reference.adapters.get(layer.key)!);
        const got = await singularValues(result.weights.adapters.get(layer.key)!);
        expect(layer.rank).toBe(2);
        expect(got[0]! / ref[0]! - 1).toBeLessThan(1e-5);
        expect(Math.abs(got[1]! / ref[1]! - 1)).toBeLessThan(1e-4);
        const total = ref.reduce((s, v) => s + v * v, 0);
        expect(layer.energy).toBeCloseTo((ref[0]! ** 2 + ref[1]! ** 2) / total, 5);
      }
    } finally {
      disposeLora(result.weights);
    }
  });
});

describe("resizeLora", () => {
  it("to the same rank is the identity product; lower ranks keep the top singular values", async () => {
    const same = await resizeLora(reference, { rank: 4 });
    const two = await resizeLora(reference, { rank: 2 });
    try {
      for (const [key, ref] of reference.adapters) {
        expect(relativeError(await product(same.weights.adapters.get(key)!), await product(ref)), key).toBeLessThan(
          1e-6,
        );
      }
      // The spectrum checks on a few layers of each model (each takes several native calls).
      const some = [...reference.adapters].filter((_, i) => i % 6 === 0);
      for (const [key, ref] of some) {
        const small = two.weights.adapters.get(key)!;
        expect(small.rank).toBe(2);
        expect(small.alpha / small.rank).toBe(ref.alpha / ref.rank);
        const s = await singularValues(ref);
        const p = await product(ref);
        // The singular values are those of the product (their squares sum to its norm)...
        expect(s.reduce((t, v) => t + v * v, 0) / frobenius2(p)).toBeCloseTo(1, 5);
        // ...and the rank-2 product is the best rank-2 approximation (Eckart-Young).
        const q = await product(small);
        const residual = frobenius2(p.map((v, i) => v - q[i]!));
        expect(residual / (s[2]! ** 2 + s[3]! ** 2)).toBeCloseTo(1, 4);
        const kept = await singularValues(small);
        expect(kept.map((v, i) => v / s[i]!)).toEqual([expect.closeTo(1, 5), expect.closeTo(1, 5)]);
      }
    } finally {
      disposeLora(same.weights);
      disposeLora(two.weights);
    }
  });

  it("an energy target keeps the fewest singular values that hold it", async () => {
    const result = await resizeLora(reference, { energy: 0.5 });
    try {
      for (const layer of result.layers) {
        const s = await singularValues(reference.adapters.get(layer.key)!);
        const total = s.reduce((t, v) => t + v * v, 0);
        const before = s.slice(0, layer.rank - 1).reduce((t, v) => t + v * v, 0) / total;
        expect(layer.energy).toBeGreaterThanOrEqual(0.5);
        expect(before).toBeLessThan(0.5);
      }
    } finally {
      disposeLora(result.weights);
    }
  });
});

describe("mergeLoras and `lora merge --into-lora`", () => {
  it("concatenated ranks give exactly the weighted sum of the products; --rank re-decomposes", async () => {
    const b = join(dir.path, "b");
    const small = await resizeLora(reference, { rank: 2 });
    await saveLora(b, small.weights, { format: "peft" });
    disposeLora(small.weights);
    const bWeights = await loadLoraFile(b);
    const out = join(dir.path, "merged.safetensors");
    const cli = await captureCli(() => main(["lora", "merge", `${KOHYA}:0.7`, `${b}:0.3`, "--into-lora", out]));
    expect(cli.code).toBe(0);
    const merged = await loadLoraFile(out);
    const redone = await mergeLoras(
      [
        { path: KOHYA, scale: 0.7 },
        { path: b, scale: 0.3 },
      ],
      { rank: 4 },
    );
    try {
      for (const [key, ref] of reference.adapters) {
        const want = await product(ref, 0.7);
        const other = await product(bWeights.adapters.get(key)!, 0.3);
        const sum = want.map((v, i) => v + other[i]!);
        const got = merged.adapters.get(key)!;
        expect(got.rank).toBe(ref.rank + 2);
        expect(relativeError(await product(got), sum), key).toBeLessThan(1e-6);
        // The sum has rank <= 4 here (B is A's top-2 part), so rank 4 is still exact.
        expect(redone.weights.adapters.get(key)!.rank).toBe(4);
        expect(relativeError(await product(redone.weights.adapters.get(key)!), sum), key).toBeLessThan(1e-5);
      }
    } finally {
      disposeLora(merged);
      disposeLora(bWeights);
      disposeLora(redone.weights);
    }
  });
});

describe("block weights (LoRA Block Weight syntax)", () => {
  it("reads presets and 17 / 26 values; the 17-value form leaves the other blocks at 1", () => {
    const outall = parseBlockWeights("OUTALL");
    expect([outall.get("BASE"), outall.get("IN01"), outall.get("M00"), outall.get("OUT03")]).toEqual([1, 0, 0, 1]);
    expect(outall.get("IN00")).toBe(1);
    const list = parseBlockWeights("1,0,0,0,0,0,0,0,1,1,1,1,1,1,1,1,0.5");
    expect(list.get("OUT11")).toBe(0.5);
    expect(parseBlockWeights(Array.from({ length: 26 }, (_, i) => i)).get("OUT11")).toBe(25);
    expect(() => parseBlockWeights("1,2,3")).toThrow(/3 values/);
    expect(() => parseBlockWeights("NOPE")).toThrow(/preset/);
  });

  it("a block at 0 leaves its layers at the base weights exactly; the others change", async () => {
    const unet = await UNet.load(join(BASE, "unet"));
    const textEncoder = await TextEncoder.load(join(BASE, "text_encoder"));
    const plain = await UNet.load(join(BASE, "unet"));
    const plainTe = await TextEncoder.load(join(BASE, "text_encoder"));
    try {
      const layout = unetLayoutFromModuleNames(
        native()
          .lora.modules(unet.handle)
          .map((m) => m.path),
      )!;
      const zeroed = [...reference.adapters.keys()].filter((k) => loraBlockOf(k, layout) === "IN01");
      expect(zeroed.length).toBeGreaterThan(0);
      // BASE (the text encoder) and IN01 at 0, everything else at 1.
      const spec = "0,0,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1";
      await applyLoraFile({ unet, textEncoder }, KOHYA, { blockWeights: spec });
      await fuseLora({ unet, textEncoder }, { permanent: true });
      const weights = new Map([...(await unet.stateDict()), ...(await textEncoder.stateDict())]);
      const base = new Map([...(await plain.stateDict()), ...(await plainTe.stateDict())]);
      for (const key of reference.adapters.keys()) {
        const path = `${key.slice(key.indexOf(".") + 1)}.weight`;
        const diff = native().ops.maxAbsDiff(weights.get(path)!, base.get(path)!);
        const block = loraBlockOf(key, layout);
        if (block === "IN01" || block === "BASE") expect(diff, key).toBe(0);
        else expect(diff, key).toBeGreaterThan(0);
      }
    } finally {
      for (const m of [unet, textEncoder, plain, plainTe]) m.dispose();
    }
  });
});

describe("incompatible LoRA files", () => {
  it("name the first key that does not fit and the base from the kohya metadata", async () => {
    const { tensors, metadata } = await readSafetensors(KOHYA);
    const bad = [...tensors].map(([k, t]): [string, typeof t] =>
      k.endsWith(".lora_down.weight") && k.startsWith("lora_unet_")
        ? [k, native().ops.randn([t.shape[0]!, t.shape[1]! + 3], { seed: 1 })]
        : [k, t],
    );
    const file = join(dir.path, "other-base.safetensors");
    await writeSafetensors(file, bad, {
      ...metadata,
      ss_base_model_version: "sdxl_base_v1-0",
      ss_sd_model_name: "sd_xl_base_1.0.safetensors",
    });
    const unet = await UNet.load(join(BASE, "unet"));
    const textEncoder = await TextEncoder.load(join(BASE, "text_encoder"));
    try {
      const error = await applyLoraFile({ unet, textEncoder }, file, { name: "x" }).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(IncompatibleLoraError);
      const e = error as IncompatibleLoraError;
      const firstUnetKey = [...reference.adapters.keys()].find((k) => k.startsWith("unet."))!;
      expect(e.firstMisfit).toContain(`${firstUnetKey}:`);
      expect(e.firstMisfit).toContain(`(file key "${toKohyaName(firstUnetKey)}.lora_down.weight")`);
      expect(e.message).toContain(e.firstMisfit);
      expect(e.message).toContain("sdxl_base_v1-0");
      expect(e.message).toContain("sd_xl_base_1.0.safetensors");
    } finally {
      unet.dispose();
      textEncoder.dispose();
    }
  });
});
