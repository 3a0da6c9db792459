// Trainable adapters: new ones on a model's matched layers (LoRA, DoRA, LoHa, LoKr),
// their live tensors for an optimizer, and any adapter read back as LoraWeights.
import {
  native,
  type Generator,
  type LoraInit,
  type LoraType,
  type NativeAdaptableModel,
  type Tensor,
} from "../../native/index.js";
import type { TextEncoder } from "../../models/text_encoder.js";
import type { UNet } from "../../models/unet.js";
import { createGenerator } from "../../sched/scheduler.js";
import { lycorisRank } from "../formats/lycoris.js";
import type { LoraAdapter, LoraWeights, LycorisAdapter } from "../formats/types.js";
import { checkName, checkScale, freshName, hasAdapter, targetsOf, type LoraModels } from "./models.js";
import { matchTargets, type LoraTargets } from "./targets.js";

export interface CreateLoraOptions {
  /** Adapter name (default "default_<n>"). */
  name?: string;
  /** peft target_modules: names matched against the end of module paths, or one regular expression (full match). */
  targets: LoraTargets;
  rank: number;
  /** Default: rank (scale 1). */
  alpha?: number;
  dropout?: number;
  /** Default "gaussian" (diffusers' training scripts); "kaiming" is peft's default. */
  init?: LoraInit;
  /** Seed of a CPU generator for the init (reproducible); or give `generator`. Default: the global generator. */
  seed?: number;
  generator?: Generator;
  /** lora (default), dora (peft's use_dora), loha or lokr (LyCORIS); see native/nn/lora_types.h. */
  type?: LoraType;
  /** lokr: LyCORIS' factor (default -1: each dimension split as evenly as possible). */
  factor?: number;
  /** lokr: LyCORIS' decompose_both (w1 a low-rank product too when small enough). */
  decomposeBoth?: boolean;
}

export interface TrainableLora {
  name: string;
  /**
   * The live float32 tensors, named as peft names them: "<module path>.lora_A.weight" / ".lora_B.weight"
   * (DoRA adds ".lora_magnitude_vector"; LoHa / LoKr: "<module path>.<LyCORIS factor name>").
   */
  parameters: [string, Tensor][];
}

/** New trainable adapters on the matched Linear / Conv2d layers of one model (the base stays frozen). */
export async function createTrainableLora(
  model: UNet | TextEncoder,
  options: CreateLoraOptions,
): Promise<TrainableLora> {
  const what = "createTrainableLora";
  if (!model || model.disposed) throw new TypeError(`${what}: model must be a loaded UNet or TextEncoder`);
  const rank = options.rank;
  if (!Number.isInteger(rank) || rank <= 0) throw new RangeError(`${what}: rank must be a positive integer`);
  const alpha = checkScale(options.alpha ?? rank, `${what}: alpha`);
  const dropout = options.dropout ?? 0;
  if (!(dropout >= 0 && dropout < 1)) throw new RangeError(`${what}: dropout must be in [0, 1)`);
  const init = options.init ?? "gaussian";
  if (!["gaussian", "kaiming", "random"].includes(init)) {
    throw new TypeError(`${what}: init "${String(init)}" must be gaussian, kaiming or random`);
  }
  if (options.seed !== undefined && options.generator) throw new TypeError(`${what}: give seed or generator, not both`);
  const handle = model.handle as NativeAdaptableModel;
  const paths = matchTargets(native().lora.modules(handle), options.targets, what);
  const name = options.name === undefined ? await freshName([handle]) : options.name;
  checkName(name, what);
  const generator = options.generator ?? (options.seed !== undefined ? createGenerator(options.seed) : undefined);
  const type = options.type ?? "lora";
  if (!["lora", "dora", "loha", "lokr"].includes(type)) {
    throw new TypeError(`${what}: type "${String(type)}" must be lora, dora, loha or lokr`);
  }
  const factor = options.factor ?? -1;
  if (!Number.isInteger(factor) || factor === 0 || factor < -1) {
    throw new RangeError(`${what}: factor must be -1 or a positive integer`);
  }
  const typed = { type, factor, decomposeBoth: options.decomposeBoth ?? false };
  const parameters = await native().lora.create(handle, name, {
    paths,
    rank,
    alpha,
    dropout,
    init,
    generator,
    ...typed,
  });
  return { name, parameters };
}

/** The live tensors of adapter `name` on one model (peft names, module order), e.g. for an optimizer. */
export async function loraParameters(model: UNet | TextEncoder, name: string): Promise<[string, Tensor][]> {
  return native().lora.parameters(model.handle as NativeAdaptableModel, checkName(name, "loraParameters"));
}

/** Adapter `name` from every model as LoraWeights ("unet.<path>", "text_encoder.<path>"), copied. */
export async function extractLora(models: LoraModels, name: string): Promise<LoraWeights> {
  const targets = targetsOf(models, "extractLora");
  checkName(name, "extractLora");
  const adapters = new Map<string, LoraAdapter>();
  const lycoris = new Map<string, LycorisAdapter>();
  for (const t of targets) {
    if (!(await hasAdapter(t, name))) continue;
    for (const a of await native().lora.extract(t.handle, name)) {
      const key = `${t.component}.${a.path}`;
      const factors = a.factors ?? {};
      if (a.type === "loha" || a.type === "lokr") {
        lycoris.set(key, { type: a.type, factors, alpha: a.alpha, rank: lycorisRank(a.type, factors) });
        continue;
      }
      const adapter: LoraAdapter = { down: a.down!, up: a.up!, alpha: a.alpha, rank: a.down!.shape[0]! };
      if (factors.magnitude) adapter.magnitude = factors.magnitude;
      adapters.set(key, adapter);
    }
  }
  if (!adapters.size && !lycoris.size) {
    throw new Error(`extractLora: no LoRA adapter named "${name}" on the given models`);
  }
  const sorted = <T>(m: Map<string, T>) => new Map([...m].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
  const out: LoraWeights = { format: "peft", adapters: sorted(adapters), metadata: {}, warnings: [] };
  if (lycoris.size) out.lycoris = sorted(lycoris);
  return out;
}
