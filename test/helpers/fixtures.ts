// Paths into ../shared/fixtures and parity helpers for golden tests.
import { existsSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { expect } from "vitest";

import { readSafetensors } from "../../src/io/safetensors.js";
import type { Tensor } from "../../src/native/index.js";

const here = dirname(fileURLToPath(import.meta.url));
export const repoRoot = resolve(here, "..", "..");

/** ../shared/fixtures, or SDTUNE_FIXTURES when set. */
export const fixturesDir = process.env.SDTUNE_FIXTURES ?? resolve(repoRoot, "..", "shared", "fixtures");
export const fixture = (...parts: string[]): string => join(fixturesDir, ...parts);
export const haveFixtures = existsSync(fixture("README.md"));

/** Every tensor of golden/<name>.safetensors. */
export async function golden(name: string): Promise<Map<string, Tensor>> {
  return (await readSafetensors(fixture("golden", `${name}.safetensors`))).tensors;
}

export function get(map: Map<string, Tensor>, key: string): Tensor {
  const t = map.get(key);
  if (!t) throw new Error(`golden tensor "${key}" is missing`);
  return t;
}

/** Values of a tensor as float64 numbers (any dtype), copied. */
export async function values(t: Tensor): Promise<Float64Array> {
  const asFloat = t.dtype === "float64" ? t : await t.to({ dtype: "float64" });
  return Float64Array.from(asFloat.toTypedArray() as Float64Array);
}

/**
 * Asserts |actual - expected| <= atol + rtol * |expected| element-wise, with
 * the worst element named in the failure.
 */
export async function expectClose(
  actual: Tensor,
  expected: Tensor,
  tolerance: { atol: number; rtol: number },
  label = "tensor",
): Promise<void> {
  expect(actual.shape, `${label}: shape`).toEqual(expected.shape);
  const a = await values(actual);
  const e = await values(expected);
  let worst = -1;
  let worstExcess = 0;
  for (let i = 0; i < e.length; i++) {
    const diff = Math.abs(a[i]! - e[i]!);
    const excess = diff - (tolerance.atol + tolerance.rtol * Math.abs(e[i]!));
    if (!(excess <= 0) && (worst < 0 || excess > worstExcess || Number.isNaN(diff))) {
      worst = i;
      worstExcess = excess;
    }
  }
  if (worst >= 0) {
    expect.fail(
      `${label}: element ${worst} is ${a[worst]} but the reference is ${e[worst]} ` +
        `(|diff| ${Math.abs(a[worst]! - e[worst]!)} > atol ${tolerance.atol} + rtol ${tolerance.rtol}·|ref|)`,
    );
  }
}

/** Tolerances from the fixtures README. */
export const TOL = {
  forward: { atol: 1e-4, rtol: 1e-4 },
  gradient: { atol: 1e-4, rtol: 1e-3 },
  scheduler: { atol: 1e-6, rtol: 1e-5 },
} as const;

/** A fresh temporary folder, removed by the returned cleanup. */
export async function tempDir(prefix = "sdtune-test-"): Promise<{ path: string; cleanup(): Promise<void> }> {
  const path = await mkdtemp(join(tmpdir(), prefix));
  return { path, cleanup: () => rm(path, { recursive: true, force: true }) };
}
