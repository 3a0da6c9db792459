// init_lora (kohya's network_weights): a LoRA stage that starts from an existing LoRA
// file (kohya, diffusers or PEFT; loadLoraFile refuses non-finite weights) instead of
// fresh adapters. Its rank and alpha come from the file: a config that sets lora.rank or
// lora.alpha to something else is refused, naming both. Its modules must be exactly the
// ones the config's targets select (when the config names targets; otherwise the file's
// modules are the targets), on the models the stage trains.
import { loraKeysGiven, type StageConfig } from "../config/train.js";
import {
  applyLora,
  disposeLora,
  loadLoraFile,
  matchTargets,
  splitAdapterKey,
  type LoraComponent,
  type LoraWeights,
} from "../lora/index.js";
import { native, type Tensor } from "../native/index.js";
import type { StageModels } from "./stage_models.js";

type Stage = StageConfig & { name: string };

/** Attaches the file's adapters as the stage's trainable LoRA `name` (addTrainable collects its parameters). */
export async function attachInitLora(models: StageModels, stage: Stage, name: string): Promise<void> {
  const path = stage.init_lora!;
  const baseModuleNames = {
    unet: adaptable(models.unet.handle),
    text_encoder: adaptable(models.textEncoder.handle),
  };
  const weights = await loadLoraFile(path, { baseModuleNames });
  try {
    const alpha = checkRankAndAlpha(weights, stage, path);
    checkComponents(weights, stage, path, models);
    await unfoldAlphas(weights, alpha);
    await applyLora({ unet: models.unet, textEncoder: models.textEncoder }, weights, {
      name,
      trainable: true,
      dropout: stage.lora.dropout,
    });
  } finally {
    disposeLora(weights);
  }
}

const adaptable = (handle: unknown): string[] =>
  native()
    .lora.modules(handle as never)
    .filter((m) => m.kind === "linear" || m.kind === "conv2d")
    .map((m) => m.path);

/** One rank and one alpha for the whole file (the alpha before any folding), agreeing with the config; the alpha. */
function checkRankAndAlpha(weights: LoraWeights, stage: Stage, path: string): number {
  const adapters = [...weights.adapters.values()];
  const ranks = new Set(adapters.map((a) => a.rank));
  const alphas = new Set(adapters.map((a) => a.originalAlpha ?? a.alpha));
  if (ranks.size !== 1 || alphas.size !== 1) {
    throw new Error(
      `${path} (init_lora of stage "${stage.name}"): its modules have different ranks or alphas ` +
        `(ranks ${[...ranks].join(", ")}; alphas ${[...alphas].join(", ")}); training continues one rank and alpha`,
    );
  }
  const rank = [...ranks][0]!;
  const alpha = [...alphas][0]!;
  const given = loraKeysGiven(stage);
  const conflicts = [
    ...(given.includes("rank") && stage.lora.rank !== rank
      ? [`lora.rank is ${stage.lora.rank}, the file's ${rank}`]
      : []),
    ...(given.includes("alpha") && stage.lora.alpha !== alpha
      ? [`lora.alpha is ${stage.lora.alpha}, the file's ${alpha}`]
      : []),
  ];
  if (conflicts.length) {
    throw new Error(
      `stage "${stage.name}": init_lora ${path} sets rank and alpha, but ${conflicts.join("; ")}. ` +
        "Remove those keys (they come from the file) or give the file's values.",
    );
  }
  return alpha;
}

/** The file's components are the ones the stage trains as LoRA; named targets select exactly its modules. */
function checkComponents(weights: LoraWeights, stage: Stage, path: string, models: StageModels): void {
  const inFile = new Map<LoraComponent, string[]>();
  for (const key of weights.adapters.keys()) {
    const { component, path: module } = splitAdapterKey(key);
    inFile.set(component, [...(inFile.get(component) ?? []), module]);
  }
  const given = loraKeysGiven(stage);
  const parts = [
    { component: "unet", key: "train_unet", train: stage.train_unet, targetsKey: "unet_targets", model: models.unet },
    {
      component: "text_encoder",
      key: "train_text_encoder",
      train: stage.train_text_encoder,
      targetsKey: "text_encoder_targets",
      model: models.textEncoder,
    },
  ] as const;
  const problems: string[] = [];
  for (const p of parts) {
    const modules = inFile.get(p.component);
    if (modules && p.train !== "lora") problems.push(`it holds ${p.component} modules, but ${p.key} is ${p.train}`);
    if (!modules && p.train === "lora") problems.push(`it holds no ${p.component} modules, but ${p.key} is lora`);
    if (!modules || !given.includes(p.targetsKey)) continue;
    const selected = matchTargets(
      native().lora.modules(p.model.handle as never),
      stage.lora[p.targetsKey],
      p.targetsKey,
    );
    problems.push(...targetMismatch(modules, selected, p.targetsKey));
  }
  if (inFile.has("text_encoder_2"))
    problems.push("it holds text_encoder_2 modules (SDXL); this model has one text encoder");
  if (problems.length) {
    throw new Error(
      `${path} (init_lora of stage "${stage.name}") does not fit the stage:\n  - ${problems.join("\n  - ")}`,
    );
  }
}

/** The modules of the file and of the config's targets differ: which, and what to do. */
function targetMismatch(inFile: string[], selected: string[], key: string): string[] {
  const missing = selected.filter((m) => !inFile.includes(m));
  const extra = inFile.filter((m) => !selected.includes(m));
  const list = (xs: string[]): string => `${xs.length} (e.g. ${xs.slice(0, 3).join(", ")})`;
  return [
    ...(extra.length ? [`lora.${key} does not select ${list(extra)} of its modules`] : []),
    ...(missing.length ? [`lora.${key} selects ${list(missing)} modules it lacks`] : []),
  ].map((p) => `${p}; remove lora.${key} to train exactly the file's modules`);
}

/** sdtune's diffusers / peft files fold alpha / rank into `up`: train with the original alpha, as the file was. */
async function unfoldAlphas(weights: LoraWeights, alpha: number): Promise<void> {
  for (const adapter of weights.adapters.values()) {
    if (adapter.originalAlpha === undefined || adapter.originalAlpha === adapter.rank) continue;
    const unfolded = await native().loraFiles.unfold(
      adapter.up,
      adapter.originalAlpha / adapter.rank,
      adapter.foldResidual,
    );
    const folded: Tensor = adapter.up;
    adapter.up = unfolded.tensor;
    folded.dispose();
    adapter.alpha = alpha;
  }
}
