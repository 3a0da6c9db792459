// save.extract_lora: a full fine-tune stage kept as a LoRA (the two-stage method's "stage 1
// as a LoRA, since it can be rebuilt from the base"). The fine-tuned folder is written as
// usual, a LoRA of (fine-tuned - base) is extracted from it in each of save.lora_formats,
// and the folder is removed unless save.full_model asks to keep it. With no full model in
// the record, the next stage trains on the base plus this LoRA (run.ts nextBase).
import { rm } from "node:fs/promises";
import { join } from "node:path";

import { disposeLora, extractLoraFromModels, saveLora } from "../lora/index.js";
import type { StageRecord } from "./outputs.js";
import type { StageContext } from "./stage.js";

export async function saveExtractedLora(ctx: StageContext, dir: string, record: StageRecord): Promise<void> {
  const { stage } = ctx;
  const spec = stage.save.extract_lora!;
  if (ctx.base.loras.length) {
    throw new Error(
      `stage "${stage.name}": save.extract_lora needs a stage that starts from a plain model, but this one starts ` +
        `from ${ctx.base.modelDir} with LoRAs of earlier stages; its full model is saved in ${record.fullModel}`,
    );
  }
  const extracted = await extractLoraFromModels({
    base: ctx.base.modelDir,
    tuned: record.fullModel!,
    rank: spec.rank,
    ...(spec.conv_rank !== undefined ? { convRank: spec.conv_rank } : {}),
    ...(spec.energy !== undefined ? { energy: spec.energy } : {}),
    ...(ctx.variant !== undefined ? { variant: ctx.variant } : {}),
  });
  try {
    for (const format of stage.save.lora_formats) {
      const path =
        format === "kohya"
          ? join(dir, "lora", `${stage.name}.safetensors`)
          : join(dir, "lora", format, "pytorch_lora_weights.safetensors");
      await saveLora(path, extracted.weights, { format, metadata: { sdtune_stage: stage.name } });
      record.loraFiles[format] = path;
    }
  } finally {
    disposeLora(extracted.weights);
  }
  if (!stage.save.full_model) {
    await rm(record.fullModel!, { recursive: true, force: true });
    delete record.fullModel;
  }
}
