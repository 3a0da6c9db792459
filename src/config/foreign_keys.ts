// Keys as kohya's sd-scripts and diffusers' training scripts spell them, and what sdtune calls
// them: an unknown key found here gets "did you mean <ours>" instead of a spelling guess, so a
// kohya or diffusers config can be translated line by line from the error messages.

export interface ForeignKey {
  /** Whose spelling it is. */
  from: "kohya" | "diffusers" | "kohya/diffusers";
  /** sdtune's key, as a path ("lora.rank"); its first part must be a key where the foreign one was found. */
  ours: string;
  /** How to write it, when the value changes shape ("optimizer: adamw8bit"). */
  example?: string;
}

const K = "kohya" as const;
const D = "diffusers" as const;
const KD = "kohya/diffusers" as const;

const TABLE: Record<string, ForeignKey> = {
  pretrained_model_name_or_path: { from: KD, ours: "model" },
  network_dim: { from: K, ours: "lora.rank" },
  rank: { from: D, ours: "lora.rank" },
  network_alpha: { from: K, ours: "lora.alpha" },
  network_dropout: { from: K, ours: "lora.dropout" },
  network_weights: { from: K, ours: "init_lora" },
  network_train_unet_only: { from: K, ours: "train_text_encoder", example: "train_text_encoder: none" },
  network_train_text_encoder_only: { from: K, ours: "train_unet", example: "train_unet: none" },
  max_train_epochs: { from: K, ours: "num_train_epochs" },
  unet_lr: { from: K, ours: "learning_rate" },
  text_encoder_lr: { from: K, ours: "text_encoder_learning_rate" },
  train_data_dir: { from: K, ours: "dataset.path" },
  instance_data_dir: { from: D, ours: "dataset.path" },
  dataset_name: { from: D, ours: "dataset.path" },
  caption_column: { from: D, ours: "dataset.caption_column" },
  image_column: { from: D, ours: "dataset.image_column" },
  caption_extension: { from: K, ours: "dataset.caption_ext" },
  num_repeats: { from: K, ours: "dataset.repeats" },
  output_name: { from: K, ours: "name", example: "name: my-lora (the LoRA is saved as <name>.safetensors)" },
  with_prior_preservation: { from: D, ours: "prior_preservation", example: "prior_preservation: {class_prompt: ...}" },
  class_data_dir: { from: D, ours: "prior_preservation.class_data_dir" },
  reg_data_dir: { from: K, ours: "prior_preservation.class_data_dir" },
  class_prompt: { from: D, ours: "prior_preservation.class_prompt" },
  num_class_images: { from: D, ours: "prior_preservation.num_class_images" },
  prior_loss_weight: { from: KD, ours: "prior_preservation.prior_loss_weight" },
  lr_scheduler_num_cycles: { from: K, ours: "lr_num_cycles" },
  lr_scheduler_power: { from: K, ours: "lr_power" },
  optimizer_type: { from: K, ours: "optimizer" },
  use_8bit_adam: { from: KD, ours: "optimizer", example: "optimizer: adamw8bit" },
  min_snr_gamma: { from: K, ours: "snr_gamma" },
  v_parameterization: { from: K, ours: "prediction_type", example: "prediction_type: v_prediction" },
  shuffle_caption: { from: K, ours: "shuffle_tags" },
  keep_tokens: { from: K, ours: "keep_tags" },
  caption_dropout_rate: { from: K, ours: "caption_dropout" },
  flip_aug: { from: K, ours: "random_flip" },
  enable_bucket: { from: K, ours: "buckets.enabled" },
  min_bucket_reso: { from: K, ours: "buckets.min_side" },
  max_bucket_reso: { from: K, ours: "buckets.max_side" },
  bucket_reso_steps: { from: K, ours: "buckets.step" },
  save_model_as: { from: K, ours: "save.lora_formats", example: "save: {lora_formats: [kohya]}" },
  save_state: { from: K, ours: "checkpointing_steps" },
  sample_every_n_steps: { from: K, ours: "validation.every_n_steps" },
  sample_prompts: { from: K, ours: "validation.prompts" },
  validation_prompt: { from: D, ours: "validation.prompts" },
  validation_steps: { from: D, ours: "validation.every_n_steps" },
  num_validation_images: { from: D, ours: "validation.seeds", example: "validation: {seeds: [0, 1, 2, 3]}" },
  log_with: { from: K, ours: "report_to" },
  logging_dir: { from: KD, ours: "report_to", example: "report_to: [tensorboard] (files go to <output_dir>/logs)" },
};

/** sdtune's name for a kohya/diffusers key, when `known` (the keys valid where it was found) has it. */
export function foreignKey(key: string, known: readonly string[]): ForeignKey | undefined {
  const entry = TABLE[key];
  if (!entry) return undefined;
  return known.includes(entry.ours.split(".")[0]!) ? entry : undefined;
}

/** The "did you mean" text for a foreign key. */
export function describeForeignKey(key: string, entry: ForeignKey): string {
  const how = entry.example ? `; e.g. ${entry.example}` : "";
  return `${entry.from}'s "${key}" is "${entry.ours}" in sdtune${how}`;
}
