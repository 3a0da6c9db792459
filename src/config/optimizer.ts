// The optimizers a stage can train with and their `optimizer_args` (kohya's key):
// each optimizer's arguments under its reference implementation's keyword names
// (prodigyopt.Prodigy, transformers' Adafactor, lion_pytorch.Lion), validated per
// optimizer so an unknown or misspelt argument is named, and turned into the native
// options (camelCase, src/native/optim.ts). AdamW keeps its adam_* keys.
import { z } from "zod";

import { closest } from "./errors.js";

export const OPTIMIZERS = ["adamw", "adamw8bit", "prodigy", "adafactor", "lion"] as const;
export type OptimizerName = (typeof OPTIMIZERS)[number];

/** AdamW's settings (torch.optim.AdamW's defaults, diffusers' flags). */
export const ADAMW_DEFAULTS = {
  adam_beta1: 0.9,
  adam_beta2: 0.999,
  adam_weight_decay: 1e-2,
  adam_epsilon: 1e-8,
} as const;

const beta = z.number().min(0).lt(1);
const betas = z.tuple([beta, beta]);

const ProdigyArgs = z.strictObject({
  betas: betas.optional(),
  beta3: beta.optional().describe("default: sqrt(beta2)"),
  eps: z.number().positive().optional(),
  weight_decay: z.number().min(0).optional(),
  decouple: z.boolean().optional(),
  use_bias_correction: z.boolean().optional(),
  safeguard_warmup: z.boolean().optional(),
  d0: z.number().positive().optional(),
  d_coef: z.number().positive().optional(),
  growth_rate: z.number().min(1).optional().describe("default: unbounded"),
  slice_p: z.int().min(1).max(1024).optional(),
});

const AdafactorArgs = z.strictObject({
  eps: z.tuple([z.number().positive(), z.number().positive()]).optional(),
  clip_threshold: z.number().positive().optional(),
  decay_rate: z.number().lt(0).optional(),
  beta1: beta.nullable().optional().describe("default: none (no first moment)"),
  weight_decay: z.number().min(0).optional(),
  scale_parameter: z.boolean().optional(),
  relative_step: z.boolean().optional(),
  warmup_init: z.boolean().optional(),
});

const LionArgs = z.strictObject({
  betas: betas.optional(),
  weight_decay: z.number().min(0).optional(),
});

const ARGS = { prodigy: ProdigyArgs, adafactor: AdafactorArgs, lion: LionArgs } as const;
type ArgsOf<K extends keyof typeof ARGS> = z.output<(typeof ARGS)[K]>;

/** The native optimizer options (native/bindings/optimizer_options.cc reads them). */
export type NativeOptimizerSpec =
  | { type: "adamw"; beta1?: number; beta2?: number; eps?: number; weightDecay?: number }
  | {
      type: "prodigy";
      beta1?: number;
      beta2?: number;
      beta3?: number;
      eps?: number;
      weightDecay?: number;
      decouple?: boolean;
      useBiasCorrection?: boolean;
      safeguardWarmup?: boolean;
      d0?: number;
      dCoef?: number;
      growthRate?: number;
      sliceP?: number;
    }
  | {
      type: "adafactor";
      eps1?: number;
      eps2?: number;
      clipThreshold?: number;
      decayRate?: number;
      beta1?: number;
      weightDecay?: number;
      scaleParameter?: boolean;
      relativeStep?: boolean;
      warmupInit?: boolean;
    }
  | { type: "lion"; beta1?: number; beta2?: number; weightDecay?: number };

export const nativeOptimizerSpecSchema: z.ZodType<NativeOptimizerSpec> = z.discriminatedUnion("type", [
  z.strictObject({
    type: z.literal("adamw"),
    beta1: beta.optional(),
    beta2: beta.optional(),
    eps: z.number().positive().optional(),
    weightDecay: z.number().min(0).optional(),
  }),
  z.strictObject({
    type: z.literal("prodigy"),
    beta1: beta.optional(),
    beta2: beta.optional(),
    beta3: beta.optional(),
    eps: z.number().positive().optional(),
    weightDecay: z.number().min(0).optional(),
    decouple: z.boolean().optional(),
    useBiasCorrection: z.boolean().optional(),
    safeguardWarmup: z.boolean().optional(),
    d0: z.number().positive().optional(),
    dCoef: z.number().positive().optional(),
    growthRate: z.number().min(1).optional(),
    sliceP: z.int().min(1).max(1024).optional(),
  }),
  z.strictObject({
    type: z.literal("adafactor"),
    eps1: z.number().positive().optional(),
    eps2: z.number().positive().optional(),
    clipThreshold: z.number().positive().optional(),
    decayRate: z.number().lt(0).optional(),
    beta1: beta.optional(),
    weightDecay: z.number().min(0).optional(),
    scaleParameter: z.boolean().optional(),
    relativeStep: z.boolean().optional(),
    warmupInit: z.boolean().optional(),
  }),
  z.strictObject({
    type: z.literal("lion"),
    beta1: beta.optional(),
    beta2: beta.optional(),
    weightDecay: z.number().min(0).optional(),
  }),
]);

/** The problems of `args` for `optimizer`, each with its path under optimizer_args ([] when fine). */
export function optimizerArgsProblems(optimizer: OptimizerName, args: Record<string, unknown>): Problem[] {
  if (optimizer === "adamw" || optimizer === "adamw8bit") {
    return Object.keys(args).map((key) => ({
      path: [key],
      message: `AdamW takes no optimizer_args; its settings are adam_beta1, adam_beta2, adam_epsilon, adam_weight_decay`,
    }));
  }
  const schema = ARGS[optimizer];
  const result = schema.safeParse(args);
  const problems = result.success
    ? []
    : result.error.issues.flatMap((issue) => {
        if (issue.code !== "unrecognized_keys")
          return [{ path: issue.path as (string | number)[], message: issue.message }];
        const known = Object.keys(schema.shape);
        return issue.keys.map((key) => {
          const guess = closest(key, known);
          const hint = guess ? `did you mean "${guess}"?` : `${optimizer} takes: ${known.join(", ")}`;
          return { path: [key], message: `not an argument of ${optimizer} (${hint})` };
        });
      });
  if (optimizer === "adafactor" && args.warmup_init === true && args.relative_step === false) {
    problems.push({
      path: ["warmup_init"],
      message: "warmup_init needs relative_step: true (as transformers' Adafactor)",
    });
  }
  return problems;
}

/** The stage keys the optimizer checks look at. */
export interface OptimizerStageFields {
  optimizer: OptimizerName;
  optimizer_args: Record<string, unknown>;
  learning_rate?: number;
  text_encoder_learning_rate?: number;
  lr_scheduler: string;
  lr_warmup_steps: number;
  adam_beta1: number;
  adam_beta2: number;
  adam_weight_decay: number;
  adam_epsilon: number;
}

type Problem = { path: (string | number)[]; message: string };

/** Every optimizer problem of a stage, with paths from the stage. */
export function stageOptimizerProblems(stage: OptimizerStageFields): Problem[] {
  const problems = optimizerArgsProblems(stage.optimizer, stage.optimizer_args).map((p) => ({
    path: ["optimizer_args", ...p.path],
    message: p.message,
  }));
  if (stage.optimizer !== "adamw" && stage.optimizer !== "adamw8bit") {
    for (const [key, value] of Object.entries(ADAMW_DEFAULTS)) {
      if (stage[key as keyof typeof ADAMW_DEFAULTS] !== value) {
        const arg = key === "adam_weight_decay" ? "weight_decay" : key === "adam_epsilon" ? "eps" : "betas";
        problems.push({
          path: [key],
          message: `applies to AdamW only; for ${stage.optimizer} set optimizer_args.${arg}`,
        });
      }
    }
  }
  if (stage.optimizer === "adafactor" && stage.optimizer_args.relative_step !== false) {
    // transformers refuses an lr with relative_step ("Cannot combine manual `lr` and `relative_step=True`").
    const why =
      "has no effect: Adafactor computes its own step size (relative_step: true, its default); " +
      "set optimizer_args.relative_step: false (and scale_parameter: false, kohya's usual) to use a learning rate";
    if (stage.learning_rate !== undefined) problems.push({ path: ["learning_rate"], message: why });
    if (stage.text_encoder_learning_rate !== undefined)
      problems.push({ path: ["text_encoder_learning_rate"], message: why });
    if (stage.lr_scheduler !== "constant") problems.push({ path: ["lr_scheduler"], message: why });
    if (stage.lr_warmup_steps > 0) problems.push({ path: ["lr_warmup_steps"], message: why });
  }
  return problems;
}

/** The learning rate an optimizer's reference defaults to when the config gives none (Prodigy: 1.0). */
export function optimizerDefaultLearningRate(optimizer: OptimizerName): number | undefined {
  return optimizer === "prodigy" ? 1.0 : undefined;
}

/** The native spec of a validated stage's optimizer; AdamW's from the adam_* keys. */
export function nativeOptimizerSpec(
  optimizer: OptimizerName,
  args: Record<string, unknown>,
  adam: { beta1: number; beta2: number; eps: number; weightDecay: number },
): NativeOptimizerSpec {
  switch (optimizer) {
    case "adamw":
    case "adamw8bit":
      return { type: "adamw", ...adam };
    case "prodigy": {
      const a = args as ArgsOf<"prodigy">;
      return {
        type: "prodigy",
        beta1: a.betas?.[0],
        beta2: a.betas?.[1],
        beta3: a.beta3,
        eps: a.eps,
        weightDecay: a.weight_decay,
        decouple: a.decouple,
        useBiasCorrection: a.use_bias_correction,
        safeguardWarmup: a.safeguard_warmup,
        d0: a.d0,
        dCoef: a.d_coef,
        growthRate: a.growth_rate,
        sliceP: a.slice_p,
      };
    }
    case "adafactor": {
      const a = args as ArgsOf<"adafactor">;
      return {
        type: "adafactor",
        eps1: a.eps?.[0],
        eps2: a.eps?.[1],
        clipThreshold: a.clip_threshold,
        decayRate: a.decay_rate,
        beta1: a.beta1 ?? undefined,
        weightDecay: a.weight_decay,
        scaleParameter: a.scale_parameter,
        relativeStep: a.relative_step,
        warmupInit: a.warmup_init,
      };
    }
    case "lion": {
      const a = args as ArgsOf<"lion">;
      return { type: "lion", beta1: a.betas?.[0], beta2: a.betas?.[1], weightDecay: a.weight_decay };
    }
  }
}

const KOHYA_CLASS: Record<OptimizerName, string> = {
  adamw: "torch.optim.adamw.AdamW",
  adamw8bit: "bitsandbytes.optim.adamw.AdamW8bit",
  prodigy: "prodigyopt.prodigy.Prodigy",
  adafactor: "transformers.optimization.Adafactor",
  lion: "lion_pytorch.lion_pytorch.Lion",
};

const pythonValue = (v: unknown): string =>
  typeof v === "boolean"
    ? v
      ? "True"
      : "False"
    : Array.isArray(v)
      ? `(${v.map(pythonValue).join(", ")})`
      : v === null
        ? "None"
        : String(v);

/** kohya's ss_optimizer: the reference class and its arguments, e.g. "prodigyopt.prodigy.Prodigy(d_coef=2)". */
export function kohyaOptimizerName(stage: OptimizerStageFields): string {
  const args =
    stage.optimizer === "adamw" || stage.optimizer === "adamw8bit"
      ? { weight_decay: stage.adam_weight_decay }
      : stage.optimizer_args;
  const list = Object.entries(args).map(([k, v]) => `${k}=${pythonValue(v)}`);
  return `${KOHYA_CLASS[stage.optimizer]}${list.length ? `(${list.join(",")})` : ""}`;
}
