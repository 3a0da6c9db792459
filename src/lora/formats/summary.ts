// What `sdtune lora inspect` shows: format, ranks, alphas, and targets grouped by
// component and block.
import { LORA_COMPONENTS, splitAdapterKey, type LoraComponent, type LoraFormat, type LoraWeights } from "./types.js";

export interface LoraBlockSummary {
  /** "down_blocks.0", "mid_block", "text_model.encoder.layers.2", ... */
  block: string;
  modules: number;
  /** Layer names inside the block ("attn1.to_q", "proj_in", "conv1", ...), sorted. */
  targets: string[];
}

export interface LoraComponentSummary {
  modules: number;
  /** rank -> number of modules */
  ranks: Record<string, number>;
  /** alpha -> number of modules */
  alphas: Record<string, number>;
  conv: number;
  blocks: LoraBlockSummary[];
}

export interface LoraSummary {
  format: LoraFormat;
  modules: number;
  dtypes: string[];
  parameters: number;
  components: Partial<Record<LoraComponent, LoraComponentSummary>>;
  /** Modules per adapter type: lora, dora, loha, lokr. */
  types: Record<string, number>;
  /** Modules holding a folded alpha with its original recorded (sdtune exports). */
  foldedAlphaModules: number;
  metadata: Record<string, string>;
  warnings: string[];
}

// A block is the path up to the repeated unit; the target is what follows inside it.
const BLOCK = /^((?:down_blocks|up_blocks)\.\d+|mid_block|text_model\.encoder\.layers\.\d+)\.(.+)$/;
const INNER_UNIT = /^(?:attentions|resnets)\.\d+\.(?:transformer_blocks\.\d+\.)?(.+)$/;

export function summarizeLora(weights: LoraWeights): LoraSummary {
  const components: Partial<Record<LoraComponent, LoraComponentSummary>> = {};
  const blocks = new Map<string, Map<string, { modules: number; targets: Set<string> }>>();
  const dtypes = new Set<string>();
  let parameters = 0;
  let folded = 0;
  const types: Record<string, number> = {};
  const modules = [
    ...[...weights.adapters].map(([key, a]) => {
      if (a.originalAlpha !== undefined) folded++;
      const tensors = [a.down, a.up, ...(a.magnitude ? [a.magnitude] : [])];
      const type = a.magnitude ? "dora" : "lora";
      return { key, type, rank: a.rank, alpha: a.originalAlpha ?? a.alpha, conv: a.down.shape.length === 4, tensors };
    }),
    ...[...(weights.lycoris ?? [])].map(([key, a]) => {
      const tensors = Object.values(a.factors);
      return { key, type: a.type, rank: a.rank, alpha: a.alpha, conv: false, tensors };
    }),
  ];
  for (const { key, type, rank, alpha, conv, tensors } of modules) {
    const { component, path } = splitAdapterKey(key);
    const c = (components[component] ??= { modules: 0, ranks: {}, alphas: {}, conv: 0, blocks: [] });
    c.modules++;
    types[type] = (types[type] ?? 0) + 1;
    c.ranks[rank] = (c.ranks[rank] ?? 0) + 1;
    c.alphas[String(alpha)] = (c.alphas[String(alpha)] ?? 0) + 1;
    if (conv) c.conv++;
    for (const t of tensors) {
      dtypes.add(t.dtype);
      parameters += t.numel;
    }

    const m = BLOCK.exec(path);
    const block = m ? m[1]! : path.split(".")[0]!;
    const inner = m ? m[2]! : path.slice(block.length + 1) || path;
    const target = INNER_UNIT.exec(inner)?.[1] ?? inner;
    const perComponent = blocks.get(component) ?? new Map();
    blocks.set(component, perComponent);
    const entry = perComponent.get(block) ?? { modules: 0, targets: new Set<string>() };
    entry.modules++;
    entry.targets.add(target);
    perComponent.set(block, entry);
  }
  for (const [component, perComponent] of blocks) {
    components[component as LoraComponent]!.blocks = [...perComponent]
      .sort(([a], [b]) => blockOrder(a) - blockOrder(b) || a.localeCompare(b, "en", { numeric: true }))
      .map(([block, { modules, targets }]) => ({ block, modules, targets: [...targets].sort() }));
  }
  const ordered: Partial<Record<LoraComponent, LoraComponentSummary>> = {};
  for (const c of LORA_COMPONENTS) if (components[c]) ordered[c] = components[c];
  return {
    format: weights.format,
    modules: modules.length,
    types,
    dtypes: [...dtypes].sort(),
    parameters,
    components: ordered,
    foldedAlphaModules: folded,
    metadata: weights.metadata,
    warnings: weights.warnings,
  };
}

// UNet blocks in data-flow order: conv_in/time embedding, down, mid, up, conv_out.
function blockOrder(block: string): number {
  if (block.startsWith("down_blocks")) return 1;
  if (block === "mid_block") return 2;
  if (block.startsWith("up_blocks")) return 3;
  if (block === "conv_out" || block === "conv_norm_out") return 4;
  return 0;
}

/** The summary as the lines `sdtune lora inspect` prints. */
export function formatLoraSummary(summary: LoraSummary, file: string): string {
  const lines = [
    `file        ${file}`,
    `format      ${summary.format}`,
    `modules     ${summary.modules} (${Object.entries(summary.components)
      .map(([c, s]) => `${c} ${s.modules}`)
      .join(", ")})`,
    `parameters  ${summary.parameters.toLocaleString("en-US")} (${summary.dtypes.join(", ")})`,
  ];
  if (Object.keys(summary.types).some((t) => t !== "lora")) {
    lines.push(
      `types       ${Object.entries(summary.types)
        .map(([t, n]) => `${t} ${n}`)
        .join(", ")}`,
    );
  }
  const counts = (record: Record<string, number>) =>
    Object.entries(record)
      .map(([value, n]) => (Object.keys(record).length > 1 ? `${value} (x${n})` : value))
      .join(", ");
  for (const [component, s] of Object.entries(summary.components)) {
    const alphas = Object.keys(s.alphas).map(Number);
    const ranks = Object.keys(s.ranks).map(Number);
    const scale =
      alphas.length === 1 && ranks.length === 1 ? `, scale alpha/rank ${+(alphas[0]! / ranks[0]!).toPrecision(6)}` : "";
    lines.push(
      "",
      `${component}: rank ${counts(s.ranks)}, alpha ${counts(s.alphas)}${scale}${s.conv ? `, ${s.conv} conv` : ""}`,
    );
    const width = Math.max(...s.blocks.map((b) => b.block.length));
    for (const b of s.blocks) {
      lines.push(`  ${b.block.padEnd(width)}  ${String(b.modules).padStart(3)}  ${b.targets.join(" ")}`);
    }
  }
  if (summary.foldedAlphaModules) {
    lines.push(
      "",
      `${summary.foldedAlphaModules} modules hold alpha/rank folded into up; alphas shown are the recorded originals`,
    );
  }
  const keys = Object.keys(summary.metadata).sort();
  if (keys.length) {
    lines.push("", "metadata:");
    for (const key of keys) {
      const value = summary.metadata[key]!;
      lines.push(`  ${key}: ${value.length > 200 ? `${value.slice(0, 200)}... (${value.length} chars)` : value}`);
    }
  }
  for (const w of summary.warnings) lines.push(`warning: ${w}`);
  return lines.join("\n");
}
