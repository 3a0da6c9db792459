// LyCORIS adapters (LoHa, LoKr) and DoRA's dora_scale in kohya-layout files, the keys LyCORIS
// writes and AUTOMATIC1111 / ComfyUI read: <kohya name>.hada_w1_a / hada_w1_b / hada_w2_a /
// hada_w2_b, .lokr_w1 (or .lokr_w1_a + .lokr_w1_b), .lokr_w2 (or .lokr_w2_a + .lokr_w2_b), .alpha,
// .dora_scale. Tucker (hada_t1/t2, lokr_t2) is refused by name.
import type { Tensor } from "../../native/index.js";
import { tensorFrom } from "../../tensor.js";
import type { LoraWeights, LycorisAdapter, LycorisType } from "./types.js";

const LOHA = ["hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b"] as const;
const LOKR = ["lokr_w1", "lokr_w1_a", "lokr_w1_b", "lokr_w2", "lokr_w2_a", "lokr_w2_b"] as const;
const FACTOR_KEY = new RegExp(`^([^.]+)\\.(${[...LOHA, ...LOKR].join("|")})$`);

/** The kohya name and factor of a LoHa / LoKr key, or undefined. */
export function lycorisKey(fileKey: string): { name: string; factor: string } | undefined {
  const m = FACTOR_KEY.exec(fileKey);
  return m ? { name: m[1]!, factor: m[2]! } : undefined;
}

/** Kohya names (the part before the first dot) that carry LoHa / LoKr factors. */
export function lycorisNames(keys: Iterable<string>): Set<string> {
  const out = new Set<string>();
  for (const key of keys) {
    const k = lycorisKey(key);
    if (k) out.add(k.name);
  }
  return out;
}

const fmt = (s: number[]) => `[${s.join(", ")}]`;

/** Collects LoHa / LoKr factors per module and checks them into LycorisAdapters. */
export class LycorisCollector {
  private readonly entries = new Map<string, { factors: Record<string, Tensor>; alpha?: number; name: string }>();

  add(module: string, name: string, factor: string, tensor: Tensor, problems: string[]): void {
    const entry = this.entries.get(module) ?? { factors: {}, name };
    if (entry.factors[factor]) problems.push(`module "${module}" has "${name}.${factor}" twice`);
    entry.factors[factor] = tensor;
    this.entries.set(module, entry);
  }

  setAlpha(module: string, name: string, alpha: number): void {
    const entry = this.entries.get(module) ?? { factors: {}, name };
    entry.alpha = alpha;
    this.entries.set(module, entry);
  }

  finish(problems: string[]): Map<string, LycorisAdapter> {
    const out = new Map<string, LycorisAdapter>();
    for (const [module, entry] of this.entries) {
      const adapter = checkFactors(entry.name, entry.factors, entry.alpha, problems);
      if (adapter) out.set(module, adapter);
    }
    return out;
  }
}

/** The type, rank and alpha of one module's factors (shapes beyond these are checked against the model natively). */
function checkFactors(
  name: string,
  factors: Record<string, Tensor>,
  alpha: number | undefined,
  problems: string[],
): LycorisAdapter | undefined {
  const names = Object.keys(factors);
  const type: LycorisType = names[0]!.startsWith("hada_") ? "loha" : "lokr";
  const expected: readonly string[] = type === "loha" ? LOHA : LOKR;
  const before = problems.length;
  if (names.some((n) => !expected.includes(n))) problems.push(`"${name}": mixes LoHa and LoKr factors`);
  for (const [n, t] of Object.entries(factors)) {
    if (!/^(float32|float16|bfloat16|float64)$/.test(t.dtype)) problems.push(`"${name}.${n}": dtype ${t.dtype}`);
    if (t.shape.length < 2) problems.push(`"${name}.${n}": shape ${fmt(t.shape)} is not a matrix`);
  }
  if (type === "loha") {
    const missing = LOHA.filter((n) => !factors[n]);
    if (missing.length) problems.push(`"${name}": LoHa factors ${missing.join(", ")} are missing`);
  } else {
    for (const w of ["w1", "w2"]) {
      const full = !!factors[`lokr_${w}`];
      const a = !!factors[`lokr_${w}_a`];
      const b = !!factors[`lokr_${w}_b`];
      if (full === (a || b) || a !== b) problems.push(`"${name}": LoKr needs lokr_${w} or lokr_${w}_a + lokr_${w}_b`);
    }
  }
  if (problems.length > before) return undefined;
  const rank = lycorisRank(type, factors);
  // LyCORIS: a missing or zero alpha means alpha = rank (scale 1).
  return { type, factors, rank, alpha: alpha === undefined || alpha === 0 ? rank : alpha };
}

/** LyCORIS' rank of LoHa / LoKr factors (0: a LoKr of two full factors, which has scale 1). */
export function lycorisRank(type: LycorisType, f: Record<string, Tensor>): number {
  if (type === "loha") return f.hada_w1_b!.shape[0]!;
  return f.lokr_w1_b?.shape[0] ?? f.lokr_w2_b?.shape[0] ?? 0;
}

/** Kohya-layout entries of one LoHa / LoKr module (the factors as they are, and alpha). */
export function lycorisEntries(name: string, adapter: LycorisAdapter, created: Tensor[]): [string, Tensor][] {
  const alpha = tensorFrom(new Float32Array([adapter.alpha]), []);
  created.push(alpha);
  const order: readonly string[] = adapter.type === "loha" ? LOHA : LOKR;
  const out: [string, Tensor][] = order
    .filter((n) => adapter.factors[n])
    .map((n): [string, Tensor] => [`${name}.${n}`, adapter.factors[n]!]);
  out.push([`${name}.alpha`, alpha]);
  return out;
}

/**
 * A dora_scale tensor as a [out] magnitude: LyCORIS' wd_on_output layout [out, 1] / [out, 1, 1, 1]
 * (what sdtune writes; peft's per-output-channel DoRA). LyCORIS' default input-axis layout
 * [1, in, ...] is another decomposition and is refused.
 */
export function magnitudeFromDoraScale(key: string, t: Tensor, out: number, problems: string[]): Tensor | undefined {
  const s = t.shape;
  if (s.length >= 2 && s[0] === out && s.slice(1).every((d) => d === 1)) return t.reshape([out]);
  if (s.length >= 2 && s[0] === 1) {
    problems.push(
      `"${key}": ${fmt(s)} is DoRA decomposed along the input axis (LyCORIS' default, wd_on_output=False); ` +
        "sdtune applies DoRA as peft does, per output channel ([out, 1]): retrain with sdtune or LyCORIS wd_on_output=True",
    );
    return undefined;
  }
  problems.push(`"${key}": dora_scale ${fmt(s)} does not fit the module's ${out} output channels`);
  return undefined;
}

/** peft's lora_magnitude_vector ([out]; a Conv2d's [1, out, 1, 1]) as a [out] magnitude. */
export function magnitudeFromPeft(key: string, t: Tensor, out: number, problems: string[]): Tensor | undefined {
  const s = t.shape;
  const fits =
    (s.length === 1 && s[0] === out) || (s.length === 4 && s[1] === out && s[0] === 1 && s[2] === 1 && s[3] === 1);
  if (fits) return t.reshape([out]);
  problems.push(`"${key}": DoRA magnitude ${fmt(s)} does not fit the module's ${out} output channels`);
  return undefined;
}

/** peft's lora_magnitude_vector entry for a magnitude [out]: [out] (Linear) or [1, out, 1, 1] (Conv2d). */
export function peftMagnitudeEntry(key: string, magnitude: Tensor, conv: boolean): [string, Tensor] {
  const out = magnitude.shape[0]!;
  return [`${key}.lora_magnitude_vector.weight`, magnitude.reshape(conv ? [1, out, 1, 1] : [out])];
}

/** The dora_scale entry for a magnitude [out] of a Linear ([out, 1]) or Conv2d ([out, 1, 1, 1]) module. */
export function doraScaleEntry(name: string, magnitude: Tensor, conv: boolean): [string, Tensor] {
  const out = magnitude.shape[0]!;
  return [`${name}.dora_scale`, magnitude.reshape(conv ? [out, 1, 1, 1] : [out, 1])];
}

/**
 * LyCORIS' network entries for a file holding LoHa, LoKr or DoRA modules (none for plain LoRA):
 * ss_network_module "lycoris.kohya" and ss_network_args {"algo": ...} (DoRA: LyCORIS' dora_wd and
 * wd_on_output flags), unless the caller gave them.
 */
export function lycorisNetworkMetadata(weights: LoraWeights, given: Record<string, string>): Record<string, string> {
  const algo = weights.lycoris?.values().next().value?.type;
  const dora = [...weights.adapters.values()].some((a) => a.magnitude);
  if (!algo && !dora) return {};
  const args = { algo: algo ?? "lora", ...(dora ? { dora_wd: "True", wd_on_output: "True" } : {}) };
  return {
    ss_network_module: given.ss_network_module ?? "lycoris.kohya",
    ss_network_args: given.ss_network_args ?? JSON.stringify(args),
  };
}
