// Training curves for the report: metrics.jsonl files of training runs, one JSON object
// per line with at least {step, loss, lr}. A run folder holds metrics.jsonl itself or, for
// multi-stage runs, in one folder per stage.
import { readdir, readFile, stat } from "node:fs/promises";
import { basename, dirname, join, resolve } from "node:path";

import { compareStrings } from "../data/files.js";

export interface CurvePoint {
  step: number;
  loss: number;
  lr: number | null;
  /** The trainer's stage name (src/train/metrics.ts logs one per step). */
  stage?: string;
}

export interface RunCurve {
  /** Unique label: the run folder's name (and stage folder for multi-stage runs). */
  name: string;
  /** The metrics.jsonl read. */
  file: string;
  points: CurvePoint[];
  /** Lines without numeric step and loss (other events, a line cut by a crash). */
  skipped: number;
}

/**
 * metrics.jsonl files of a run with their labels: `path` itself (a file), path/metrics.jsonl,
 * else path/<stage>/metrics.jsonl for each stage folder.
 */
export async function findRunMetrics(path: string): Promise<{ file: string; name: string }[]> {
  let info;
  try {
    info = await stat(path);
  } catch {
    throw new Error(`training run ${path} does not exist`);
  }
  const trimmed = path.replace(/[\\/]+$/, "");
  if (info.isFile()) return [{ file: path, name: basename(dirname(resolve(path))) }];
  const runName = basename(resolve(trimmed));
  const direct = join(path, "metrics.jsonl");
  if (await isFile(direct)) return [{ file: direct, name: runName }];
  const found: { file: string; name: string }[] = [];
  for (const entry of (await readdir(path, { withFileTypes: true })).sort((a, b) => compareStrings(a.name, b.name))) {
    const file = join(path, entry.name, "metrics.jsonl");
    if (entry.isDirectory() && (await isFile(file))) found.push({ file, name: `${runName}/${entry.name}` });
  }
  if (found.length === 0) throw new Error(`training run ${path} has no metrics.jsonl (nor one per stage folder)`);
  return found;
}

async function isFile(path: string): Promise<boolean> {
  try {
    return (await stat(path)).isFile();
  } catch {
    return false;
  }
}

export function parseMetricsJsonl(text: string): { points: CurvePoint[]; skipped: number } {
  const points: CurvePoint[] = [];
  let skipped = 0;
  for (const line of text.split(/\r?\n/)) {
    if (line.trim() === "") continue;
    let row: unknown;
    try {
      row = JSON.parse(line);
    } catch {
      skipped++;
      continue;
    }
    const r = row as Record<string, unknown>;
    if (typeof r !== "object" || r === null || !isFiniteNumber(r.step) || !isFiniteNumber(r.loss)) {
      skipped++;
      continue;
    }
    const point: CurvePoint = { step: r.step, loss: r.loss, lr: isFiniteNumber(r.lr) ? r.lr : null };
    if (typeof r.stage === "string") point.stage = r.stage;
    points.push(point);
  }
  return { points, skipped };
}

const isFiniteNumber = (v: unknown): v is number => typeof v === "number" && Number.isFinite(v);

/**
 * Curves of every run given (folders or metrics.jsonl files), names made unique. A file
 * whose lines name several stages (one log for a multi-stage run) gives one curve per stage.
 */
export async function readRunCurves(paths: readonly string[]): Promise<RunCurve[]> {
  const curves: RunCurve[] = [];
  const used = new Set<string>();
  const add = (base: string, file: string, points: CurvePoint[], skipped: number): void => {
    let name = base;
    for (let k = 2; used.has(name); k++) name = `${base} (${k})`;
    used.add(name);
    curves.push({ name, file, points, skipped });
  };
  for (const path of paths) {
    for (const { file, name } of await findRunMetrics(path)) {
      const { points, skipped } = parseMetricsJsonl(await readFile(file, "utf8"));
      const stages = [...new Set(points.map((p) => p.stage).filter((s): s is string => s !== undefined))];
      if (stages.length < 2) add(name, file, points, skipped);
      else
        for (const stage of stages)
          add(
            `${name}/${stage}`,
            file,
            points.filter((p) => p.stage === stage),
            skipped,
          );
    }
  }
  return curves;
}
