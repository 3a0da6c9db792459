// Prodigy, Adafactor and Lion against their reference implementations
// (test/golden/optimizers.json, written by scripts/golden/optimizers.py running
// prodigyopt.Prodigy, transformers' Adafactor and lion_pytorch.Lion), and an exact
// resume of each from a saved state.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";

import { nativeOptimizerSpec, optimizerArgsProblems, type OptimizerName } from "../src/config/optimizer.js";
import { resolveTrainConfig } from "../src/config/train.js";
import { readSafetensors, writeSafetensors } from "../src/io/safetensors.js";
import { native, type NativeOptimizerSpec, type Tensor } from "../src/native/index.js";
import { tensorFrom } from "../src/tensor.js";
import { repoRoot, tempDir } from "./helpers/fixtures.js";
import { minimal, problems } from "./helpers/train_config.js";

interface GoldenCase {
  name: string;
  optimizer: OptimizerName;
  lr: number | null;
  args: Record<string, unknown>;
  after: Record<string, number[]>[];
}
interface Golden {
  shapes: Record<string, number[]>;
  lr_factors: number[];
  init: Record<string, number[]>;
  grads: Record<string, number[]>[];
  cases: GoldenCase[];
}
const GOLDEN = JSON.parse(readFileSync(join(repoRoot, "test", "golden", "optimizers.json"), "utf8")) as Golden;
const ADAM = { beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 1e-2 };

const tensor = (name: string, values: number[]): Tensor => tensorFrom(Float32Array.from(values), GOLDEN.shapes[name]!);

function specOf(c: GoldenCase): NativeOptimizerSpec {
  expect(optimizerArgsProblems(c.optimizer, c.args), c.name).toEqual([]);
  return nativeOptimizerSpec(c.optimizer, c.args, ADAM);
}

/**
 * float32 agreement, element-wise: two units in the last place of the larger of the initial and
 * reference values (the final rounding of each side), plus 1e-5 of the distance the reference moved
 * (float32 reductions summed in another order: BLAS dot, norms, means).
 */
function tolerance(init: number, ref: number): number {
  return 2 ** -22 * Math.max(Math.abs(init), Math.abs(ref)) + 1e-5 * Math.abs(ref - init);
}

describe("optimizers against their references", () => {
  for (const c of GOLDEN.cases) {
    it(`${c.name}: ${c.after.length} steps with a changing lr match the reference step by step`, async () => {
      const params: [string, Tensor][] = Object.entries(GOLDEN.init).map(([name, v]) => [name, tensor(name, v)]);
      const optimizer = new (native().Optimizer)(params, specOf(c));
      let moved = 0;
      for (let step = 0; step < c.after.length; step++) {
        // Adafactor with relative_step computes its own step size: any lr given is ignored.
        const lr = c.lr === null ? 123 : c.lr * GOLDEN.lr_factors[step]!;
        await optimizer.step(
          lr,
          params.map(([name]) => tensor(name, GOLDEN.grads[step]![name]!)),
        );
        for (const [name, p] of params) {
          const ours = p.toTypedArray() as Float32Array;
          const ref = c.after[step]![name]!;
          const init = GOLDEN.init[name]!;
          ref.forEach((r, i) => {
            const tol = tolerance(init[i]!, r);
            if (!(Math.abs(ours[i]! - r) <= tol)) {
              expect.fail(`${c.name} step ${step + 1} ${name}[${i}]: ${ours[i]} vs reference ${r} (tolerance ${tol})`);
            }
            if (tol > 0) moved = Math.max(moved, Math.abs(r - init[i]!) / tol);
          });
        }
      }
      // The comparison can fail: the reference moved some weight by far more than the tolerance.
      expect(moved).toBeGreaterThan(100);
      expect(optimizer.stepCount).toBe(c.after.length);
      optimizer.dispose();
    });
  }
});

describe("optimizer state", () => {
  const SPECS: NativeOptimizerSpec[] = [
    { type: "prodigy", weightDecay: 0.01, useBiasCorrection: true, safeguardWarmup: true },
    { type: "adafactor", beta1: 0.9, weightDecay: 0.01 },
    { type: "adafactor", relativeStep: false, scaleParameter: false, weightDecay: 0.01 },
    { type: "lion", weightDecay: 0.1 },
  ];
  // A float32 matrix and vector and a float16 matrix (float32 master copy in the state).
  const make = async (): Promise<[string, Tensor][]> => [
    ["w", native().ops.randn([6, 4], { seed: 5 })],
    ["b", native().ops.randn([4], { seed: 6 })],
    ["h", await native().ops.randn([3, 5], { seed: 7 }).to({ dtype: "float16" })],
  ];
  const grads = (params: [string, Tensor][], k: number): Tensor[] =>
    params.map(([, p], i) => native().ops.randn(p.shape, { seed: 100 + 10 * k + i, dtype: p.dtype }));

  for (const spec of SPECS) {
    it(`${JSON.stringify(spec)}: a state saved to a file and loaded continues bit for bit`, async () => {
      const a = await make();
      const optA = new (native().Optimizer)(a, spec);
      for (let k = 0; k < 2; k++) await optA.step(1e-2, grads(a, k));
      const dir = await tempDir();
      try {
        const file = join(dir.path, "optimizer.safetensors");
        await writeSafetensors(file, optA.stateDict());
        const b: [string, Tensor][] = a.map(([name, p]) => [name, p.clone()]);
        const c: [string, Tensor][] = a.map(([name, p]) => [name, p.clone()]);
        const optB = new (native().Optimizer)(b, spec);
        optB.loadStateDict([...(await readSafetensors(file)).tensors]);
        expect(optB.stepCount).toBe(2);
        // Without the loaded state the same steps end elsewhere: the state is what makes B follow A.
        const optC = new (native().Optimizer)(c, spec);
        for (let k = 2; k < 4; k++) {
          await optA.step(1e-2, grads(a, k));
          await optB.step(1e-2, grads(b, k));
          await optC.step(1e-2, grads(c, k));
        }
        for (let i = 0; i < a.length; i++) expect(native().ops.maxAbsDiff(a[i]![1], b[i]![1]), a[i]![0]).toBe(0);
        expect(native().ops.maxAbsDiff(a[0]![1], c[0]![1])).toBeGreaterThan(0);
      } finally {
        await dir.cleanup();
      }
    });
  }

  it("a state with a missing entry or another shape is refused by name", async () => {
    const params = await make();
    const opt = new (native().Optimizer)(params, { type: "prodigy" });
    await opt.step(1, grads(params, 0));
    const state = opt.stateDict();
    const other = new (native().Optimizer)(await make(), { type: "prodigy" });
    expect(() => other.loadStateDict(state.filter(([k]) => k !== "w.s"))).toThrow(/missing "w\.s"/);
    const reshaped = state.map(([k, t]): [string, Tensor] => [k, k === "b.exp_avg_sq" ? native().ops.randn([5]) : t]);
    expect(() => other.loadStateDict(reshaped)).toThrow(/"b\.exp_avg_sq" has shape \[5\], expected \[4\]/);
  });
});

describe("optimizer config", () => {
  it("optimizer_args are checked per optimizer: a misspelt one gets a did-you-mean, a bad value its path", () => {
    expect(problems({ ...minimal, optimizer: "prodigy", optimizer_args: { d_cof: 2, betas: 0.9 } })).toEqual([
      "optimizer_args.betas: expected tuple, received number",
      'optimizer_args.d_cof: not an argument of prodigy (did you mean "d_coef"?)',
    ]);
    expect(problems({ ...minimal, optimizer: "lion", optimizer_args: { eps: 1e-8 } })).toEqual([
      "optimizer_args.eps: not an argument of lion (lion takes: betas, weight_decay)",
    ]);
    expect(problems({ ...minimal, optimizer: "adamw", optimizer_args: { weight_decay: 0.1 } })).toEqual([
      expect.stringMatching(/^optimizer_args\.weight_decay: AdamW takes no optimizer_args; .*adam_weight_decay/),
    ]);
    expect(problems({ ...minimal, optimizer: "lion", adam_weight_decay: 0.1 })).toEqual([
      "adam_weight_decay: applies to AdamW only; for lion set optimizer_args.weight_decay",
    ]);
  });

  it("Adafactor's relative step refuses a learning rate or schedule, as transformers does", () => {
    const relative = { ...minimal, optimizer: "adafactor" };
    expect(problems({ ...relative, learning_rate: 1e-3, lr_scheduler: "cosine" })).toEqual([
      expect.stringMatching(/^learning_rate: has no effect: Adafactor computes its own step size/),
      expect.stringMatching(/^lr_scheduler: has no effect/),
    ]);
    expect(problems({ ...relative, optimizer_args: { relative_step: false, warmup_init: true } })).toEqual([
      "optimizer_args.warmup_init: warmup_init needs relative_step: true (as transformers' Adafactor)",
    ]);
    const kohya = { relative_step: false, scale_parameter: false, warmup_init: false };
    const stage = resolveTrainConfig({ ...relative, learning_rate: 1e-3, optimizer_args: kohya }).stages[0]!;
    expect(stage.learning_rate).toBe(1e-3);
  });

  it("Prodigy's learning rate defaults to its reference's 1.0; Lion's args reach the native options", () => {
    expect(resolveTrainConfig({ ...minimal, optimizer: "prodigy" }).stages[0]!.learning_rate).toBe(1);
    const lion = resolveTrainConfig({ ...minimal, optimizer: "lion", optimizer_args: { betas: [0.95, 0.98] } });
    const stage = lion.stages[0]!;
    expect(nativeOptimizerSpec(stage.optimizer, stage.optimizer_args, ADAM)).toEqual({
      type: "lion",
      beta1: 0.95,
      beta2: 0.98,
      weightDecay: undefined,
    });
  });
});
