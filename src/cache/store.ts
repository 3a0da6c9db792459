// The storage under both caches: one folder per namespace (format version +
// model + dtype), holding immutable safetensors shards. A shard is written once
// (temp file + rename) and never changed, so concurrent writers cannot collide:
// each adds its own shards, readers pick up new ones on refresh(), and a
// duplicate entry written by two runs at once is harmless. The index is the
// shards' headers: every tensor is named "<entry key>/<part>", and the metadata
// lists each entry's parts, a CRC-32 of its bytes and what it was made from.
// Entries are read with positioned async reads (no mmap page faults on the JS
// thread) and checked against their CRC; a shard whose header does not parse,
// or an entry whose bytes do not match, is a miss with a warning.
import { randomBytes } from "node:crypto";
import { open, readdir, utimes } from "node:fs/promises";
import { join } from "node:path";
import { crc32 } from "node:zlib";

import { inspectSafetensors, writeSafetensors } from "../io/safetensors.js";
import type { AnyTypedArray, DType, SafetensorsDType, Tensor } from "../native/index.js";
import { tensorFrom } from "../tensor.js";

/** Bumped whenever what is stored, or how it is computed, changes: old namespaces then simply miss. */
export const CACHE_FORMAT = 1;

/** One stored tensor of an entry, as raw little-endian bytes. */
export interface EntryPart {
  dtype: DType;
  shape: number[];
  bytes: Uint8Array;
}

/** An entry: named parts (e.g. {mean, std}) in a fixed order. */
export type Entry = Map<string, EntryPart>;

interface Located {
  shard: string;
  parts: { name: string; dtype: DType; shape: number[]; begin: number; end: number }[];
  crc: number;
}

interface ShardState {
  /** File offset of the data area (8 + header length). */
  dataStart: number;
  /** Its mtime was refreshed by this process. */
  touched: boolean;
}

export interface StoreLimits {
  /** A shard is written once its staged entries reach this many bytes (default 64 MiB). */
  shardBytes?: number;
  /** ...or this many entries (default 4096: the header stays around a megabyte). */
  shardEntries?: number;
}

const DTYPE_TO_ST: Partial<Record<DType, SafetensorsDType>> = { float32: "F32", float16: "F16", bfloat16: "BF16" };
const ST_TO_DTYPE: Partial<Record<SafetensorsDType, DType>> = { F32: "float32", F16: "float16", BF16: "bfloat16" };

/** What the metadata of every shard of a namespace says about it. */
export function shardMetadata(kind: string, namespace: string, descriptor: unknown): Record<string, string> {
  return {
    "sdtune.cache": kind,
    "sdtune.format": String(CACHE_FORMAT),
    "sdtune.namespace": namespace,
    "sdtune.descriptor": JSON.stringify(descriptor),
  };
}

export class ShardStore {
  /** Where each entry is: newest shard first (a duplicate written later by another run is a fallback). */
  private readonly entries = new Map<string, Located[]>();
  private readonly failures = new Map<string, string>();
  private readonly shards = new Map<string, ShardState>();
  /** Shards seen but unusable (named once in a warning). */
  private readonly broken = new Set<string>();
  private staged: { key: string; entry: Entry; info: unknown }[] = [];
  private stagedFailures = new Map<string, string>();
  private stagedSize = 0;
  private readonly limits: Required<StoreLimits>;

  constructor(
    /** The namespace folder. */
    readonly root: string,
    private readonly kind: string,
    private readonly namespace: string,
    private readonly descriptor: unknown,
    /** Where warnings go. */
    readonly warn: (message: string) => void,
    limits: StoreLimits = {},
  ) {
    this.limits = { shardBytes: limits.shardBytes ?? 64 << 20, shardEntries: limits.shardEntries ?? 4096 };
  }

  /** Reads the headers of shards not seen yet (written by another run, or since the last refresh). */
  async refresh(): Promise<void> {
    let names: string[];
    try {
      names = (await readdir(this.root)).filter((n) => n.endsWith(".safetensors")).sort();
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === "ENOENT") return;
      throw error;
    }
    for (const name of names) {
      if (this.shards.has(name) || this.broken.has(name)) continue;
      try {
        await this.index(name);
      } catch (error) {
        this.broken.add(name);
        this.warn(
          `cache: ${join(this.root, name)} is unreadable and is ignored (its entries will be recomputed; ` +
            `\`sdtune cache prune\` removes it): ${(error as Error).message}`,
        );
      }
    }
  }

  has(key: string): boolean {
    return this.entries.has(key);
  }

  /** Why an item could not be cached (e.g. it failed to decode), if a run recorded that. */
  failure(itemKey: string): string | undefined {
    return this.failures.get(itemKey) ?? this.stagedFailures.get(itemKey);
  }

  /**
   * An entry's parts, checked against its CRC and by `check` (which names a problem, if any). A copy
   * that fails is warned about and forgotten, and the next copy (if a run wrote one) is tried;
   * undefined when none is left.
   */
  async read(key: string, check?: (entry: Entry) => string | undefined): Promise<Entry | undefined> {
    for (;;) {
      const loc = this.entries.get(key)?.[0];
      if (!loc) return undefined;
      const path = join(this.root, loc.shard);
      let entry: Entry | undefined;
      let problem: string | undefined;
      try {
        entry = await this.readAt(loc);
        problem = entry ? check?.(entry) : "its bytes do not match their checksum";
      } catch (error) {
        problem = (error as Error).message;
      }
      if (entry && !problem) {
        this.touch(loc.shard);
        return entry;
      }
      const rest = this.entries.get(key)?.filter((l) => l !== loc) ?? [];
      if (rest.length > 0) this.entries.set(key, rest);
      else this.entries.delete(key);
      this.warn(`cache: entry ${key} in ${path} is corrupt and is treated as missing: ${problem}`);
    }
  }

  /** One positioned read of an entry's bytes (the file is opened per read: nothing to leak). */
  private async readAt(loc: Located): Promise<Entry | undefined> {
    const state = this.shards.get(loc.shard)!;
    const begin = Math.min(...loc.parts.map((p) => p.begin));
    const end = Math.max(...loc.parts.map((p) => p.end));
    const buffer = new Uint8Array(end - begin);
    const file = await open(join(this.root, loc.shard), "r");
    try {
      const { bytesRead } = await file.read(buffer, 0, buffer.length, state.dataStart + begin);
      if (bytesRead !== buffer.length) throw new Error(`the file ends ${buffer.length - bytesRead} bytes early`);
    } finally {
      await file.close();
    }
    const entry: Entry = new Map();
    let crc = 0;
    for (const p of loc.parts) {
      const bytes = buffer.subarray(p.begin - begin, p.end - begin);
      crc = crc32(bytes, crc);
      entry.set(p.name, { dtype: p.dtype, shape: p.shape, bytes });
    }
    return crc >>> 0 === loc.crc ? entry : undefined;
  }

  /** A shard's mtime is its last use (`sdtune cache prune --unused-days` reads it): refreshed once per run. */
  private touch(shard: string): void {
    const state = this.shards.get(shard)!;
    if (state.touched) return;
    state.touched = true;
    const now = new Date();
    void utimes(join(this.root, shard), now, now).catch(() => undefined);
  }

  /** Queues an entry for the next shard; writes a shard when the limits are reached. */
  async put(key: string, entry: Entry, info: unknown): Promise<void> {
    for (const [name, part] of entry) {
      if (!DTYPE_TO_ST[part.dtype]) throw new TypeError(`cache: part "${name}" has dtype ${part.dtype}, not a float`);
      this.stagedSize += part.bytes.byteLength;
    }
    this.staged.push({ key, entry, info });
    if (this.stagedSize >= this.limits.shardBytes || this.staged.length >= this.limits.shardEntries) {
      await this.flush();
    }
  }

  /** Records that an item cannot be cached (content-keyed: a fixed file has another key). */
  putFailure(itemKey: string, reason: string): void {
    this.stagedFailures.set(itemKey, reason);
  }

  /** Writes what is staged as one new shard (atomically), and indexes it. */
  async flush(): Promise<void> {
    if (this.staged.length === 0 && this.stagedFailures.size === 0) return;
    const staged = this.staged;
    const failures = this.stagedFailures;
    this.staged = [];
    this.stagedFailures = new Map();
    this.stagedSize = 0;
    const tensors: [string, Tensor][] = [];
    const listed: Record<string, { crc: number; parts: string[]; info: unknown }> = {};
    for (const { key, entry, info } of staged) {
      let crc = 0;
      for (const [name, part] of entry) {
        crc = crc32(part.bytes, crc);
        tensors.push([`${key}/${name}`, tensorFrom(typedView(part.bytes, part.dtype), part.shape, part.dtype)]);
      }
      listed[key] = { crc: crc >>> 0, parts: [...entry.keys()], info };
    }
    const name = `${Date.now().toString(36)}-${process.pid}-${randomBytes(6).toString("hex")}.safetensors`;
    try {
      await writeSafetensors(join(this.root, name), tensors, {
        ...shardMetadata(this.kind, this.namespace, this.descriptor),
        "sdtune.entries": JSON.stringify(listed),
        "sdtune.failed": JSON.stringify(Object.fromEntries(failures)),
      });
    } finally {
      for (const [, t] of tensors) t.dispose();
    }
    await this.index(name);
  }

  /** Writes what is staged (idempotent). */
  async close(): Promise<void> {
    await this.flush();
  }

  private async index(name: string): Promise<void> {
    const header = await inspectSafetensors(join(this.root, name));
    const meta = header.metadata;
    if (meta["sdtune.cache"] !== this.kind || meta["sdtune.format"] !== String(CACHE_FORMAT)) {
      throw new Error(`not an sdtune ${this.kind} cache shard of format ${CACHE_FORMAT}`);
    }
    if (meta["sdtune.namespace"] !== this.namespace) throw new Error("it belongs to another namespace");
    const listed = JSON.parse(meta["sdtune.entries"] ?? "{}") as Record<
      string,
      { crc: number; parts: string[]; info: unknown }
    >;
    const failed = JSON.parse(meta["sdtune.failed"] ?? "{}") as Record<string, string>;
    const tensors = new Map(header.tensors.map((t) => [t.name, t]));
    const found: [string, Located][] = [];
    for (const [key, value] of Object.entries(listed)) {
      const parts = value.parts.map((part) => {
        const t = tensors.get(`${key}/${part}`);
        const dtype = t && ST_TO_DTYPE[t.dtype];
        if (!t || !dtype) throw new Error(`entry ${key} lists part "${part}", which the file lacks`);
        return { name: part, dtype, shape: t.shape, begin: t.dataOffsets[0], end: t.dataOffsets[1] };
      });
      found.push([key, { shard: name, parts, crc: value.crc }]);
    }
    if (this.shards.has(name)) return; // indexed meanwhile (a refresh racing a flush)
    this.shards.set(name, { dataStart: 8 + header.headerSize, touched: false });
    for (const [key, loc] of found) {
      // Shards are indexed oldest first (names start with the time): the newest copy goes in front.
      this.entries.set(key, [loc, ...(this.entries.get(key) ?? [])]);
    }
    for (const [key, reason] of Object.entries(failed)) this.failures.set(key, reason);
  }
}

/** A typed array of `dtype` over `bytes` (copied when its offset is not aligned). */
export function typedView(bytes: Uint8Array, dtype: DType): AnyTypedArray {
  const size = dtype === "float32" ? 4 : 2;
  const aligned = bytes.byteOffset % size === 0 ? bytes : bytes.slice();
  const count = aligned.byteLength / size;
  return size === 4
    ? new Float32Array(aligned.buffer, aligned.byteOffset, count)
    : new Uint16Array(aligned.buffer, aligned.byteOffset, count);
}

/** Raw bytes of a tensor's typed array (a view; copy before the tensor is disposed). */
export function tensorBytes(t: Tensor): Uint8Array {
  const a = t.toTypedArray();
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}
