// Turning zod issues into errors a person can act on: every problem names its
// path in the config, and an unknown key gets a "did you mean".
import type { z } from "zod";

import { describeForeignKey, foreignKey } from "./foreign_keys.js";

export class ConfigError extends Error {
  override name = "ConfigError";
  constructor(
    message: string,
    readonly problems: string[] = [],
  ) {
    super(message);
  }
}

/** Parses `input` with `schema`; on failure throws one ConfigError listing every problem. */
export function parseConfig<S extends z.ZodType>(schema: S, input: unknown, source: string): z.output<S> {
  const result = schema.safeParse(input);
  if (result.success) return result.data;
  const problems = result.error.issues.map((issue) => describeIssue(schema, issue));
  throw new ConfigError(`${source}: invalid config:\n  ${problems.join("\n  ")}`, problems);
}

/** "stages[1].lora.rank" */
export function formatPath(path: readonly PropertyKey[]): string {
  let out = "";
  for (const part of path) {
    if (typeof part === "number") out += `[${part}]`;
    else out += out ? `.${String(part)}` : String(part);
  }
  return out || "(top level)";
}

function describeIssue(schema: z.ZodType, issue: z.core.$ZodIssue): string {
  const where = formatPath(issue.path);
  if (issue.code === "unrecognized_keys") {
    const known = knownKeys(schema, issue.path);
    return issue.keys
      .map((key) => {
        const at = formatPath([...issue.path, key]);
        const foreign = foreignKey(key, known);
        if (foreign) return `${at}: unknown key (did you mean "${foreign.ours}"? ${describeForeignKey(key, foreign)})`;
        const guess = closest(key, known);
        return `${at}: unknown key${guess ? ` (did you mean "${guess}"?)` : known.length ? ` (expected one of: ${known.join(", ")})` : ""}`;
      })
      .join("\n  ");
  }
  return `${where}: ${issue.message.replace(/^Invalid input: /, "")}`;
}

type Def = {
  type: string;
  shape?: Record<string, z.ZodType>;
  innerType?: z.ZodType;
  element?: z.ZodType;
  options?: z.ZodType[];
  in?: z.ZodType;
  out?: z.ZodType;
};
const defOf = (s: z.ZodType): Def => (s as unknown as { _zod: { def: Def } })._zod.def;

/** The object schemas that can sit at `path` (unions give several). */
function schemasAt(schema: z.ZodType, path: readonly PropertyKey[]): z.ZodType[] {
  let current: z.ZodType[] = [schema];
  for (const part of path) {
    const next: z.ZodType[] = [];
    for (const s of current.flatMap(unwrap)) {
      const def = defOf(s);
      if (def.type === "object" && typeof part === "string" && def.shape?.[part]) next.push(def.shape[part]);
      if (def.type === "array" && typeof part === "number" && def.element) next.push(def.element);
      if (def.type === "record" && typeof part === "string")
        next.push((def as unknown as { valueType: z.ZodType }).valueType);
    }
    current = next;
  }
  return current.flatMap(unwrap);
}

function unwrap(s: z.ZodType): z.ZodType[] {
  const def = defOf(s);
  if (def.innerType) return unwrap(def.innerType);
  if (def.type === "pipe" && def.in) return unwrap(def.in);
  if (def.type === "union" && def.options) return def.options.flatMap(unwrap);
  if (def.type === "lazy") return unwrap((def as unknown as { getter: () => z.ZodType }).getter());
  return [s];
}

function knownKeys(schema: z.ZodType, path: readonly PropertyKey[]): string[] {
  const keys = new Set<string>();
  for (const s of schemasAt(schema, path)) {
    const def = defOf(s);
    if (def.type === "object" && def.shape) Object.keys(def.shape).forEach((k) => keys.add(k));
  }
  return [...keys].sort();
}

/** The known key nearest to `key` by edit distance, if it is plausibly a typo. */
export function closest(key: string, known: string[]): string | undefined {
  let best: string | undefined;
  let bestDistance = Infinity;
  for (const candidate of known) {
    const d = editDistance(key.toLowerCase(), candidate.toLowerCase());
    if (d < bestDistance) {
      bestDistance = d;
      best = candidate;
    }
  }
  return best !== undefined && bestDistance <= Math.max(2, Math.floor(best.length / 3)) ? best : undefined;
}

function editDistance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    let previous = row[0]!;
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const temp = row[j]!;
      row[j] = Math.min(row[j]! + 1, row[j - 1]! + 1, previous + (a[i - 1] === b[j - 1] ? 0 : 1));
      previous = temp;
    }
  }
  return row[b.length]!;
}
