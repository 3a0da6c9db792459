// File helpers for the readers: folder walks, path safety, caption text decoding (atomic writes: src/io/atomic.ts).
import { createHash } from "node:crypto";
import type { Dirent } from "node:fs";
import { readdir } from "node:fs/promises";
import { extname, isAbsolute, join, posix, win32 } from "node:path";

/** Extensions the readers treat as images (as HF imagefolder does, limited to what sharp decodes). */
export const IMAGE_EXTENSIONS = new Set([
  ".jpg",
  ".jpeg",
  ".jpe",
  ".jfif",
  ".png",
  ".webp",
  ".tif",
  ".tiff",
  ".gif",
  ".avif",
  ".heic",
  ".heif",
  ".bmp",
]);

export const isImageFile = (name: string): boolean => IMAGE_EXTENSIONS.has(extname(name).toLowerCase());

/** HF datasets skips these when it globs data files. */
const IGNORED_FILES = new Set([
  "README.md",
  "config.json",
  "dataset_info.json",
  "dataset_infos.json",
  "dataset_dict.json",
]);

/**
 * Every file under `root` as a POSIX path relative to it, sorted. Hidden files
 * and folders (".x") and special folders ("__x") are skipped, as HF datasets does.
 */
export async function walkFiles(root: string, signal?: AbortSignal): Promise<string[]> {
  const out: string[] = [];
  const visit = async (rel: string): Promise<void> => {
    throwIfAborted(signal);
    let entries: Dirent[];
    try {
      entries = await readdir(join(root, rel), { withFileTypes: true });
    } catch (error) {
      if (rel === "") throw error;
      return; // a folder that vanished or cannot be read is not a dataset error
    }
    for (const entry of entries) {
      const name = entry.name;
      if (name.startsWith(".") || name.startsWith("__")) continue;
      const child = rel ? `${rel}/${name}` : name;
      if (entry.isDirectory()) await visit(child);
      else if ((entry.isFile() || entry.isSymbolicLink()) && !IGNORED_FILES.has(name)) out.push(child);
    }
  };
  await visit("");
  return out.sort(compareStrings);
}

/** Code-point order, independent of locale: the order items come in must not depend on the machine. */
export const compareStrings = (a: string, b: string): number => (a < b ? -1 : a > b ? 1 : 0);

/**
 * Joins a file name from a metadata row onto `baseRel` (a POSIX folder relative
 * to the dataset root). Refuses absolute paths and any ".." segment: a dataset
 * must not name files outside its folder. Returns the POSIX path relative to the root.
 */
export function safeJoin(baseRel: string, fileName: string): { rel: string } | { error: string } {
  if (fileName.length === 0) return { error: "file_name is empty" };
  if (fileName.includes("\0")) return { error: "file_name contains a NUL byte" };
  if (isAbsolute(fileName) || posix.isAbsolute(fileName) || win32.isAbsolute(fileName)) {
    return { error: `file_name "${fileName}" is an absolute path; file names must be relative to the dataset folder` };
  }
  const parts = fileName.split(/[\\/]+/);
  if (parts.includes("..")) {
    return { error: `file_name "${fileName}" contains ".."; file names must stay inside the dataset folder` };
  }
  const clean = parts.filter((p) => p !== "" && p !== ".").join("/");
  if (!clean) return { error: `file_name "${fileName}" names no file` };
  return { rel: baseRel ? `${baseRel}/${clean}` : clean };
}

/** Caption text from bytes: BOM stripped; invalid UTF-8 is reported and decoded with U+FFFD. */
export function decodeCaption(bytes: Uint8Array): { text: string; invalidUtf8: boolean } {
  let view = bytes;
  if (view.length >= 3 && view[0] === 0xef && view[1] === 0xbb && view[2] === 0xbf) view = view.subarray(3);
  try {
    return { text: new TextDecoder("utf-8", { fatal: true }).decode(view), invalidUtf8: false };
  } catch {
    return { text: new TextDecoder("utf-8").decode(view), invalidUtf8: true };
  }
}

/** kohya semantics: the caption is the first line of the file, trimmed. */
export const firstLine = (text: string): string => (text.split(/\r?\n/, 1)[0] ?? "").trim();

export const sha256 = (bytes: Uint8Array): string => createHash("sha256").update(bytes).digest("hex");

export function abortError(): Error {
  const error = new Error("the operation was cancelled");
  error.name = "AbortError";
  return error;
}

export function throwIfAborted(signal: AbortSignal | undefined): void {
  if (signal?.aborted) throw abortError();
}

/** Runs `task` over `inputs` with at most `limit` in flight; results keep the input order. */
export async function mapLimit<T, R>(
  inputs: readonly T[],
  limit: number,
  task: (input: T, index: number) => Promise<R>,
  signal?: AbortSignal,
): Promise<R[]> {
  const results = new Array<R>(inputs.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < inputs.length) {
      throwIfAborted(signal);
      const i = next++;
      results[i] = await task(inputs[i]!, i);
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(limit, inputs.length)) }, worker));
  return results;
}
