// The scheduler config is parsed and resolved once, in TypeScript (src/config/scheduler.ts):
// the effective config of every golden sampler equals diffusers' from_config, with no addon.
import { readdirSync, readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";

import { resolveSchedulerParams, SAMPLER_NAMES, type SamplerName } from "../src/config/scheduler.js";
import { parsePythonJson, readSchedulerConfig } from "../src/sched/config.js";
import { fixture } from "./helpers/fixtures.js";

// The samplers the fixture set has golden configs for, read from its file names.
const golden = readdirSync(fixture("golden"))
  .map((f) => /^scheduler_(.+)\.config\.json$/.exec(f)?.[1])
  .filter((n): n is SamplerName => n !== undefined && (SAMPLER_NAMES as readonly string[]).includes(n));

describe("resolveSchedulerParams", () => {
  it("finds golden configs to compare with", () => {
    expect(golden.length).toBeGreaterThan(0);
  });

  it.each(golden)("%s: the effective config equals diffusers' from_config", (name) => {
    const expected = parsePythonJson(
      readFileSync(fixture("golden", `scheduler_${name}.config.json`), "utf8"),
    ) as Record<string, unknown>;
    const resolved = resolveSchedulerParams(name, readSchedulerConfig(fixture("tiny-sd")));
    expect(resolved.className).toBe(expected._class_name);
    for (const [key, value] of Object.entries(resolved.effective)) {
      if (key === "eta") continue; // a sampler option, not an init parameter
      expect(expected, `key ${key}`).toHaveProperty(key);
      expect(value, `value of ${key}`).toEqual(expected[key]);
    }
    // Every field crosses to native code, the ones the class does not take at their defaults.
    for (const [key, value] of Object.entries(resolved.effective)) expect(resolved.params).toHaveProperty(key, value);
  });

  it("applies presets after the config and refuses overrides the class does not take", () => {
    const config = readSchedulerConfig(fixture("tiny-sd"));
    expect(resolveSchedulerParams("dpmpp_2m_karras", config).params.use_karras_sigmas).toBe(true);
    expect(resolveSchedulerParams("dpmpp_2m", config, { use_karras_sigmas: true }).params.use_karras_sigmas).toBe(true);
    expect(() => resolveSchedulerParams("ddim", config, { use_karras_sigmas: true })).toThrow(
      /scheduler option "use_karras_sigmas" does not apply to the ddim sampler \(DDIMScheduler\)/,
    );
    const ignored = resolveSchedulerParams("ddim", {
      ...config,
      use_karras_sigmas: true,
      _use_default_values: ["clip_sample"],
    });
    expect(ignored.effective).not.toHaveProperty("use_karras_sigmas");
    expect(ignored.params.clip_sample).toBe(true); // DDIM's own default, not the config's
  });
});
