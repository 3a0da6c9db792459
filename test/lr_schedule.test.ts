// The schedules' defining properties, from diffusers.optimization's formulas.
import { describe, expect, it } from "vitest";

import { learningRate, LR_SCHEDULES, type LrScheduleOptions } from "../src/train/lr_schedule.js";

const base = { baseLr: 1e-4, warmupSteps: 10, totalSteps: 110 };
const lr = (name: LrScheduleOptions["name"], step: number, extra: Partial<LrScheduleOptions> = {}): number =>
  learningRate({ ...base, name, ...extra }, step);

describe("learning-rate schedules", () => {
  it("warm up linearly from 0, so the first update runs at lr 0 (diffusers' LambdaLR)", () => {
    for (const name of LR_SCHEDULES.filter((n) => n !== "constant")) {
      expect(lr(name, 0)).toBe(0);
      expect(lr(name, 5)).toBeCloseTo(0.5e-4, 12);
    }
    expect(lr("constant", 0)).toBe(1e-4);
  });

  it("linear decays to 0 at the last step", () => {
    expect(lr("linear", 10)).toBeCloseTo(1e-4, 12);
    expect(lr("linear", 60)).toBeCloseTo(0.5e-4, 12);
    expect(lr("linear", 110)).toBe(0);
    expect(lr("linear", 200)).toBe(0);
  });

  it("cosine is half a wave: lr/2 halfway, 0 at the end", () => {
    expect(lr("cosine", 60)).toBeCloseTo(0.5e-4, 12);
    expect(lr("cosine", 110)).toBeCloseTo(0, 12);
  });

  it("cosine_with_restarts restarts after each cycle", () => {
    const extra = { numCycles: 2 };
    expect(lr("cosine_with_restarts", 60, extra)).toBeCloseTo(1e-4, 12); // a restart
    expect(lr("cosine_with_restarts", 35, extra)).toBeCloseTo(0.5e-4, 12); // middle of cycle one
    expect(lr("cosine_with_restarts", 110, extra)).toBe(0);
  });

  it("polynomial with power 1 goes linearly to lrEnd and stays there", () => {
    expect(lr("polynomial", 110)).toBeCloseTo(1e-7, 15);
    expect(lr("polynomial", 500)).toBeCloseTo(1e-7, 15);
    expect(lr("polynomial", 60)).toBeCloseTo((1e-4 - 1e-7) / 2 + 1e-7, 15);
    expect(() => lr("polynomial", 60, { lrEnd: 1 })).toThrow(/lrEnd/);
  });
});
