// Per-block LoRA weights in the syntax of AUTOMATIC1111's "LoRA Block Weight" extension
// (hako-mikan/sd-webui-lora-block-weight): <lora:name:1:lbw=1,0,0,0,0,0,0,0,1,1,1,1,1,1,1,1,1>,
// or a preset name (lbw=OUTALL). Blocks are named after the original (LDM) UNet: BASE is the
// text encoder, IN00..IN11 the input blocks, M00 the middle block, OUT00..OUT11 the output
// blocks. 26 values give every block; the SD 1.x 17-value form gives BASE and the blocks that
// hold attention layers, and the extension sets the other nine to 1. A layer outside every
// block (conv_in, conv_out, time embedding) keeps weight 1, as there.
import { native } from "../../native/index.js";
import { diffusersToLdm, type UnetLayout } from "../../models/ldm.js";
import { underscored } from "../formats/names.js";
import { splitAdapterKey, type LoraAdapter, type LoraWeights } from "../formats/types.js";

const two = (i: number): string => String(i).padStart(2, "0");
export const LBW_BLOCKS_26: readonly string[] = [
  "BASE",
  ...Array.from({ length: 12 }, (_, i) => `IN${two(i)}`),
  "M00",
  ...Array.from({ length: 12 }, (_, i) => `OUT${two(i)}`),
];
export const LBW_BLOCKS_17: readonly string[] = [
  "BASE",
  ...["IN01", "IN02", "IN04", "IN05", "IN07", "IN08", "M00"],
  ...Array.from({ length: 9 }, (_, i) => `OUT${two(i + 3)}`),
];

/** The extension's built-in presets (17 values each). */
export const LBW_PRESETS: Readonly<Record<string, readonly number[]>> = {
  NONE: [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
  ALL: [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1],
  INS: [1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
  IND: [1, 0, 0, 0, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
  INALL: [1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
  MIDD: [1, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0],
  OUTD: [1, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0, 0],
  OUTS: [1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1],
  OUTALL: [1, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1],
  "ALL0.5": Array.from({ length: 17 }, () => 0.5),
};

/** Block name -> weight, from a preset name, "v1,v2,..." (17 or 26 values) or an array. */
export function parseBlockWeights(spec: string | readonly number[]): Map<string, number> {
  let values: readonly number[];
  if (typeof spec === "string") {
    const preset = LBW_PRESETS[spec.trim().toUpperCase()];
    values = preset ?? spec.split(",").map((v) => (v.trim() === "" ? NaN : Number(v)));
    if (!preset && values.some((v) => !Number.isFinite(v))) {
      throw new RangeError(
        `block weights "${spec}": expected a preset (${Object.keys(LBW_PRESETS).join(", ")}) ` +
          "or 17 / 26 comma-separated numbers",
      );
    }
  } else {
    values = spec;
    if (!Array.isArray(values) || values.some((v) => typeof v !== "number" || !Number.isFinite(v)))
      throw new TypeError("block weights: expected finite numbers");
  }
  const names = values.length === 17 ? LBW_BLOCKS_17 : values.length === 26 ? LBW_BLOCKS_26 : undefined;
  if (!names) {
    throw new RangeError(
      `block weights: ${values.length} values; give 17 (${LBW_BLOCKS_17.join(",")}) or 26 (BASE, IN00-IN11, M00, OUT00-OUT11)`,
    );
  }
  const out = new Map<string, number>(LBW_BLOCKS_26.map((b) => [b, 1]));
  names.forEach((name, i) => out.set(name, values[i]!));
  return out;
}

/** The block of an adapter key ("BASE", "IN04", "M00", "OUT07"), or undefined outside every block. */
export function loraBlockOf(key: string, layout: UnetLayout): string | undefined {
  const { component, path } = splitAdapterKey(key);
  if (component !== "unet") return "BASE";
  const ldm = diffusersToLdm(underscored(path), layout);
  const m = ldm && /^(input_blocks|middle_block|output_blocks)_(\d+)?/.exec(ldm);
  if (!m) return undefined;
  if (m[1] === "middle_block") return "M00";
  return `${m[1] === "input_blocks" ? "IN" : "OUT"}${two(Number(m[2]))}`;
}

/**
 * A copy of `weights` with each adapter's up multiplied by its block's weight (a block at 0
 * drops its adapters, so those layers stay exactly at the base weights). Free with disposeLora.
 */
export async function applyBlockWeights(
  weights: LoraWeights,
  blocks: Map<string, number>,
  layout: UnetLayout,
): Promise<LoraWeights> {
  checkPlainLora(weights, "block weights");
  const adapters = new Map<string, LoraAdapter>();
  for (const [key, a] of weights.adapters) {
    const block = loraBlockOf(key, layout);
    const w = block === undefined ? 1 : (blocks.get(block) ?? 1);
    if (w === 0) continue;
    const up = w === 1 ? a.up.clone() : await native().loraFiles.fold(a.up, w);
    adapters.set(key, { up, down: a.down.clone(), alpha: a.alpha, rank: a.rank });
  }
  return { ...weights, adapters };
}

/**
 * The LoRA tools (block weights, resize, merge into one LoRA) work on up @ down products; DoRA's
 * magnitude and LoHa / LoKr factors are not such products, so they are refused, not dropped.
 */
export function checkPlainLora(weights: LoraWeights, what: string, file?: string): void {
  const dora = [...weights.adapters].find(([, a]) => a.magnitude);
  const lycoris = [...(weights.lycoris ?? [])][0];
  const found = dora ? `a DoRA adapter (${dora[0]})` : lycoris ? `a ${lycoris[1].type} adapter (${lycoris[0]})` : "";
  if (found) {
    throw new Error(
      `${file ? `${file}: ` : ""}${what} work on plain LoRA (up @ down) adapters; this LoRA holds ${found}`,
    );
  }
}
