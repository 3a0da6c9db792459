// What a source build needs, as the install hook checks it before building: each missing
// piece is named on its own (a missing cmake is not blamed on libtorch), with the one
// apt-get line or environment variable that fixes it.
import { existsSync } from "node:fs";
import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";

import { afterAll, beforeAll, describe, expect, it } from "vitest";

// @ts-expect-error: a plain .mjs script (the install hook runs it before any TypeScript exists).
import * as requirements from "../scripts/native-requirements.mjs";
import { tempDir } from "./helpers/fixtures.js";

interface Missing {
  problem: string;
  packages?: string[];
}
const { findTorch, missingBuildRequirements, requirementsMessage } = requirements as {
  findTorch(env: NodeJS.ProcessEnv): Missing & { where?: string };
  missingBuildRequirements(env: NodeJS.ProcessEnv): Missing[];
  requirementsMessage(missing: Missing[]): string;
};

let dir: { path: string; cleanup(): Promise<void> };
beforeAll(async () => {
  dir = await tempDir("sdtune-requirements-");
});
afterAll(async () => dir.cleanup());

describe("source build requirements", () => {
  it("finds this machine's libtorch where CMakeLists.txt does", () => {
    const torch = findTorch({ PATH: process.env.PATH });
    expect(torch.problem).toBeUndefined();
    expect(torch.where).toBeDefined();
    expect(missingBuildRequirements({ PATH: process.env.PATH })).toEqual([]);
  });

  it("names a missing cmake and compiler, not libtorch, with the apt-get line for them", async () => {
    const emptyPath = join(dir.path, "empty-bin");
    await mkdir(emptyPath);
    const missing = missingBuildRequirements({ PATH: emptyPath });
    expect(missing.map((m) => m.problem)).toEqual([
      "cmake (3.18 or newer) is not installed",
      "no C++17 compiler (g++ or clang++) is installed",
    ]);
    const message = requirementsMessage(missing);
    expect(message.split("\n")[0]).toBe(
      "sdtune: cannot build the native addon: cmake (3.18 or newer) is not installed; no C++17 compiler (g++ or clang++) is installed.",
    );
    if (existsSync("/usr/bin/apt-get"))
      expect(message).toMatch(/apt-get install -y --no-install-recommends cmake g\+\+\n/);
  });

  it("checks LIBTORCH and Torch_DIR point at a libtorch CMake package", async () => {
    const unpacked = join(dir.path, "libtorch");
    expect(findTorch({ LIBTORCH: unpacked }).problem).toBe(
      `LIBTORCH=${unpacked} has no share/cmake/Torch/TorchConfig.cmake (point it at an unpacked libtorch)`,
    );
    expect(findTorch({ Torch_DIR: unpacked }).problem).toBe(
      `Torch_DIR=${unpacked} has no TorchConfig.cmake (point it at <libtorch>/share/cmake/Torch)`,
    );
    await mkdir(join(unpacked, "share", "cmake", "Torch"), { recursive: true });
    await writeFile(join(unpacked, "share", "cmake", "Torch", "TorchConfig.cmake"), "");
    expect(findTorch({ LIBTORCH: unpacked })).toEqual({ where: `LIBTORCH=${unpacked}` });
    const message = requirementsMessage([findTorch({ Torch_DIR: join(dir.path, "nowhere") })]);
    expect(message).toContain("set LIBTORCH=/path/to/libtorch (or Torch_DIR=/path/to/libtorch/share/cmake/Torch)");
    expect(message).not.toContain("apt-get");
  });
});
