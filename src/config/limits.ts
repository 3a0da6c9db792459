// Bounds on the sizes in a model's config.json, checked before anything is built: a
// config that asks for a million layers or a 10^6-wide hidden state is refused with
// the file, field and bound, instead of exhausting the machine while the model is
// built (and only then finding that its weights do not match). The bounds are far
// above any Stable Diffusion / CLIP release (SD 2.x: 1280 channels, 2 layers per
// block; CLIP ViT-bigG: 1664 hidden, 48 layers).

const BOUNDS: Record<string, number> = {
  block_out_channels: 8192,
  layers_per_block: 32,
  transformer_layers_per_block: 64,
  attention_head_dim: 1024,
  cross_attention_dim: 16384,
  in_channels: 1024,
  out_channels: 1024,
  latent_channels: 1024,
  norm_num_groups: 1024,
  time_embedding_dim: 16384,
  conv_in_kernel: 15,
  conv_out_kernel: 15,
  sample_size: 16384,
  down_block_types: 16,
  up_block_types: 16,
  hidden_size: 16384,
  intermediate_size: 65536,
  num_hidden_layers: 256,
  num_attention_heads: 1024,
  vocab_size: 1_000_000,
  max_position_embeddings: 65536,
  projection_dim: 16384,
  image_size: 16384,
  patch_size: 1024,
  num_channels: 1024,
};

/**
 * Throws an Error naming `file` and the field when a size in `config` (a number, a
 * list of numbers, nested lists, or the length of a list of block types) exceeds its bound.
 * Nested text_config / vision_config objects are checked too.
 */
export function checkModelSizes(config: unknown, file: string, prefix = ""): void {
  if (!config || typeof config !== "object" || Array.isArray(config)) return;
  for (const [key, value] of Object.entries(config)) {
    const field = prefix ? `${prefix}.${key}` : key;
    if (value && typeof value === "object" && !Array.isArray(value)) {
      checkModelSizes(value, file, field);
      continue;
    }
    const bound = BOUNDS[key];
    if (bound === undefined) continue;
    const size = largest(value, key.endsWith("_types"));
    if (size > bound) {
      throw new Error(
        `${file}: "${field}" = ${String(size)} is larger than sdtune allows (at most ${bound}); ` +
          "the config is damaged or not a Stable Diffusion / CLIP model",
      );
    }
  }
}

/** The largest number in a value (numbers, nested lists); a list of names counts by its length. */
function largest(value: unknown, countEntries: boolean): number {
  if (countEntries) return Array.isArray(value) ? value.length : 0;
  if (typeof value === "number") return value;
  if (Array.isArray(value)) return value.reduce((m: number, v) => Math.max(m, largest(v, false)), 0);
  return 0;
}
