// An independent reader of W&B's binary run log for tests: the file header, LevelDB log blocks
// as wandb's datastore scans them (CRC-32 of the type byte followed by the data, fragments
// FULL / FIRST+MIDDLE*+LAST, zero padding in a block tail under 7 bytes), and the Record fields
// the tests look at.
import { readFileSync } from "node:fs";
import { crc32 } from "node:zlib";

import { fields, one, text, type Field } from "./protobuf.js";

const BLOCK = 32768;

/** The data of every record in a log (starting after the 7-byte file header at `start`). */
export function scanRecords(buf: Buffer, start = 7): Buffer[] {
  const out: Buffer[] = [];
  let at = start;
  let pending: Buffer[] | undefined;
  while (at < buf.length) {
    const left = BLOCK - (at % BLOCK);
    if (left < 7) {
      if (buf.subarray(at, at + left).some((b) => b !== 0)) throw new Error(`non-zero padding at ${at}`);
      at += left;
      continue;
    }
    const length = buf.readUInt16LE(at + 4);
    const type = buf[at + 6]!;
    const data = buf.subarray(at + 7, at + 7 + length);
    if (buf.readUInt32LE(at) !== crc32(Buffer.concat([Buffer.from([type]), data])) >>> 0) {
      throw new Error(`checksum mismatch at ${at}`);
    }
    if ((at % BLOCK) + 7 + length > BLOCK) throw new Error(`fragment at ${at} crosses a block`);
    at += 7 + length;
    if (type === 1 && !pending) out.push(data);
    else if (type === 2 && !pending) pending = [data];
    else if (type === 3 && pending) pending.push(data);
    else if (type === 4 && pending) {
      out.push(Buffer.concat([...pending, data]));
      pending = undefined;
    } else throw new Error(`unexpected fragment type ${type} at ${at}`);
  }
  if (pending) throw new Error("log ends inside a record");
  return out;
}

export interface WandbRecord {
  num: number;
  /** The Record oneof's field number (2 history, 3 summary, 17 run, 18 exit, 20 final, 21 header). */
  type: number;
  body: Field[];
}

/** A .wandb file: its header checked, its records decoded one level deep. */
export function readWandbLog(path: string): WandbRecord[] {
  const buf = readFileSync(path);
  if (buf.subarray(0, 4).toString("latin1") !== ":W&B" || buf.readUInt16LE(4) !== 0xbee1 || buf[6] !== 0) {
    throw new Error(`${path}: not a W&B log header`);
  }
  return scanRecords(buf).map((data) => {
    const all = fields(data);
    const body = all.find((f) => f.field !== 1)!;
    return { num: one(all, 1).value as number, type: body.field, body: fields(body.value as Buffer) };
  });
}

/** key -> parsed value_json of repeated {key = 1, value_json = 16} items numbered `n`. */
export function jsonItems(body: Field[], n = 1): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const item of body.filter((f) => f.field === n)) {
    const parts = fields(item.value as Buffer);
    out[text(one(parts, 1))] = JSON.parse(text(one(parts, 16)));
  }
  return out;
}
