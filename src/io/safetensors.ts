// safetensors files: read (mmap, lazy), write (atomic), inspect (header only).
import { mkdir, stat } from "node:fs/promises";
import { dirname, resolve } from "node:path";

import { native, type SafetensorsHeader, type Tensor } from "../native/index.js";

export type { SafetensorsHeader, SafetensorsTensorInfo } from "../native/index.js";

export interface SafetensorsContents {
  /** In file order. Each tensor is a view over the mapped file until copied. */
  tensors: Map<string, Tensor>;
  metadata: Record<string, string>;
  header: SafetensorsHeader;
}

export type TensorEntries = Map<string, Tensor> | Record<string, Tensor> | Iterable<[string, Tensor]>;

/** Header only: names, dtypes, shapes, offsets and metadata. Validates the whole header. */
export async function inspectSafetensors(path: string): Promise<SafetensorsHeader> {
  assertPath(path, "inspectSafetensors");
  await assertRegularFile(path);
  return native().safetensors.inspect(resolve(path));
}

/**
 * Every tensor of a file, or those named in `names`. Tensors are lazy views over a
 * private mapping of the file: nothing is read until used, writes never reach the file.
 */
export async function readSafetensors(path: string, options: { names?: string[] } = {}): Promise<SafetensorsContents> {
  assertPath(path, "readSafetensors");
  await assertRegularFile(path);
  const file = await native().safetensors.open(resolve(path));
  try {
    const header = file.header;
    const wanted = options.names ? new Set(options.names) : undefined;
    if (wanted) {
      const present = new Set(header.tensors.map((t) => t.name));
      const missing = [...wanted].filter((n) => !present.has(n));
      if (missing.length)
        throw new Error(`safetensors: ${path}: no tensor named ${missing.map((n) => `"${n}"`).join(", ")}`);
    }
    const tensors = new Map<string, Tensor>();
    for (const info of header.tensors) {
      if (!wanted || wanted.has(info.name)) tensors.set(info.name, file.get(info.name));
    }
    return { tensors, metadata: header.metadata, header };
  } finally {
    file.dispose();
  }
}

/** Writes tensors and string metadata atomically (temp file, fsync, rename). */
export async function writeSafetensors(
  path: string,
  tensors: TensorEntries,
  metadata: Record<string, string> = {},
): Promise<void> {
  assertPath(path, "writeSafetensors");
  for (const [key, value] of Object.entries(metadata)) {
    if (typeof value !== "string") {
      throw new TypeError(`writeSafetensors: metadata "${key}" must be a string (got ${typeof value})`);
    }
  }
  const entries = toEntries(tensors);
  const absolute = resolve(path);
  await mkdir(dirname(absolute), { recursive: true });
  await native().safetensors.write(absolute, entries, metadata);
}

function toEntries(tensors: TensorEntries): [string, Tensor][] {
  if (tensors instanceof Map) return [...tensors.entries()];
  if (Symbol.iterator in tensors) return [...(tensors as Iterable<[string, Tensor]>)];
  return Object.entries(tensors as Record<string, Tensor>);
}

/** A FIFO, socket or device named .safetensors would block or never end: refused before it is opened. */
async function assertRegularFile(path: string): Promise<void> {
  let info;
  try {
    info = await stat(path);
  } catch {
    return; // the native reader says what is missing
  }
  if (!info.isFile()) {
    throw new Error(
      `safetensors: ${path}: not a regular file (${info.isDirectory() ? "a folder" : "a pipe, socket or device"})`,
    );
  }
}

function assertPath(path: unknown, fn: string): asserts path is string {
  if (typeof path !== "string" || path.length === 0) throw new TypeError(`${fn}: path must be a non-empty string`);
}
