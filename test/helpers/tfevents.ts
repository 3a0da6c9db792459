// An independent reader of TensorBoard event files for tests: TFRecord framing with a bitwise
// (table-free) CRC-32C, and a generic protobuf walk of Event / Summary / Value. It shares no
// code with src/io/tensorboard.ts, so a framing or field-number mistake there fails a test.
import { readFileSync } from "node:fs";

import { fields } from "./protobuf.js";

/** CRC-32C computed bit by bit from the Castagnoli polynomial. */
export function crc32cBitwise(data: Uint8Array): number {
  let crc = ~0 >>> 0;
  for (const byte of data) {
    crc ^= byte;
    for (let k = 0; k < 8; k++) crc = crc & 1 ? ((crc >>> 1) ^ 0x82f63b78) >>> 0 : crc >>> 1;
  }
  return ~crc >>> 0;
}

function masked(data: Uint8Array): number {
  const c = crc32cBitwise(data);
  return (((c >>> 15) | (c << 17)) + 0xa282ead8) >>> 0;
}

export interface DecodedEvent {
  wallTime: number;
  step: number;
  fileVersion?: string;
  scalars: Record<string, number>;
}

/** Every event in a file; throws on a bad length or data checksum. */
export function readEventFile(path: string): DecodedEvent[] {
  const buf = readFileSync(path);
  const events: DecodedEvent[] = [];
  let at = 0;
  while (at < buf.length) {
    const lengthBytes = buf.subarray(at, at + 8);
    if (buf.readUInt32LE(at + 8) !== masked(lengthBytes)) throw new Error(`length CRC mismatch at ${at}`);
    const length = Number(buf.readBigUInt64LE(at));
    const data = buf.subarray(at + 12, at + 12 + length);
    if (buf.readUInt32LE(at + 12 + length) !== masked(data)) throw new Error(`data CRC mismatch at ${at}`);
    events.push(decodeEvent(data));
    at += 12 + length + 4;
  }
  return events;
}

function decodeEvent(data: Buffer): DecodedEvent {
  const event: DecodedEvent = { wallTime: NaN, step: 0, scalars: {} };
  for (const f of fields(data)) {
    if (f.field === 1 && f.wire === 1) event.wallTime = (f.value as Buffer).readDoubleLE(0);
    else if (f.field === 2 && f.wire === 0) event.step = f.value as number;
    else if (f.field === 3 && f.wire === 2) event.fileVersion = (f.value as Buffer).toString("utf8");
    else if (f.field === 5 && f.wire === 2) {
      for (const v of fields(f.value as Buffer).filter((x) => x.field === 1)) {
        const parts = fields(v.value as Buffer);
        const tag = parts.find((p) => p.field === 1)!.value as Buffer;
        const simple = parts.find((p) => p.field === 2 && p.wire === 5)!.value as Buffer;
        event.scalars[tag.toString("utf8")] = simple.readFloatLE(0);
      }
    } else throw new Error(`unexpected Event field ${f.field} (wire ${f.wire})`);
  }
  return event;
}
