// AdamW and gradient clipping against the training references (golden/lora_train,
// golden/dreambooth): the optimizer math alone, from the stored gradients.
import { describe, expect, it } from "vitest";

import { inspectSafetensors } from "../src/io/safetensors.js";
import { native, type Tensor } from "../src/native/index.js";
import { tensorFrom } from "../src/tensor.js";
import { expectClose, fixture, golden, goldenAdamW, values } from "./helpers/fixtures.js";

/** Weights of a tiny-sd component whose names match: the modules the scripts put LoRA on. */
async function countModules(file: string[], pattern: RegExp): Promise<number> {
  return (await inspectSafetensors(fixture("tiny-sd", ...file))).tensors.filter((t) => pattern.test(t.name)).length;
}
const unetTargets = () =>
  countModules(["unet", "diffusion_pytorch_model.safetensors"], /\.attn[12]\.to_(q|k|v|out\.0)\.weight$/);
const teTargets = () => countModules(["text_encoder", "model.safetensors"], /\.self_attn\.(q|k|v|out)_proj\.weight$/);

function group(map: Map<string, Tensor>, prefix: string): Map<string, Tensor> {
  const out = new Map<string, Tensor>();
  for (const [k, v] of map) if (k.startsWith(prefix)) out.set(k.slice(prefix.length), v);
  return out;
}

/** Copies, so the optimizer never writes into the mapped golden file's pages. */
function owned(map: Map<string, Tensor>): [string, Tensor][] {
  return [...map].map(([k, v]) => [k, v.clone()]);
}

describe("AdamW", () => {
  it("one step from the text-to-image LoRA gradients matches torch.optim.AdamW", async () => {
    const g = await golden("lora_train");
    const init = group(g, "random_init.init.");
    const grads = group(g, "random_init.step1_grad.");
    const after = group(g, "random_init.after_step1.");
    expect(init.size).toBe(2 * (await unetTargets())); // lora_A and lora_B per module
    expect([grads.size, after.size]).toEqual([init.size, init.size]);
    const params = owned(init);
    const { lr, ...hyper } = goldenAdamW("lora_train");
    const adamw = new (native().AdamW)(params, hyper);
    await adamw.step(
      lr,
      params.map(([name]) => grads.get(name)!),
    );
    expect(adamw.stepCount).toBe(1);
    for (const [name, p] of params) {
      await expectClose(p, after.get(name)!, { atol: 0.2 * lr, rtol: 0 }, name);
    }
  });

  it("one step from the DreamBooth (clipped) gradients matches, text encoder included", async () => {
    const g = await golden("dreambooth");
    const init = group(g, "init.");
    const grads = group(g, "clipped_grad.");
    const after = group(g, "after_step1.");
    expect(init.size).toBe(2 * ((await unetTargets()) + (await teTargets())));
    expect([grads.size, after.size]).toEqual([init.size, init.size]);
    const params = owned(init);
    const { lr, ...hyper } = goldenAdamW("dreambooth");
    const adamw = new (native().AdamW)(params, hyper);
    await adamw.step(
      lr,
      params.map(([name]) => grads.get(name)!),
    );
    for (const [name, p] of params) await expectClose(p, after.get(name)!, { atol: 0.2 * lr, rtol: 0 }, name);
  });

  it("state round-trips exactly: a restored optimizer continues bit for bit", async () => {
    const make = (): [string, Tensor][] => [["w", native().ops.randn([16, 8], { seed: 5 })]];
    const grad = (k: number): Tensor => native().ops.randn([16, 8], { seed: 100 + k });
    const a = make();
    const optA = new (native().AdamW)(a);
    for (let k = 0; k < 3; k++) await optA.step(1e-2, [grad(k)]);
    const b: [string, Tensor][] = [["w", a[0]![1].clone()]];
    const optB = new (native().AdamW)(b);
    optB.loadStateDict(optA.stateDict());
    expect(optB.stepCount).toBe(3);
    await optA.step(1e-2, [grad(3)]);
    await optB.step(1e-2, [grad(3)]);
    expect(Array.from(b[0]![1].toTypedArray() as Float32Array)).toEqual(
      Array.from(a[0]![1].toTypedArray() as Float32Array),
    );
  });

  it("keeps float32 master weights for bfloat16 parameters", async () => {
    const w = await native().ops.randn([64], { seed: 9 }).to({ dtype: "bfloat16" });
    const opt = new (native().AdamW)([["w", w]], { weightDecay: 0 });
    const tiny = tensorFrom(new Float32Array(64).fill(1), [64]);
    // 20 steps of 1e-4 each would vanish in bf16 arithmetic, but accumulate in the master copy.
    for (let k = 0; k < 20; k++) await opt.step(1e-4, [tiny]);
    const master = opt.stateDict().find(([n]) => n === "w.master")![1];
    const start = await values(await native().ops.randn([64], { seed: 9 }).to({ dtype: "bfloat16" }));
    const moved = await values(master);
    for (let i = 0; i < 64; i++) expect(start[i]! - moved[i]!).toBeCloseTo(20e-4, 4);
  });

  it("a state for other parameters is refused with the name", () => {
    const opt = new (native().AdamW)([["w", tensorFrom(new Float32Array(4), [4])]]);
    expect(() => opt.loadStateDict([["__step__", tensorFrom(BigInt64Array.from([1n]), [1])]])).toThrow(
      /missing "w\.exp_avg"/,
    );
  });
});

describe("clipGradNorm", () => {
  it("matches torch.nn.utils.clip_grad_norm_ on the DreamBooth gradients", async () => {
    const g = await golden("dreambooth");
    const clipped = [...group(g, "clipped_grad.").values()];
    const [maxNorm] = await values(g.get("max_grad_norm")!);
    const [normBefore] = await values(g.get("grad_norm_before_clip")!);
    // Undo the reference clipping to get the raw gradients back, then clip them again.
    const coef = maxNorm! / (normBefore! + 1e-6);
    const raw = await Promise.all(
      clipped.map(async (t) => {
        const v = (await values(t)).map((x) => x / coef);
        return tensorFrom(Float32Array.from(v), t.shape);
      }),
    );
    const norm = await native().clipGradNorm(raw, maxNorm!);
    expect(Math.abs(norm - normBefore!) / normBefore!).toBeLessThan(1e-5);
    for (let i = 0; i < raw.length; i++)
      await expectClose(raw[i]!, clipped[i]!, { atol: 1e-7, rtol: 1e-5 }, `grad ${i}`);
    // Below the threshold nothing changes.
    const small = [tensorFrom(Float32Array.from([0.1, 0.2]), [2])];
    expect(await native().clipGradNorm(small, 10)).toBeCloseTo(Math.hypot(0.1, 0.2), 6);
    expect(Array.from(small[0]!.toTypedArray() as Float32Array)).toEqual([Math.fround(0.1), Math.fround(0.2)]);
  });
});
