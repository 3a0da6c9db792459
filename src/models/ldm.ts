// The original LDM / CompVis (and SGM) UNet module names, as older AUTOMATIC1111
// LoRAs and sd-scripts' SDXL LoRAs use them, mapped to and from diffusers names.
// Both sides are in kohya's underscore form ("input_blocks_1_1_proj_in" <->
// "down_blocks_0_attentions_0_proj_in"). Which LDM index is which diffusers block
// depends on the UNet's layout, so the table is built from one.

/** What the block mapping needs to know about a UNet. */
export interface UnetLayout {
  layersPerBlock: number;
  /** Per down block: has attentions / has a downsampler. */
  downAttention: boolean[];
  downsample: boolean[];
  /** Per up block (diffusers order): has attentions / has an upsampler. */
  upAttention: boolean[];
  upsample: boolean[];
}

/** SD 1.x and 2.x (CrossAttnDownBlock2D x3 + DownBlock2D, layers_per_block 2). */
export const SD_UNET_LAYOUT: UnetLayout = {
  layersPerBlock: 2,
  downAttention: [true, true, true, false],
  downsample: [true, true, true, false],
  upAttention: [false, true, true, true],
  upsample: [true, true, true, false],
};

/** SDXL base (DownBlock2D + CrossAttnDownBlock2D x2, layers_per_block 2). */
export const SDXL_UNET_LAYOUT: UnetLayout = {
  layersPerBlock: 2,
  downAttention: [false, true, true],
  downsample: [true, true, false],
  upAttention: [true, true, false],
  upsample: [true, true, false],
};

/** The layout of a UNet from its module (or parameter) names; undefined if they hold no down blocks. */
export function unetLayoutFromModuleNames(names: Iterable<string>): UnetLayout | undefined {
  const seen = new Set<string>();
  let blocks = 0;
  let layers = 0;
  for (const name of names) {
    const m = /^(down|up)_blocks\.(\d+)\.(attentions|resnets|downsamplers|upsamplers)\.(\d+)\./.exec(`${name}.`);
    if (!m) continue;
    const [, side, block, kind, index] = m;
    seen.add(`${side}.${block}.${kind}`);
    if (side === "down") blocks = Math.max(blocks, Number(block) + 1);
    if (side === "down" && block === "0" && kind === "resnets") layers = Math.max(layers, Number(index) + 1);
  }
  if (blocks === 0 || layers === 0) return undefined;
  const per = (side: string, kind: string) =>
    Array.from({ length: blocks }, (_, i) => seen.has(`${side}.${i}.${kind}`));
  return {
    layersPerBlock: layers,
    downAttention: per("down", "attentions"),
    downsample: per("down", "downsamplers"),
    upAttention: per("up", "attentions"),
    upsample: per("up", "upsamplers"),
  };
}

type Kind = "resnet" | "attention" | "leaf";
/** One LDM block and its diffusers counterpart, as dotted module paths ("input_blocks.1.0" <-> "down_blocks.0.resnets.0"). */
export interface LdmBlockPair {
  ldm: string;
  diffusers: string;
  kind: Kind;
}

// Inside a resnet block the two codebases name the layers differently; inside an
// attention block (SpatialTransformer / Transformer2DModel) the names are the same.
/** Resnet sublayers, LDM dotted name -> diffusers name. */
export const LDM_RESNET_LAYERS: Readonly<Record<string, string>> = {
  "in_layers.0": "norm1",
  "in_layers.2": "conv1",
  "emb_layers.1": "time_emb_proj",
  "out_layers.0": "norm2",
  "out_layers.3": "conv2",
  skip_connection: "conv_shortcut",
};
const underscore = (name: string): string => name.replace(/\./g, "_");
const RESNET_LDM_TO_DIFFUSERS: Record<string, string> = Object.fromEntries(
  Object.entries(LDM_RESNET_LAYERS).map(([k, v]) => [underscore(k), v]),
);
const RESNET_DIFFUSERS_TO_LDM = Object.fromEntries(Object.entries(RESNET_LDM_TO_DIFFUSERS).map(([k, v]) => [v, k]));

/** Every block of a UNet of `layout`, LDM and diffusers dotted module paths side by side. */
export function ldmBlockPairs(layout: UnetLayout): LdmBlockPair[] {
  const L = layout.layersPerBlock;
  const pairs: LdmBlockPair[] = [
    { ldm: "input_blocks.0.0", diffusers: "conv_in", kind: "leaf" },
    { ldm: "time_embed.0", diffusers: "time_embedding.linear_1", kind: "leaf" },
    { ldm: "time_embed.2", diffusers: "time_embedding.linear_2", kind: "leaf" },
    { ldm: "label_emb.0.0", diffusers: "add_embedding.linear_1", kind: "leaf" },
    { ldm: "label_emb.0.2", diffusers: "add_embedding.linear_2", kind: "leaf" },
    { ldm: "middle_block.0", diffusers: "mid_block.resnets.0", kind: "resnet" },
    { ldm: "middle_block.1", diffusers: "mid_block.attentions.0", kind: "attention" },
    { ldm: "middle_block.2", diffusers: "mid_block.resnets.1", kind: "resnet" },
    { ldm: "out.0", diffusers: "conv_norm_out", kind: "leaf" },
    { ldm: "out.2", diffusers: "conv_out", kind: "leaf" },
  ];
  // input_blocks: 1 + i*(L+1) + j holds down block i's resnet j (.0) and attention j (.1);
  // the last index of each block, (i+1)*(L+1), holds its downsampler (.0.op).
  layout.downAttention.forEach((attention, i) => {
    for (let j = 0; j < L; j++) {
      const k = 1 + i * (L + 1) + j;
      pairs.push({ ldm: `input_blocks.${k}.0`, diffusers: `down_blocks.${i}.resnets.${j}`, kind: "resnet" });
      if (attention) {
        pairs.push({ ldm: `input_blocks.${k}.1`, diffusers: `down_blocks.${i}.attentions.${j}`, kind: "attention" });
      }
    }
    if (layout.downsample[i]) {
      const k = (i + 1) * (L + 1);
      pairs.push({ ldm: `input_blocks.${k}.0.op`, diffusers: `down_blocks.${i}.downsamplers.0.conv`, kind: "leaf" });
    }
  });
  // output_blocks: i*(L+1) + j holds up block i's resnet j (.0), attention j (.1), and
  // after the last layer the upsampler (.1 or, behind an attention, .2).
  layout.upAttention.forEach((attention, i) => {
    for (let j = 0; j <= L; j++) {
      const k = i * (L + 1) + j;
      pairs.push({ ldm: `output_blocks.${k}.0`, diffusers: `up_blocks.${i}.resnets.${j}`, kind: "resnet" });
      if (attention) {
        pairs.push({ ldm: `output_blocks.${k}.1`, diffusers: `up_blocks.${i}.attentions.${j}`, kind: "attention" });
      }
      if (j === L && layout.upsample[i]) {
        const slot = attention ? 2 : 1;
        pairs.push({
          ldm: `output_blocks.${k}.${slot}.conv`,
          diffusers: `up_blocks.${i}.upsamplers.0.conv`,
          kind: "leaf",
        });
      }
    }
  });
  return pairs;
}

const tables = new WeakMap<UnetLayout, LdmBlockPair[]>();
/** The pairs in kohya's underscore form, which LoRA names use. */
function tableFor(layout: UnetLayout): LdmBlockPair[] {
  let table = tables.get(layout);
  if (!table) {
    table = ldmBlockPairs(layout).map((p) => ({ ...p, ldm: underscore(p.ldm), diffusers: underscore(p.diffusers) }));
    tables.set(layout, table);
  }
  return table;
}

/** True when a kohya UNet name (without "lora_unet_") uses LDM block names. */
export function isLdmUnetName(name: string): boolean {
  return /^(input_blocks|middle_block|output_blocks|time_embed|label_emb)_\d/.test(name) || /^out_\d$/.test(name);
}

/** LDM underscore name -> diffusers underscore name, or undefined if the layout has no such layer. */
export function ldmToDiffusers(name: string, layout: UnetLayout): string | undefined {
  return translate(name, layout, "ldm", "diffusers", RESNET_LDM_TO_DIFFUSERS);
}

/** Diffusers underscore name -> LDM underscore name, or undefined if the layout has no such layer. */
export function diffusersToLdm(name: string, layout: UnetLayout): string | undefined {
  return translate(name, layout, "diffusers", "ldm", RESNET_DIFFUSERS_TO_LDM);
}

function translate(
  name: string,
  layout: UnetLayout,
  from: "ldm" | "diffusers",
  to: "ldm" | "diffusers",
  resnetMap: Record<string, string>,
): string | undefined {
  // The longest block prefix that ends at an underscore boundary.
  let best: LdmBlockPair | undefined;
  for (const pair of tableFor(layout)) {
    const prefix = pair[from];
    if ((name === prefix || name.startsWith(`${prefix}_`)) && (!best || prefix.length > best[from].length)) best = pair;
  }
  if (!best) return undefined;
  const inner = name.slice(best[from].length + 1);
  if (best.kind === "leaf") return inner ? undefined : best[to];
  if (!inner) return undefined;
  if (best.kind === "attention") return `${best[to]}_${inner}`;
  const mapped = resnetMap[inner];
  return mapped ? `${best[to]}_${mapped}` : undefined;
}
