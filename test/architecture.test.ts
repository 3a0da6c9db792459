// The shape of the house (shared/DESIGN.md "Layers"): the CLI sees only the public API,
// imports never run upward, and the addon stays internal.
import { readdirSync, readFileSync, statSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";

import { describe, expect, it } from "vitest";

const src = resolve(import.meta.dirname, "..", "src");

/** Lowest first: a module may import its own layer or any layer before it. */
const LAYERS = [
  ["config"],
  ["native"],
  ["io", "tensor"],
  ["runtime", "text", "sched"],
  ["models"],
  ["hub"],
  ["lora"],
  ["pipeline"],
  ["data"],
  ["cache"],
  ["eval"],
  ["train"],
  ["demo"],
  ["index"],
  ["cli"],
];

function sources(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const full = join(dir, name);
    return statSync(full).isDirectory() ? sources(full) : name.endsWith(".ts") ? [full] : [];
  });
}

/** The top-level part of src/ a file belongs to ("models" for src/models/unet.ts, "index" for src/index.ts). */
function part(file: string): string {
  const [first, second] = relative(src, file).split("/");
  return second === undefined ? first!.replace(/\.(ts|js)$/, "") : first!;
}

function rank(name: string): number {
  const i = LAYERS.findIndex((layer) => layer.includes(name));
  if (i < 0) throw new Error(`src/${name} has no place in LAYERS (test/architecture.test.ts) or DESIGN.md`);
  return i;
}

function relativeImports(file: string): string[] {
  const text = readFileSync(file, "utf8");
  return [...text.matchAll(/(?:from|import)\s*\(?\s*"(\.{1,2}\/[^"]+)"/g)].map((m) => m[1]!);
}

describe("layers", () => {
  const files = sources(src);

  it("every part of src/ has a layer", () => {
    const parts = new Set(files.map(part));
    expect([...parts].filter((p) => LAYERS.every((l) => !l.includes(p)))).toEqual([]);
  });

  it("no import runs upward", () => {
    const upward: string[] = [];
    for (const file of files) {
      for (const spec of relativeImports(file)) {
        const target = resolve(dirname(file), spec);
        const from = part(file);
        const to = part(target);
        if (rank(to) > rank(from)) upward.push(`${relative(src, file)} -> ${spec}`);
      }
    }
    expect(upward).toEqual([]);
  });

  it("every CLI command imports only the public API", () => {
    const deep: string[] = [];
    for (const file of sources(join(src, "cli"))) {
      for (const spec of relativeImports(file)) {
        if (spec !== "../index.js" && !spec.startsWith("./")) deep.push(`${relative(src, file)} -> ${spec}`);
      }
    }
    expect(deep).toEqual([]);
  });
});

describe("public API", () => {
  it("keeps the addon internal and exports what the README documents", async () => {
    const api = await import("../src/index.js");
    const names = Object.keys(api);
    for (const internal of ["native", "addonPath", "addonCandidates", "nativeUNetConfig", "nativeVAEConfig"]) {
      expect(names).not.toContain(internal);
    }
    for (const documented of [
      "train",
      "Trainer",
      "loadPipeline",
      "evaluate",
      "loadLoraFile",
      "openDataset",
      "resolveModel",
    ]) {
      expect(names).toContain(documented);
    }
    expect(typeof api.train).toBe("function");
    expect(typeof api.runtimeInfo().libtorch).toBe("string");
  });
});
