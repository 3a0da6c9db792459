// Samplers, training noise and generators against the diffusers 0.27.2 references in
// ../shared/fixtures/golden (scheduler_*.safetensors, scheduler_*.config.json).
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { native, type Tensor } from "../src/native/index.js";
import {
  NoiseSchedule,
  createGenerator,
  createScheduler,
  defaultSamplerName,
  parsePythonJson,
  readSchedulerConfig,
  samplerNames,
  type SamplerName,
  type SchedulerConfig,
} from "../src/sched/index.js";
import { tensorFrom } from "../src/tensor.js";
import {
  TOL,
  expectClose,
  fixture,
  get,
  golden,
  goldenNoiseSeed,
  goldenReadmeNumber,
  SAMPLER_OF_CLASS,
  tempDir,
} from "./helpers/fixtures.js";

// The golden files and the sampler that reproduces each (overrides are the names' presets).
const GOLDEN_SAMPLERS: SamplerName[] = [
  "ddim",
  "ddpm",
  "pndm",
  "euler",
  "euler_ancestral",
  "dpmpp_2m",
  "dpmpp_2m_karras",
];
const NOISE_SEED = goldenNoiseSeed(); // the CPU torch.Generator seed of the reference loops
// Samplers whose recorded draws come from that seeded generator (golden README). Euler
// draws too (churn noise, unused at s_churn = 0), but its recorded draws differ between
// the 10- and 25-step runs, so they came from another RNG: only their count is checked.
const SEEDED_DRAWS = new Set<SamplerName>(["ddpm", "euler_ancestral"]);

let config: SchedulerConfig;
beforeAll(() => {
  config = readSchedulerConfig(fixture("tiny-sd"));
});

/** Rows [begin, end) of a float32 golden tensor as a tensor of `shape`. */
function slice(t: Tensor, index: number, shape: number[]): Tensor {
  const size = shape.reduce((a, b) => a * b, 1);
  const data = (t.toTypedArray() as Float32Array).subarray(index * size, (index + 1) * size);
  return tensorFrom(data, shape);
}

function floats(t: Tensor): number[] {
  return Array.from(t.toTypedArray() as Float32Array);
}

function numbers(t: Tensor): number[] {
  return Array.from(t.toTypedArray() as Float32Array | BigInt64Array, Number);
}

// The reference loops' fake model, as golden/README.md states it:
// "model_output = 0.9*model_input + F*(float(t)/1000)".
const FAKE_GAIN = goldenReadmeNumber("scheduler_ddim", /model_output = ([\d.]+)\*model_input/);
const FAKE_T_SCALE = goldenReadmeNumber("scheduler_ddim", /F\*\(float\(t\)\/(\d+)\)/);

/** The reference's fake model, in float32: gain * input + F * (float(t) / scale). */
function fakeModel(input: Tensor, F: Float32Array, t: number): Tensor {
  const x = input.toTypedArray() as Float32Array;
  const scale = Math.fround(t / FAKE_T_SCALE);
  const a = Math.fround(FAKE_GAIN);
  const out = new Float32Array(x.length);
  for (let k = 0; k < x.length; k++) {
    out[k] = Math.fround(Math.fround(a * x[k]!) + Math.fround(F[k]! * scale));
  }
  return tensorFrom(out, input.shape);
}

describe.each(GOLDEN_SAMPLERS)("%s against golden/scheduler_<name>.safetensors", (name) => {
  let ref: Map<string, Tensor>;
  beforeAll(async () => {
    ref = await golden(`scheduler_${name}`);
  });

  it("resolves the same effective config as diffusers' from_config", () => {
    const expected = parsePythonJson(
      readFileSync(fixture("golden", `scheduler_${name}.config.json`), "utf8"),
    ) as Record<string, unknown>;
    const scheduler = createScheduler(name, config);
    expect(scheduler.className).toBe(expected._class_name);
    const effective = { ...scheduler.config };
    delete effective.eta; // a sampler option, not an init parameter
    for (const [key, value] of Object.entries(effective)) {
      expect(expected, `key ${key}`).toHaveProperty(key);
      expect(value, `value of ${key}`).toEqual(expected[key]);
    }
    scheduler.dispose();
  });

  it.each([10, 25])("%i steps: timesteps, sigmas, init_noise_sigma and every step of the loop", async (steps) => {
    const prefix = `steps${steps}`;
    const scheduler = createScheduler(name, config);
    scheduler.setTimesteps(steps);

    // Tables: timesteps exact (dtype included), sigmas and init_noise_sigma within tolerance.
    const refTimesteps = get(ref, `${prefix}.timesteps`);
    expect(scheduler.timesteps.dtype).toBe(refTimesteps.dtype);
    expect(numbers(scheduler.timesteps)).toEqual(numbers(refTimesteps));
    if (ref.has(`${prefix}.sigmas`)) {
      await expectClose(scheduler.sigmas!, get(ref, `${prefix}.sigmas`), TOL.scheduler, "sigmas");
    }
    await expectClose(scheduler.initNoiseSigma, get(ref, `${prefix}.init_noise_sigma`), TOL.scheduler, "init sigma");

    // The pipeline-style loop with the fake model, from x_T * init_noise_sigma.
    const F = get(ref, "F").toTypedArray() as Float32Array;
    const shape = get(ref, "x_T").shape;
    const sigma0 = (scheduler.initNoiseSigma.toTypedArray() as Float32Array)[0]!;
    const xT = get(ref, "x_T").toTypedArray() as Float32Array;
    let latents = tensorFrom(
      xT.map((v) => Math.fround(v * sigma0)),
      shape,
    );
    const generator = createGenerator(NOISE_SEED);
    const hasPred = ref.has(`${prefix}.pred_original_sample`);
    const hasNoise = ref.has(`${prefix}.noise`);
    let draws = 0;
    for (let i = 0; i < scheduler.numCalls; i++) {
      const label = `${name} ${prefix} step ${i}`;
      const input = scheduler.scaleModelInput(latents, i);
      await expectClose(input, slice(get(ref, `${prefix}.model_input`), i, shape), TOL.scheduler, `${label} input`);
      const output = fakeModel(input, F, scheduler.timestepAt(i));
      await expectClose(output, slice(get(ref, `${prefix}.model_output`), i, shape), TOL.scheduler, `${label} output`);
      const result = await scheduler.step(output, i, latents, generator);
      await expectClose(result.prevSample, slice(get(ref, `${prefix}.latents`), i, shape), TOL.scheduler, label);
      expect(result.predOriginalSample !== undefined, `${label}: has pred_original_sample`).toBe(hasPred);
      if (hasPred) {
        const expected = slice(get(ref, `${prefix}.pred_original_sample`), i, shape);
        await expectClose(result.predOriginalSample!, expected, TOL.scheduler, `${label} x0`);
      }
      if (result.noise) {
        expect(hasNoise, `${label}: drew noise`).toBe(true);
        const expected = slice(get(ref, `${prefix}.noise`), draws++, shape);
        if (SEEDED_DRAWS.has(name)) await expectClose(result.noise, expected, { atol: 0, rtol: 0 }, `${label} noise`);
      }
      latents = result.prevSample;
    }
    expect(draws, "number of noise draws").toBe(hasNoise ? get(ref, `${prefix}.noise`).shape[0] : 0);
    scheduler.dispose();
  });
});

describe("golden/scheduler_timesteps.safetensors", () => {
  it("matches every <scheduler>.<spacing>.<N> timestep (exact) and sigma table", async () => {
    const ref = await golden("scheduler_timesteps");
    const keys = [...ref.keys()].filter((k) => k.endsWith(".timesteps"));
    // Every golden sampler with each of the three spacings.
    expect(keys.length).toBeGreaterThanOrEqual(GOLDEN_SAMPLERS.length * 3);
    for (const key of keys) {
      const [name, spacing, steps] = key.split(".") as [SamplerName, "leading" | "linspace" | "trailing", string];
      const scheduler = createScheduler(name, config, { timestep_spacing: spacing });
      scheduler.setTimesteps(Number(steps));
      const expected = get(ref, key);
      expect(scheduler.timesteps.dtype, key).toBe(expected.dtype);
      expect(numbers(scheduler.timesteps), key).toEqual(numbers(expected));
      const sigmaKey = key.replace(/timesteps$/, "sigmas");
      if (ref.has(sigmaKey)) await expectClose(scheduler.sigmas!, get(ref, sigmaKey), TOL.scheduler, sigmaKey);
      else expect(scheduler.sigmas, key).toBeUndefined();
      scheduler.dispose();
    }
  });
});

describe("training noise (golden/scheduler_ddpm_train.safetensors)", () => {
  let ref: Map<string, Tensor>;
  let schedule: NoiseSchedule;
  beforeAll(async () => {
    ref = await golden("scheduler_ddpm_train");
    schedule = NoiseSchedule.fromConfig(config);
  });
  afterAll(() => schedule.dispose());

  it("computes betas and alphas_cumprod in float32 as diffusers", async () => {
    expect(schedule.numTrainTimesteps).toBe(config.num_train_timesteps);
    expect(schedule.betas.shape).toEqual(get(ref, "betas").shape);
    expect(schedule.betas.dtype).toBe("float32");
    await expectClose(schedule.betas, get(ref, "betas"), TOL.scheduler, "betas");
    await expectClose(schedule.alphasCumprod, get(ref, "alphas_cumprod"), TOL.scheduler, "alphas_cumprod");
  });

  it("adds noise, computes the v target and the SNR with one timestep per sample", async () => {
    const [x0, noise, t] = [get(ref, "x0"), get(ref, "noise"), get(ref, "timesteps")];
    await expectClose(schedule.addNoise(x0, noise, t), get(ref, "noisy"), TOL.scheduler, "noisy");
    await expectClose(schedule.getVelocity(x0, noise, t), get(ref, "velocity"), TOL.scheduler, "velocity");
    await expectClose(schedule.snr(t), get(ref, "snr"), TOL.scheduler, "snr");
  });

  it("refuses timesteps outside the table and mismatched batches", () => {
    const x0 = get(ref, "x0");
    const noise = get(ref, "noise");
    const T = config.num_train_timesteps;
    expect(() => schedule.addNoise(x0, noise, tensorFrom(new BigInt64Array([BigInt(T)]), [1]))).toThrow(
      new RegExp(`timesteps must lie in \\[0, ${T}\\)`),
    );
    const wrongBatch = x0.shape[0]! + 1;
    expect(() => schedule.addNoise(x0, noise, tensorFrom(new BigInt64Array(wrongBatch), [wrongBatch]))).toThrow(
      /one per batch row/,
    );
    expect(() => schedule.snr(tensorFrom(new Float32Array(2), [2]))).toThrow(/integer tensor/);
  });

  it("rescales betas to zero terminal SNR (rescale_betas_zero_snr)", () => {
    const rescaled = NoiseSchedule.fromConfig(config, { rescale_betas_zero_snr: true });
    const acp = rescaled.alphasCumprod.toTypedArray() as Float32Array;
    const plain = schedule.alphasCumprod.toTypedArray() as Float32Array;
    expect(acp.length).toBe(config.num_train_timesteps);
    expect(acp[acp.length - 1]).toBe(0); // zero SNR at the last timestep
    expect(acp[0]).toBeCloseTo(plain[0]!, 6); // the first one kept
    rescaled.dispose();
  });
});

describe("v-prediction", () => {
  // With the exact targets of a known (x0, noise), an epsilon model (output = noise) and a
  // v model (output = getVelocity) describe the same denoiser: every sampler must take the
  // same step from both, and recover x0. Checks each sampler's v conversion.
  it.each(GOLDEN_SAMPLERS)("%s takes the same first step from the exact epsilon and v outputs", async (name) => {
    const ref = await golden("scheduler_ddpm_train");
    const rowShape = [1, ...get(ref, "x0").shape.slice(1)];
    const x0 = slice(get(ref, "x0"), 0, rowShape);
    const noise = slice(get(ref, "noise"), 0, rowShape);
    const [eps, v] = ["epsilon", "v_prediction"].map((prediction_type) =>
      createScheduler(name, config, { prediction_type: prediction_type as "epsilon" }),
    ) as [ReturnType<typeof createScheduler>, ReturnType<typeof createScheduler>];
    eps.setTimesteps(10);
    v.setTimesteps(10);
    const t = tensorFrom(new BigInt64Array([BigInt(eps.timestepAt(0))]), [1]);
    const schedule = NoiseSchedule.fromConfig(config);
    let sample = schedule.addNoise(x0, noise, t); // x_t = sqrt(acp) x0 + sqrt(1 - acp) noise
    if (name === "euler" || name === "euler_ancestral") {
      // The Euler samplers work on x0 + sigma * noise (= x_t / sqrt(acp)).
      const sigma = (eps.sigmas!.toTypedArray() as Float32Array)[0]!;
      const a = x0.toTypedArray() as Float32Array;
      const n = noise.toTypedArray() as Float32Array;
      sample = tensorFrom(
        a.map((value, k) => value + sigma * n[k]!),
        x0.shape,
      );
    }
    const fromEps = await eps.step(noise, 0, sample, createGenerator(5));
    const fromV = await v.step(schedule.getVelocity(x0, noise, t), 0, sample, createGenerator(5));
    const tol = { atol: 2e-5, rtol: 1e-4 };
    await expectClose(fromV.prevSample, fromEps.prevSample, tol, `${name} prev sample`);
    if (fromEps.predOriginalSample) {
      await expectClose(fromEps.predOriginalSample, x0, tol, `${name} x0 from epsilon`);
      await expectClose(fromV.predOriginalSample!, x0, tol, `${name} x0 from v`);
    }
    for (const s of [eps, v, schedule]) s.dispose();
  });
});

/** Runs the fake-model loop from the DDIM file's x_T; returns the latents after every step. */
async function runLoop(name: SamplerName, overrides: Record<string, unknown>, steps: number): Promise<Float32Array[]> {
  const ref = await golden("scheduler_ddim");
  const F = get(ref, "F").toTypedArray() as Float32Array;
  const scheduler = createScheduler(name, config, overrides);
  scheduler.setTimesteps(steps);
  const sigma0 = (scheduler.initNoiseSigma.toTypedArray() as Float32Array)[0]!;
  const xT = get(ref, "x_T");
  let latents = tensorFrom(
    (xT.toTypedArray() as Float32Array).map((v) => v * sigma0),
    xT.shape,
  );
  const generator = createGenerator(11);
  const out: Float32Array[] = [];
  for (let i = 0; i < scheduler.numCalls; i++) {
    const input = scheduler.scaleModelInput(latents, i);
    latents = (await scheduler.step(fakeModel(input, F, scheduler.timestepAt(i)), i, latents, generator)).prevSample;
    out.push(Float32Array.from(latents.toTypedArray() as Float32Array));
  }
  scheduler.dispose();
  return out;
}

describe("DPM-Solver variants", () => {
  it("first-order DPM-Solver++ is DDIM (trailing spacing, final sigma = sigma_min)", async () => {
    // Both step x_t -> x_prev along the same exponential integrator (DPM-Solver++ paper, eq. 9).
    const ddim = await runLoop("ddim", { timestep_spacing: "trailing" }, 10);
    const dpm = await runLoop(
      "dpm_multistep",
      { timestep_spacing: "trailing", solver_order: 1, final_sigmas_type: "sigma_min" },
      10,
    );
    for (let i = 0; i < ddim.length; i++) {
      await expectClose(
        tensorFrom(dpm[i]!, [dpm[i]!.length]),
        tensorFrom(ddim[i]!, [ddim[i]!.length]),
        { atol: 1e-5, rtol: 1e-4 },
        `step ${i}`,
      );
    }
  });

  it.each([
    { algorithm_type: "sde-dpmsolver++" },
    { algorithm_type: "dpmsolver", final_sigmas_type: "sigma_min" },
    { algorithm_type: "sde-dpmsolver", final_sigmas_type: "sigma_min" },
    { solver_order: 3 },
    { solver_type: "heun" },
    { use_lu_lambdas: true },
    { prediction_type: "v_prediction", rescale_betas_zero_snr: true, timestep_spacing: "trailing" },
  ])("%o runs a whole loop to a finite sample", async (overrides) => {
    const latents = await runLoop("dpm_multistep", overrides, 20);
    expect(latents).toHaveLength(20);
    expect(latents.every((step) => step.every(Number.isFinite))).toBe(true);
  });
});

describe("img2img noising (Scheduler.addNoise)", () => {
  // Not dpmpp_2m_karras: its sigmas lie between the training table's entries (only the
  // timesteps are rounded), so no integer timestep of the forward process has its level.
  it.each(GOLDEN_SAMPLERS.filter((name) => name !== "dpmpp_2m_karras"))(
    "%s noises x0 to the level of a step as the forward process does",
    async (name) => {
      const ref = await golden("scheduler_ddpm_train");
      const x0 = get(ref, "x0");
      const noise = get(ref, "noise");
      const scheduler = createScheduler(name, config);
      scheduler.setTimesteps(10);
      const schedule = NoiseSchedule.fromConfig(config);
      const index = 3;
      const t = tensorFrom(new BigInt64Array(x0.shape[0]!).fill(BigInt(scheduler.timestepAt(index))), [x0.shape[0]!]);
      const expected = schedule.addNoise(x0, noise, t); // golden-checked above
      let noisy = scheduler.addNoise(x0, noise, index);
      if (name === "euler" || name === "euler_ancestral") {
        // Euler works on x0 + sigma * noise = x_t / sqrt(acp): its model input is the VP sample.
        noisy = scheduler.scaleModelInput(noisy, index);
      }
      const exact = !scheduler.sigmas; // DDPM/DDIM/PNDM use the same formula; sigma samplers go through sigma
      await expectClose(noisy, expected, exact ? { atol: 0, rtol: 0 } : { atol: 1e-6, rtol: 1e-5 }, name);
      scheduler.dispose();
      schedule.dispose();
    },
  );
});

describe("sampler options", () => {
  it("DDIM eta > 0 adds eta-scaled noise from the generator, one draw per step", async () => {
    const ref = await golden("scheduler_ddim");
    const x = get(ref, "x_T");
    const deterministic = createScheduler("ddim", config);
    const stochastic = createScheduler("ddim", config, { eta: 1 });
    for (const s of [deterministic, stochastic]) s.setTimesteps(10);
    const a = await deterministic.step(x, 0, x, createGenerator(3));
    const b = await stochastic.step(x, 0, x, createGenerator(3));
    expect(a.noise).toBeUndefined();
    expect(floats(b.noise!)).toEqual(floats(createGenerator(3).randn(x.shape)));
    await expectClose(b.predOriginalSample!, a.predOriginalSample!, { atol: 0, rtol: 0 }, "x0 does not depend on eta");
    expect(native().ops.maxAbsDiff(a.prevSample, b.prevSample)).toBeGreaterThan(1e-3);
  });

  it("thresholding with sample_max_value 1 equals clipping x0 to [-1, 1]", async () => {
    // diffusers: "When clamped to min=1, equivalent to standard clipping to [-1, 1]".
    const ref = await golden("scheduler_ddim");
    const clipped = createScheduler("ddim", config, { clip_sample: true, clip_sample_range: 1 });
    const thresholded = createScheduler("ddim", config, { thresholding: true, sample_max_value: 1 });
    for (const s of [clipped, thresholded]) s.setTimesteps(10);
    const x = get(ref, "x_T");
    const big = tensorFrom(
      (x.toTypedArray() as Float32Array).map((v) => v * 3),
      x.shape,
    );
    const a = await clipped.step(big, 0, x);
    const b = await thresholded.step(big, 0, x);
    await expectClose(b.predOriginalSample!, a.predOriginalSample!, { atol: 0, rtol: 0 }, "x0");
    expect(Math.max(...(a.predOriginalSample!.toTypedArray() as Float32Array).map(Math.abs))).toBeLessThanOrEqual(1);
  });

  it("picks the sampler from _class_name and reads Python's -Infinity", async () => {
    expect(defaultSamplerName(config)).toBe(SAMPLER_OF_CLASS[String(config._class_name)]);
    const dpmConfig = readSchedulerConfig(fixture("golden", "scheduler_dpmpp_2m.config.json"));
    expect(dpmConfig.lambda_min_clipped).toBe(-Infinity);
    const scheduler = createScheduler(undefined, dpmConfig);
    expect(scheduler.name).toBe("dpm_multistep");
    scheduler.setTimesteps(10);
    const ref = await golden("scheduler_dpmpp_2m");
    expect(numbers(scheduler.timesteps)).toEqual(numbers(get(ref, "steps10.timesteps")));
    expect(samplerNames()).toEqual(expect.arrayContaining(GOLDEN_SAMPLERS));
  });

  it("draws per-row noise from a list of generators", async () => {
    const scheduler = createScheduler("euler_ancestral", config);
    scheduler.setTimesteps(10);
    const sample = tensorFrom(new Float32Array(2 * 4 * 2 * 2).fill(0.5), [2, 4, 2, 2]);
    const { noise } = await scheduler.step(sample, 0, sample, [createGenerator(1), createGenerator(2)]);
    const rows = noise!.toTypedArray() as Float32Array;
    expect(Array.from(rows.subarray(0, 16))).toEqual(floats(createGenerator(1).randn([1, 4, 2, 2])));
    expect(Array.from(rows.subarray(16))).toEqual(floats(createGenerator(2).randn([1, 4, 2, 2])));
  });
});

describe("errors", () => {
  it("names the valid samplers for an unknown name", () => {
    expect(() => createScheduler("heun" as SamplerName, config)).toThrow(
      /unknown sampler "heun"; valid samplers: ddpm, ddim, pndm, euler, euler_ancestral, dpmpp_2m, dpmpp_2m_karras/,
    );
    expect(() => native().Scheduler.create("lms", config)).toThrow(/unknown sampler "lms"; valid samplers/);
  });

  it("refuses fewer than one step, stepping before setTimesteps, and steps out of order", async () => {
    const scheduler = createScheduler("dpmpp_2m", config);
    const x = tensorFrom(new Float32Array(4), [1, 4]);
    expect(() => scheduler.scaleModelInput(x, 0)).toThrow(/call setTimesteps\(\) first/);
    expect(() => scheduler.setTimesteps(0)).toThrow(/must be at least 1 \(got 0\)/);
    expect(() => scheduler.setTimesteps(-3)).toThrow(/must be at least 1/);
    expect(() => scheduler.setTimesteps(config.num_train_timesteps + 1)).toThrow(/exceed num_train_timesteps/);
    scheduler.setTimesteps(5);
    await scheduler.step(x, 0, x);
    await expect(scheduler.step(x, 2, x)).rejects.toThrow(/expected step index 1 but got 2/);
    await expect(scheduler.step(x, 5, x)).rejects.toThrow(/outside \[0, 5\)/);
    scheduler.dispose();
    scheduler.dispose();
    expect(() => scheduler.setTimesteps(5)).toThrow(/disposed/);
  });

  it("names the field of an unsupported or mistyped config value", async () => {
    expect(() => createScheduler("pndm", { ...config, skip_prk_steps: false })).toThrow(
      /skip_prk_steps=false is not supported by the pndm sampler/,
    );
    expect(() => createScheduler("dpmpp_2m", config, { algorithm_type: "unipc" })).toThrow(
      /algorithm_type=unipc is not supported/,
    );
    expect(() => createScheduler("euler", config, { interpolation_type: "log_linear" })).toThrow(
      /interpolation_type=log_linear is not supported by the euler sampler/,
    );
    expect(() => createScheduler("ddim", config, { use_karras_sigmas: true })).toThrow(
      /scheduler option "use_karras_sigmas" does not apply to the ddim sampler/,
    );
    expect(() => createScheduler("ddim", config, { beta_schedule: "cosine" as never })).toThrow(/beta_schedule/);
    const dir = await tempDir();
    try {
      const file = join(dir.path, "scheduler_config.json");
      writeFileSync(file, JSON.stringify({ _class_name: "LMSDiscreteScheduler", timestep_spacing: "middle" }));
      expect(() => readSchedulerConfig(file)).toThrow(new RegExp(`${file}: field "timestep_spacing"`));
      writeFileSync(file, JSON.stringify({ _class_name: "LMSDiscreteScheduler" }));
      expect(() => createScheduler(undefined, readSchedulerConfig(file))).toThrow(
        /scheduler class "LMSDiscreteScheduler" is not implemented/,
      );
    } finally {
      await dir.cleanup();
    }
  });
});

describe("Generator", () => {
  it("draws what ops.randn (torch.Generator().manual_seed) draws for the same seed", () => {
    const generator = createGenerator(NOISE_SEED);
    expect(generator.seed).toBe(NOISE_SEED);
    const a = floats(generator.randn([2, 3, 4]));
    expect(a).toEqual(floats(native().ops.randn([2, 3, 4], { seed: NOISE_SEED })));
    // The stream continues: a second draw differs from the first.
    expect(floats(generator.randn([2, 3, 4]))).not.toEqual(a);
  });

  it("reproduces the reference loop's noise draws in order", async () => {
    const ref = await golden("scheduler_euler_ancestral");
    const generator = createGenerator(NOISE_SEED);
    const noise = get(ref, "steps10.noise");
    const shape = noise.shape.slice(1);
    for (let i = 0; i < noise.shape[0]!; i++) {
      await expectClose(generator.randn(shape), slice(noise, i, shape), { atol: 0, rtol: 0 }, `draw ${i}`);
    }
  });

  it("round-trips its state for an exact resume", () => {
    const generator = createGenerator(7);
    generator.randn([5]);
    const state = generator.getState();
    expect(state.dtype).toBe("uint8");
    const next = floats(generator.randn([3, 3]));
    generator.randn([100]);
    generator.setState(state);
    expect(floats(generator.randn([3, 3]))).toEqual(next);
    const other = createGenerator(8);
    other.setState(state);
    expect(floats(other.randn([3, 3]))).toEqual(next);
    generator.manualSeed(7);
    expect(floats(generator.randn([5]))).toEqual(floats(native().ops.randn([5], { seed: 7 })));
  });

  it("validates seeds and states", () => {
    expect(createGenerator(2n ** 60n).seed).toBe(2n ** 60n);
    expect(typeof createGenerator().seed).toBe("number");
    expect(() => createGenerator(1.5)).toThrow(/safe integer/);
    expect(() => createGenerator(7).setState(tensorFrom(new Float32Array(4), [4]))).toThrow(/uint8/);
    expect(() => createGenerator(7).setState(tensorFrom(new Uint8Array(3), [3]))).toThrow();
    expect(createGenerator(3).randn([2], { dtype: "float64" }).dtype).toBe("float64");
  });
});

describe("timesteps outside the training schedule", () => {
  it("are refused when set, not read past the table (diffusers raises IndexError later)", () => {
    const config = readSchedulerConfig(fixture("tiny-sd"));
    const T = config.num_train_timesteps;
    // leading spacing with steps_offset 1: T steps would start at timestep T.
    const ddim = createScheduler("ddim", config, { timestep_spacing: "leading", steps_offset: 1 });
    expect(() => ddim.setTimesteps(T)).toThrow(new RegExp(`timesteps reach ${T}, outside \\[0, ${T}\\)`));
    ddim.setTimesteps(T - 1);
    expect(ddim.numCalls).toBe(T - 1);
  });
});
