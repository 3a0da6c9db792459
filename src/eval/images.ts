// Mode A input: a folder of images and the prompt of each. Prompts come from, in order:
// metadata.jsonl / metadata.csv rows (file_name + prompt | text | caption, optional seed),
// a caption sidecar <name>.txt (first line), the PNG's "parameters" text chunk (what
// sdtune and AUTOMATIC1111 write), or a prompts file matched to the images in name order.
import { readFile } from "node:fs/promises";
import { extname, join } from "node:path";

import { parseCsv } from "../data/csv.js";
import { compareStrings, decodeCaption, firstLine, isImageFile, safeJoin, walkFiles } from "../data/files.js";
import { readPngText } from "../io/png.js";
import { readPromptSpecs } from "../pipeline/prompts.js";

export type PromptSource = "metadata" | "sidecar" | "infotext" | "prompts_file";

export interface EvalImage {
  /** POSIX path relative to the folder. */
  file: string;
  /** Absolute path. */
  path: string;
  prompt: string;
  /** The generation seed, when the metadata or the PNG says. */
  seed: number | null;
  promptSource: PromptSource;
}

/** Contact sheets that `sdtune generate --grid` (and AUTOMATIC1111) write beside the images: not scored. */
const CONTACT_SHEET = /(^|\/)grid-\d{4,}\.png$/i;

const PROMPT_COLUMNS = ["prompt", "text", "caption"] as const;

/**
 * The prompt texts of a prompts file (readPromptSpecs: one per line or a JSON list; kohya's
 * per-prompt flags such as --n or --d are parsed off, not scored as prompt text).
 */
export async function readPromptsFile(path: string): Promise<string[]> {
  return (await readPromptSpecs(path)).map((p) => p.prompt);
}

/**
 * A1111 infotext -> prompt and seed: the text before "Negative prompt:" (or before the
 * final "Steps: ..." line), with <lora:...> style tags removed as A1111 does before encoding.
 */
export function parseInfotext(text: string): { prompt: string; seed: number | null } {
  const lines = text.split("\n");
  let end = lines.length;
  const last = lines.at(-1) ?? "";
  if (lines.length > 1 && /^Steps: /.test(last)) end = lines.length - 1;
  const negative = lines.findIndex((l) => l.startsWith("Negative prompt:"));
  if (negative >= 0 && negative < end) end = negative;
  const prompt = lines
    .slice(0, end)
    .join("\n")
    .replace(/\s*<(?:lora|lyco|hypernet):[^>]*>/g, "")
    .trim();
  const seed = /(?:^|, )Seed: (\d+)/.exec(last);
  return { prompt, seed: seed ? Number(seed[1]) : null };
}

interface MetadataEntry {
  prompt?: string;
  seed: number | null;
}

async function readMetadata(dir: string, files: string[]): Promise<Map<string, MetadataEntry>> {
  const out = new Map<string, MetadataEntry>();
  const metadataFiles = files.filter((f) => /(^|\/)metadata\.(jsonl|csv)$/.test(f));
  for (const rel of metadataFiles) {
    const base = rel.includes("/") ? rel.slice(0, rel.lastIndexOf("/")) : "";
    const text = decodeCaption(await readFile(join(dir, rel))).text;
    const rows: { line: number; values: Record<string, unknown> }[] = [];
    if (rel.endsWith(".csv")) rows.push(...parseCsv(text).rows);
    else {
      text.split(/\r?\n/).forEach((line, i) => {
        if (line.trim() === "") return;
        let value: unknown;
        try {
          value = JSON.parse(line);
        } catch (error) {
          throw new Error(`${join(dir, rel)}:${i + 1}: not valid JSON (${(error as Error).message})`);
        }
        if (typeof value !== "object" || value === null || Array.isArray(value)) {
          throw new Error(`${join(dir, rel)}:${i + 1}: expected a JSON object with file_name`);
        }
        rows.push({ line: i + 1, values: value as Record<string, unknown> });
      });
    }
    for (const row of rows) {
      const where = `${join(dir, rel)}:${row.line}`;
      const fileName = row.values.file_name;
      if (typeof fileName !== "string") throw new Error(`${where}: the row has no file_name`);
      const joined = safeJoin(base, fileName);
      if ("error" in joined) throw new Error(`${where}: ${joined.error}`);
      const column = PROMPT_COLUMNS.find((c) => typeof row.values[c] === "string");
      const seedValue = row.values.seed;
      const seed = typeof seedValue === "number" ? seedValue : typeof seedValue === "string" ? Number(seedValue) : NaN;
      const entry: MetadataEntry = { seed: Number.isInteger(seed) && seed >= 0 ? seed : null };
      if (column) entry.prompt = row.values[column] as string;
      out.set(joined.rel, entry);
    }
  }
  return out;
}

/** Every image under `dir` (name order) with its prompt and, when known, its seed. */
export async function readEvalImages(
  dir: string,
  options: { prompts?: readonly string[]; signal?: AbortSignal } = {},
): Promise<EvalImage[]> {
  let files: string[];
  try {
    files = await walkFiles(dir, options.signal);
  } catch (error) {
    throw new Error(`image folder ${dir}: ${(error as Error).message}`);
  }
  const imageFiles = files.filter((f) => isImageFile(f) && !CONTACT_SHEET.test(f));
  if (imageFiles.length === 0) throw new Error(`image folder ${dir} holds no images`);
  const fileSet = new Set(files);
  const metadata = await readMetadata(dir, files);
  const out: EvalImage[] = [];
  const missing: string[] = [];
  for (const file of imageFiles.sort(compareStrings)) {
    const path = join(dir, file);
    const meta = metadata.get(file);
    let found: { prompt: string; seed: number | null; source: PromptSource } | undefined;
    if (meta?.prompt !== undefined) found = { prompt: meta.prompt, seed: meta.seed, source: "metadata" };
    const sidecar = file.slice(0, file.length - extname(file).length) + ".txt";
    if (!found && fileSet.has(sidecar)) {
      found = {
        prompt: firstLine(decodeCaption(await readFile(join(dir, sidecar))).text),
        seed: null,
        source: "sidecar",
      };
    }
    if (!found && extname(file).toLowerCase() === ".png") {
      const parameters = readPngText(await readFile(path)).parameters;
      if (parameters !== undefined) found = { ...parseInfotext(parameters), source: "infotext" };
    }
    if (!found) missing.push(file);
    out.push({
      file,
      path,
      prompt: found?.prompt ?? "",
      seed: found?.seed ?? meta?.seed ?? null,
      promptSource: found?.source ?? "prompts_file",
    });
  }
  if (missing.length > 0) {
    const prompts = options.prompts;
    if (!prompts) {
      throw new Error(
        `${missing.length} image(s) in ${dir} have no prompt (${missing.slice(0, 5).join(", ")}${missing.length > 5 ? ", ..." : ""}): ` +
          "add a metadata.jsonl (file_name + prompt), <name>.txt sidecars, PNG parameters, or pass a prompts file",
      );
    }
    if (prompts.length !== missing.length) {
      throw new Error(
        `the prompts file has ${prompts.length} prompts but ${dir} has ${missing.length} image(s) without one; ` +
          "prompts are matched to those images in file-name order, one each",
      );
    }
    let next = 0;
    for (const image of out) if (image.promptSource === "prompts_file") image.prompt = prompts[next++]!;
  }
  return out;
}
