// Reading config files (YAML or JSON) and applying command-line overrides.
import { readFile } from "node:fs/promises";

import { parse as parseYaml, YAMLParseError } from "yaml";

import { ConfigError } from "./errors.js";
import { resolveEvalConfigPaths } from "./paths.js";

/** Parses a .yaml/.yml/.json config file; errors name the file (and line for YAML). */
export async function loadConfigFile(path: string): Promise<Record<string, unknown>> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    throw new ConfigError(
      code === "ENOENT" ? `${path}: config file not found` : `${path}: ${(error as Error).message}`,
    );
  }
  let value: unknown;
  try {
    value = path.endsWith(".json") ? JSON.parse(text) : parseYaml(text, { prettyErrors: true });
  } catch (error) {
    const where = error instanceof YAMLParseError && error.linePos ? ` (line ${error.linePos[0].line})` : "";
    throw new ConfigError(
      `${path}: not valid ${path.endsWith(".json") ? "JSON" : "YAML"}${where}: ${(error as Error).message.split("\n")[0]}`,
    );
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new ConfigError(`${path}: the config must be a mapping of keys to values`);
  }
  return value as Record<string, unknown>;
}

/**
 * Applies "a.b.c=value" overrides (numbers, booleans, null, [a, b], {x: 1} and quoted strings
 * are read as YAML; other values are taken literally); numeric path parts index arrays
 * ("stages.1.lora.rank=8").
 */
export function applyOverrides(config: Record<string, unknown>, overrides: string[]): Record<string, unknown> {
  const out = structuredClone(config);
  for (const override of overrides) {
    const eq = override.indexOf("=");
    if (eq <= 0) throw new ConfigError(`override "${override}": expected key=value (e.g. learning_rate=5e-5)`);
    const path = override.slice(0, eq).split(".");
    const text = override.slice(eq + 1);
    let value: unknown = text;
    // Numbers, booleans, null, [lists], {maps} and quoted strings are read as YAML; anything
    // else stays the literal text (a prompt with "#" or ": " must not become a comment or a map).
    if (/^\s*([-+]?(\d|\.\d)|true\b|false\b|null\b|~|\[|\{|"|')/i.test(text)) {
      try {
        value = parseYaml(text);
      } catch {
        value = text;
      }
    }
    let node: Record<string, unknown> | unknown[] = out;
    for (let i = 0; i < path.length - 1; i++) {
      const key = path[i]!;
      const next = (node as Record<string, unknown>)[key];
      if (next === undefined || next === null) {
        const created = /^\d+$/.test(path[i + 1]!) ? [] : {};
        (node as Record<string, unknown>)[key] = created;
        node = created;
      } else if (typeof next === "object") {
        node = next as Record<string, unknown>;
      } else {
        throw new ConfigError(`override "${override}": ${path.slice(0, i + 1).join(".")} is not a mapping or list`);
      }
    }
    (node as Record<string, unknown>)[path.at(-1)!] = value;
  }
  return out;
}

/** An evaluation config file, its relative paths resolved against the file's folder (as `train` does). */
export async function loadEvalConfigFile(path: string): Promise<Record<string, unknown>> {
  return resolveEvalConfigPaths(await loadConfigFile(path), path);
}
