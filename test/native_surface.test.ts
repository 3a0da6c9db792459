// The addon exports exactly what src/native/ declares: a member added in C++ without its
// TypeScript type, or declared in TypeScript but missing from the build, fails here.
import { describe, expect, it } from "vitest";

import { ADDON_SURFACE } from "../src/native/addon.js";
import { native } from "../src/native/index.js";

/** Own member names, leaving out what every function has. */
function members(value: object): string[] {
  const standard = new Set(["length", "name", "prototype", "caller", "arguments"]);
  return Object.getOwnPropertyNames(value)
    .filter((key) => !(typeof value === "function" && standard.has(key)))
    .sort();
}

function check(declared: unknown, actual: unknown, path: string, problems: string[]): void {
  if (declared === "array") {
    if (!Array.isArray(actual)) problems.push(`${path}: declared an array, addon has ${typeof actual}`);
  } else if (declared === "boolean") {
    if (typeof actual !== "boolean") problems.push(`${path}: declared a boolean, addon has ${typeof actual}`);
  } else if (declared === "class" || declared === "function") {
    if (typeof actual !== "function") problems.push(`${path}: declared a ${declared}, addon has ${typeof actual}`);
  } else {
    if (actual === null || (typeof actual !== "object" && typeof actual !== "function")) {
      problems.push(`${path}: declared an object, addon has ${typeof actual}`);
      return;
    }
    const want = Object.keys(declared as object).sort();
    const have = members(actual);
    for (const key of have.filter((k) => !want.includes(k))) problems.push(`${path}.${key}: exported but not declared`);
    for (const key of want) {
      if (!have.includes(key)) problems.push(`${path}.${key}: declared but not exported`);
      else
        check(
          (declared as Record<string, unknown>)[key],
          (actual as Record<string, unknown>)[key],
          `${path}.${key}`,
          problems,
        );
    }
  }
}

describe("native surface", () => {
  it("matches src/native/addon.ts exactly", () => {
    const problems: string[] = [];
    check(ADDON_SURFACE, native(), "addon", problems);
    expect(problems).toEqual([]);
  });

  it("reports a mismatch by name", () => {
    const problems: string[] = [];
    check({ a: "function", b: { c: "function" } }, { a: 1, b: { d() {} } }, "x", problems);
    expect(problems).toEqual([
      "x.a: declared a function, addon has number",
      "x.b.d: exported but not declared",
      "x.b.c: declared but not exported",
    ]);
  });
});
