// Sampler names as diffusers, AUTOMATIC1111, ComfyUI and kohya spell them resolve to the
// native samplers; every name sdtune writes into PNG parameters reads back as the same sampler.
import { describe, expect, it } from "vitest";

import { a1111SamplerName } from "../src/pipeline/generate.js";
import {
  SAMPLER_FOR_CLASS,
  createScheduler,
  readSchedulerConfig,
  resolveSamplerName,
  samplerNames,
} from "../src/sched/index.js";
import { fixture } from "./helpers/fixtures.js";

describe("resolveSamplerName", () => {
  it("takes A1111, ComfyUI, kohya and diffusers spellings", () => {
    const cases: [string, string | undefined, string, Record<string, unknown>][] = [
      ["DPM++ 2M Karras", undefined, "dpmpp_2m_karras", {}],
      ["DPM++ 2M", "Karras", "dpmpp_2m_karras", {}],
      ["dpmpp_2m", "karras", "dpmpp_2m_karras", {}],
      ["dpmpp_2m", "normal", "dpmpp_2m", {}],
      ["Euler a", undefined, "euler_ancestral", {}],
      ["euler_ancestral", undefined, "euler_ancestral", {}],
      ["k_euler_a", undefined, "euler_ancestral", {}],
      ["Euler", "Karras", "euler", { use_karras_sigmas: true }],
      ["PLMS", undefined, "pndm", {}],
      ["  ddim ", undefined, "ddim", {}],
      ["dpmsolver++", undefined, "dpmpp_2m", {}],
      ["DPM++ 3M", undefined, "dpm_multistep", { algorithm_type: "dpmsolver++", solver_order: 3 }],
    ];
    for (const [name, schedule, sampler, overrides] of cases) {
      expect(resolveSamplerName(name, schedule), `${name} + ${schedule}`).toEqual({ sampler, overrides });
    }
    for (const [cls, sampler] of Object.entries(SAMPLER_FOR_CLASS)) {
      expect(resolveSamplerName(cls).sampler).toBe(sampler);
    }
  });

  it("refuses unknown names and schedule types, naming them", () => {
    expect(() => resolveSamplerName("DPM++ 2M SDE")).toThrow(/unknown sampler "DPM\+\+ 2M SDE".*Euler a/);
    expect(() => resolveSamplerName("euler", "exponential")).toThrow(/unknown schedule type "exponential"/);
  });

  it("reads back every label a1111SamplerName writes as the same sampler", () => {
    const config = readSchedulerConfig(fixture("tiny-sd"));
    for (const name of samplerNames()) {
      const first = createScheduler(name, config);
      const label = a1111SamplerName(name, first.config);
      const { sampler, overrides } = resolveSamplerName(label);
      const again = createScheduler(sampler, config, overrides);
      expect(a1111SamplerName(sampler, again.config), `${name} -> "${label}"`).toBe(label);
      expect(again.className).toBe(first.className);
      first.dispose();
      again.dispose();
    }
  });
});
