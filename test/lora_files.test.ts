// LoRA file formats against the reference fixtures: every format loads to the same
// adapters, conversions reproduce the reference files, round trips are bit-exact.
import { createHash } from "node:crypto";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { main } from "../src/cli/main.js";
import { inspectSafetensors, readSafetensors, writeSafetensors } from "../src/io/safetensors.js";
import {
  FOLDED_ALPHAS_KEY,
  kohyaHashes,
  loadLoraFile,
  saveLora,
  type LoraAdapter,
  type LoraWeights,
} from "../src/lora/index.js";
import { native, type Tensor } from "../src/native/index.js";
import { expectClose, fixture, fixtureJson, loraFixture, type LoraFacts, tempDir } from "./helpers/fixtures.js";
import { captureCli } from "./helpers/capture.js";

const lora = (...parts: string[]) => fixture("lora", ...parts);
const FILES = {
  kohya: lora("kohya", "lora.safetensors"),
  diffusers: lora("diffusers", "pytorch_lora_weights.safetensors"),
  peft: lora("peft", "pytorch_lora_weights.safetensors"),
  peft_adapter: lora("peft_adapter_unet"),
};

// The PEFT-native folder stores its own rank and lora_alpha.
const ADAPTER = fixtureJson<{ r: number; lora_alpha: number }>("lora", "peft_adapter_unet", "adapter_config.json");
/** Python's float repr for the integral alphas sd-scripts writes ("8.0"). */
const pyFloat = (x: number): string => (Number.isInteger(x) ? x.toFixed(1) : String(x));
/** sd-scripts' ss_network_* value: the one value all modules share, else "Dynamic". */
const shared = (values: number[], format: (x: number) => string): string =>
  new Set(values).size === 1 ? format(values[0]!) : "Dynamic";

let dir: { path: string; cleanup(): Promise<void> };
const loaded: Record<string, LoraWeights> = {};
let UNET: LoraFacts;
let TE: LoraFacts;
let TOTAL: number;
/** The first adapted module of each component (in the loader's sorted order). */
let unetModule: string;
let teModule: string;
beforeAll(async () => {
  dir = await tempDir("sdtune-lora-");
  for (const [name, path] of Object.entries(FILES)) loaded[name] = await loadLoraFile(path);
  ({ unet: UNET, textEncoder: TE, total: TOTAL } = await loraFixture());
  const keys = [...loaded.kohya!.adapters.keys()];
  unetModule = keys.find((k) => k.startsWith("unet."))!;
  teModule = keys.find((k) => k.startsWith("text_encoder."))!;
});
afterAll(async () => dir.cleanup());

const out = (name: string) => join(dir.path, name);
const bytes = (t: Tensor): Buffer => {
  const a = t.toTypedArray();
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength);
};
/** alpha / rank * up @ down, for comparing formats by what they do rather than how they store it. */
async function delta(a: LoraAdapter): Promise<Tensor> {
  return native().loraFiles.fold(await native().ops.matmul(a.up, a.down), a.alpha / a.rank);
}
const componentCounts = (w: LoraWeights) => {
  const counts: Record<string, number> = {};
  for (const key of w.adapters.keys()) counts[key.split(".")[0]!] = (counts[key.split(".")[0]!] ?? 0) + 1;
  return counts;
};

describe("loading the reference fixtures", () => {
  it("detects each format and finds the README's modules, ranks and alphas", () => {
    expect(Object.fromEntries(Object.entries(loaded).map(([k, w]) => [k, w.format]))).toEqual({
      kohya: "kohya",
      diffusers: "diffusers",
      peft: "peft",
      peft_adapter: "peft_adapter",
    });
    // The ranks, alphas and module counts of golden/lora.safetensors and the kohya file's keys.
    for (const name of ["kohya", "diffusers", "peft"])
      expect(componentCounts(loaded[name]!)).toEqual({ text_encoder: TE.modules, unet: UNET.modules });
    expect(componentCounts(loaded.peft_adapter!)).toEqual({ unet: UNET.modules });
    const keys = [...loaded.kohya!.adapters.keys()];
    for (const name of ["diffusers", "peft"]) expect([...loaded[name]!.adapters.keys()]).toEqual(keys);
    expect([...loaded.peft_adapter!.adapters.keys()]).toEqual(keys.filter((k) => k.startsWith("unet.")));
    for (const [key, a] of loaded.kohya!.adapters) {
      expect([a.rank, a.alpha], key).toEqual(key.startsWith("unet.") ? [UNET.rank, UNET.alpha] : [TE.rank, TE.alpha]);
    }
    // diffusers 0.27 files carry no alpha: factor 1. The PEFT folder has its own lora_alpha.
    for (const name of ["diffusers", "peft"])
      for (const a of loaded[name]!.adapters.values()) expect(a.alpha).toBe(a.rank);
    for (const a of loaded.peft_adapter!.adapters.values())
      expect([a.rank, a.alpha]).toEqual([ADAPTER.r, ADAPTER.lora_alpha]);
  });

  it("names adapters by the base models' module paths, with down [rank, in] and up [out, rank]", async () => {
    // The base weights the kohya names were resolved to: the adapters' shapes must fit them.
    const weights = async (file: string) =>
      new Map((await inspectSafetensors(file)).tensors.map((t) => [t.name, t.shape]));
    const unet = await weights(fixture("tiny-sd", "unet", "diffusion_pytorch_model.safetensors"));
    const te = await weights(fixture("tiny-sd", "text_encoder", "model.safetensors"));
    for (const [key, a] of loaded.kohya!.adapters) {
      const [component, ...path] = key.split(".");
      const base = (component === "unet" ? unet : te).get(`${path.join(".")}.weight`);
      expect(base, `${key}: a module of the base model`).toEqual(expect.any(Array));
      expect(a.down.shape, `${key} down`).toEqual([a.rank, base![1]]);
      expect(a.up.shape, `${key} up`).toEqual([base![0], a.rank]);
    }
    expect(loaded.kohya!.adapters.has(unetModule) && loaded.kohya!.adapters.has(teModule)).toBe(true);
  });

  it("gives every format the same effective delta alpha/rank * up @ down", async () => {
    for (const [key, k] of loaded.kohya!.adapters) {
      const reference = await delta(k);
      for (const name of ["diffusers", "peft", "peft_adapter"]) {
        const other = loaded[name]!.adapters.get(key);
        if (!other) continue;
        await expectClose(await delta(other), reference, { atol: 1e-6, rtol: 1e-5 }, `${name} ${key}`);
      }
    }
  });

  it("accepts folders and resolves kohya names against the base model", async () => {
    const viaFolder = await loadLoraFile(lora("diffusers"));
    expect(viaFolder.adapters.size).toBe(TOTAL);
    const { baseModuleNamesFromModel } = await import("../src/lora/formats/names.js");
    const base = await baseModuleNamesFromModel(fixture("tiny-sd"));
    const withBase = await loadLoraFile(FILES.kohya, { baseModuleNames: base });
    expect([...withBase.adapters.keys()]).toEqual([...loaded.kohya!.adapters.keys()]);
  });
});

describe("converting", () => {
  it("kohya -> diffusers / peft reproduces the reference files bit for bit", async () => {
    for (const format of ["diffusers", "peft"] as const) {
      const result = await saveLora(out(`from-kohya-${format}.safetensors`), loaded.kohya!, { format });
      expect(result.folded).toBe(TOTAL);
      const written = await readSafetensors(result.path);
      const reference = await readSafetensors(FILES[format]);
      expect([...written.tensors.keys()].sort()).toEqual([...reference.tensors.keys()].sort());
      for (const [name, t] of reference.tensors)
        expect(bytes(written.tensors.get(name)!).equals(bytes(t)), name).toBe(true);
      expect(written.metadata.format).toBe("pt");
      const record = JSON.parse(written.metadata[FOLDED_ALPHAS_KEY]!) as Record<string, number>;
      expect(Object.keys(record)).toHaveLength(TOTAL);
      expect(record[unetModule]).toEqual(
        Number.isInteger(Math.log2(UNET.alpha / UNET.rank))
          ? UNET.alpha
          : expect.objectContaining({ alpha: UNET.alpha }),
      );
    }
  });

  it("diffusers -> kohya has the reference kohya file's keys and shapes", async () => {
    const result = await saveLora(out("from-diffusers.safetensors"), loaded.diffusers!, { format: "kohya" });
    const written = await inspectSafetensors(result.path);
    const reference = await inspectSafetensors(FILES.kohya);
    const shapes = (h: typeof written) => Object.fromEntries(h.tensors.map((t) => [t.name, [t.dtype, t.shape]]));
    expect(shapes(written)).toEqual(shapes(reference));
    expect(written.metadata.ss_network_module).toBe("networks.lora");
    // diffusers files carry no alpha: alpha = rank in every module.
    expect(written.metadata.ss_network_dim).toBe(shared([UNET.rank, TE.rank], String));
    expect(written.metadata.ss_network_alpha).toBe(shared([UNET.rank, TE.rank], pyFloat));
  });

  it("round trip diffusers -> kohya -> diffusers is bit-exact", async () => {
    const kohya = await loadLoraFile(out("from-diffusers.safetensors"));
    const back = await saveLora(out("diffusers-again.safetensors"), kohya, { format: "diffusers" });
    expect(back.folded).toBe(0);
    const written = await readSafetensors(back.path);
    const reference = await readSafetensors(FILES.diffusers);
    expect([...written.tensors.keys()].sort()).toEqual([...reference.tensors.keys()].sort());
    for (const [name, t] of reference.tensors)
      expect(bytes(written.tensors.get(name)!).equals(bytes(t)), name).toBe(true);
    expect(written.metadata[FOLDED_ALPHAS_KEY]).toBeUndefined();
  });

  it("round trip kohya -> diffusers -> kohya is bit-exact, also where alpha/rank is not a power of two", async () => {
    const viaDiffusers = await loadLoraFile(out("from-kohya-diffusers.safetensors"));
    expect(viaDiffusers.warnings).toEqual([]);
    for (const [key, a] of viaDiffusers.adapters) {
      expect([a.alpha, a.originalAlpha], key).toEqual([a.rank, loaded.kohya!.adapters.get(key)!.alpha]);
    }
    const result = await saveLora(out("kohya-again.safetensors"), viaDiffusers, { format: "kohya" });
    expect(result).toMatchObject({ unfolded: TOTAL, inexact: 0 });
    const again = await readSafetensors(result.path);
    const reference = await readSafetensors(FILES.kohya);
    expect([...again.tensors.keys()].sort()).toEqual([...reference.tensors.keys()].sort());
    for (const [name, t] of reference.tensors)
      expect(bytes(again.tensors.get(name)!).equals(bytes(t)), name).toBe(true);
    // From here on the chain is exact to the byte: kohya -> diffusers -> kohya writes the same files.
    const d2 = await saveLora(out("diffusers-2.safetensors"), await loadLoraFile(result.path), { format: "diffusers" });
    const k2 = await saveLora(out("kohya-2.safetensors"), await loadLoraFile(d2.path), { format: "kohya" });
    expect((await readFile(k2.path)).equals(await readFile(result.path))).toBe(true);
    expect((await readFile(d2.path)).equals(await readFile(out("from-kohya-diffusers.safetensors")))).toBe(true);
  });

  it("records a last-bit correction only where folding is not invertible, and guards it", async () => {
    // The reference adapters with alpha/rank 2 on the UNet (exact in float) and 1.5 on the
    // text encoder (not), whatever factors the fixture set has.
    const factor = (key: string): number => (key.startsWith("unet.") ? 2 : 1.5);
    const custom: LoraWeights = {
      ...loaded.kohya!,
      adapters: new Map([...loaded.kohya!.adapters].map(([k, a]) => [k, { ...a, alpha: a.rank * factor(k) }])),
    };
    const file = (await saveLora(out("factors.safetensors"), custom, { format: "diffusers" })).path;
    const metadata = (await inspectSafetensors(file)).metadata;
    const record = JSON.parse(metadata[FOLDED_ALPHAS_KEY]!) as Record<string, unknown>;
    // UNet factor 2: plain alpha. Text encoder factor 1.5: alpha + correction + fingerprint.
    expect(record[unetModule]).toBe(UNET.rank * 2);
    expect(record[teModule]).toMatchObject({ alpha: TE.rank * 1.5 });
    // Without the correction (e.g. the up weights were edited) the alpha still comes back and
    // up is unfolded to a float that folds to the stored value: within one ulp of the original.
    const viaDiffusers = await loadLoraFile(file);
    let differing = 0;
    for (const [key, a] of viaDiffusers.adapters) {
      if (!a.foldResidual) continue;
      const plain = await native().loraFiles.unfold(a.up, a.originalAlpha! / a.rank);
      const exact = await native().loraFiles.unfold(a.up, a.originalAlpha! / a.rank, a.foldResidual);
      expect(bytes(exact.tensor).equals(bytes(loaded.kohya!.adapters.get(key)!.up)), key).toBe(true);
      const p = new Int32Array(Float32Array.from(plain.tensor.toTypedArray() as Float32Array).buffer);
      const e = new Int32Array(Float32Array.from(exact.tensor.toTypedArray() as Float32Array).buffer);
      for (let i = 0; i < p.length; i++) {
        expect(Math.abs(p[i]! - e[i]!), `${key}[${i}]`).toBeLessThanOrEqual(1);
        if (p[i] !== e[i]) differing++;
      }
      const refolded = await native().loraFiles.fold(plain.tensor, a.originalAlpha! / a.rank);
      expect(bytes(refolded).equals(bytes(a.up)), key).toBe(true);
    }
    expect(differing).toBeGreaterThan(0); // the correction is needed for factor 1.5
    // A file whose up no longer matches its record's fingerprint: alpha kept, correction dropped, warned.
    const contents = await readSafetensors(file);
    const module = [...custom.adapters.keys()].filter((k) => k.startsWith("text_encoder.")).at(-1)!;
    expect(module).not.toBe(teModule);
    const changed = new Map(contents.tensors);
    const upKey = `${module}.lora_linear_layer.up.weight`;
    changed.set(upKey, await native().loraFiles.fold(contents.tensors.get(upKey)!, 2));
    await writeSafetensors(out("edited.safetensors"), changed, contents.metadata);
    const edited = await loadLoraFile(out("edited.safetensors"));
    expect(edited.warnings.join("\n")).toContain(`the up weights of "${module}" changed since the record was written`);
    expect(edited.adapters.get(module)).toMatchObject({ alpha: TE.rank, originalAlpha: TE.rank * 1.5 });
    expect(edited.adapters.get(module)!.foldResidual).toBeUndefined();
    // The other modules keep their corrections, byte for byte.
    const kept = edited.adapters.get(teModule)!.foldResidual;
    expect(kept?.shape).toEqual(viaDiffusers.adapters.get(teModule)!.foldResidual!.shape);
    expect(bytes(kept!).equals(bytes(viaDiffusers.adapters.get(teModule)!.foldResidual!))).toBe(true);
  });

  it("PEFT adapter folder -> kohya keeps lora_alpha and the raw up weights", async () => {
    const result = await saveLora(out("adapter.safetensors"), loaded.peft_adapter!, { format: "kohya" });
    const back = await loadLoraFile(result.path);
    expect(back.adapters.size).toBe(UNET.modules);
    for (const [key, a] of loaded.peft_adapter!.adapters) {
      const b = back.adapters.get(key)!;
      expect([b.alpha, b.rank]).toEqual([ADAPTER.lora_alpha, ADAPTER.r]);
      expect(bytes(b.up).equals(bytes(a.up)) && bytes(b.down).equals(bytes(a.down)), key).toBe(true);
      // The adapter's raw up is kohya's up (README: same adapter in every file).
      expect(bytes(a.up).equals(bytes(loaded.kohya!.adapters.get(key)!.up)), key).toBe(true);
    }
  });

  it("writes kohya metadata as sd-scripts does, hashes included", async () => {
    const result = await saveLora(out("meta.safetensors"), loaded.kohya!, {
      format: "kohya",
      metadata: { ss_base_model_version: "sd_v2", ss_resolution: "(512, 512)", ss_network_dim: "999" },
    });
    const file = await readFile(result.path);
    const header = await inspectSafetensors(result.path);
    const m = header.metadata;
    expect(m).toMatchObject({
      ss_base_model_version: "sd_v2",
      ss_resolution: "(512, 512)",
      ss_network_module: "networks.lora",
      ss_network_dim: shared([UNET.rank, TE.rank], String), // describes the tensors, whatever the caller says
      // "Dynamic" where the UNet and text encoder alphas differ, as sd-scripts' resize_lora writes it
      ss_network_alpha: shared([UNET.alpha, TE.alpha], pyFloat),
    });
    // sshs_model_hash = sha256 of the data area of the file (tensors in writer order).
    expect(m.sshs_model_hash).toBe(
      createHash("sha256")
        .update(file.subarray(8 + header.headerSize))
        .digest("hex"),
    );
    expect(m.sshs_legacy_hash).toBe(
      createHash("sha256").update(file.subarray(0x100000, 0x110000)).digest("hex").slice(0, 8),
    );
  });

  it("computes the legacy hash over the bytes at 1 MiB of the file sd-scripts would write", async () => {
    // Big enough that [1 MiB, 1 MiB + 64 KiB) falls in the tensor data.
    const { tensorFrom } = await import("../src/tensor.js");
    const up = native().ops.randn([512, 320], { seed: 1 });
    const down = native().ops.randn([320, 512], { seed: 2 });
    const alpha = tensorFrom(new Float32Array([1]), []);
    const entries: [string, Tensor][] = [
      ["lora_unet_conv_in.lora_down.weight", down],
      ["lora_unet_conv_in.lora_up.weight", up],
      ["lora_unet_conv_in.alpha", alpha],
    ];
    const ss = { ss_network_module: "networks.lora", ss_tag_frequency: '{"a": {"b": 1}}' };
    // A file holding exactly what sd-scripts hashes: these tensors and only the ss_* metadata.
    await writeSafetensors(out("hash.safetensors"), entries, ss);
    const file = await readFile(out("hash.safetensors"));
    expect(file.length).toBeGreaterThan(0x110000);
    const hashes = kohyaHashes(entries, { ...ss, modelspec_title: "not hashed" });
    expect(hashes.sshs_legacy_hash).toBe(
      createHash("sha256").update(file.subarray(0x100000, 0x110000)).digest("hex").slice(0, 8),
    );
    const headerSize = Number(file.readBigUInt64LE(0));
    expect(hashes.sshs_model_hash).toBe(
      createHash("sha256")
        .update(file.subarray(8 + headerSize))
        .digest("hex"),
    );
  });
});

describe("sdtune lora (CLI)", () => {
  const run = (argv: string[]) => captureCli(() => main(argv));

  it("convert writes the same file as saveLora, into a folder for diffusers", async () => {
    const folder = out("cli-diffusers/");
    const r = await run(["lora", "convert", FILES.kohya, "--to", "diffusers", "--out", folder]);
    expect(r.code).toBe(0);
    expect(r.out).toContain(`alpha/rank folded into up for ${TOTAL} modules`);
    const written = await readFile(join(folder, "pytorch_lora_weights.safetensors"));
    expect(written.equals(await readFile(out("from-kohya-diffusers.safetensors")))).toBe(true);
    const back = await run([
      "lora",
      "convert",
      folder,
      "--to",
      "kohya",
      "--out",
      out("cli-kohya.safetensors"),
      "--base",
      fixture("tiny-sd"),
    ]);
    expect(back.code).toBe(0);
    expect((await readFile(out("cli-kohya.safetensors"))).equals(await readFile(out("kohya-again.safetensors")))).toBe(
      true,
    );
  });

  it("inspect prints format, ranks, alphas and blocks; --json is machine-readable", async () => {
    const text = await run(["lora", "inspect", FILES.kohya]);
    expect(text.code).toBe(0);
    expect(text.out).toMatch(/format\s+kohya/);
    for (const [name, f] of [
      ["unet", UNET],
      ["text_encoder", TE],
    ] as const) {
      expect(text.out).toContain(`${name}: rank ${f.rank}, alpha ${f.alpha}, scale alpha/rank ${f.alpha / f.rank}`);
    }
    const mid = [...loaded.kohya!.adapters.keys()].filter((k) => k.startsWith("unet.mid_block.")).length;
    expect(text.out).toMatch(new RegExp(`mid_block\\s+${mid}\\s+attn1\\.to_k`));
    const json = await run(["lora", "inspect", FILES.peft_adapter, "--json"]);
    const parsed = JSON.parse(json.out) as {
      format: string;
      modules: number;
      components: { unet: { alphas: object } };
    };
    expect(parsed).toMatchObject({
      format: "peft_adapter",
      modules: UNET.modules,
      components: { unet: { alphas: { [ADAPTER.lora_alpha]: UNET.modules } } },
    });
  });

  it("reports usage errors and bad files", async () => {
    expect((await run(["lora", "convert", FILES.kohya, "--to", "ckpt", "--out", out("x")])).code).toBe(2);
    expect((await run(["lora", "frobnicate"])).code).toBe(2);
    const bad = await run(["lora", "inspect", fixture("tiny-sd", "unet", "diffusion_pytorch_model.safetensors")]);
    expect(bad.code).toBe(1);
    expect(bad.err).toContain("no LoRA keys found");
  });
});
