// TensorBoard event files, written without TensorFlow: a TFRecord stream (length, masked
// CRC-32C of the length, data, masked CRC-32C of the data) of `Event` protobufs carrying
// `Summary` scalar values. Only the few protobuf fields TensorBoard reads for scalars are
// encoded (tensorflow/core/util/event.proto, framework/summary.proto):
//   Event   { double wall_time = 1; int64 step = 2; string file_version = 3; Summary summary = 5; }
//   Summary { repeated Value value = 1; }  Value { string tag = 1; float simple_value = 2; }
import { hostname } from "node:os";
import { open, type FileHandle } from "node:fs/promises";
import { join } from "node:path";

import { maskedCrc32c } from "./crc32c.js";
import { bytesField, doubleField, floatField, intField, messageField } from "./protobuf.js";

/** "events.out.tfevents.<unix seconds>.<host>": the name TensorBoard looks for. */
export function eventFileName(unixSeconds: number, host = hostname()): string {
  return `events.out.tfevents.${Math.floor(unixSeconds)}.${host.replace(/[^A-Za-z0-9._-]/g, "_") || "localhost"}`;
}

/** One TFRecord: uint64 length, masked CRC of those 8 bytes, the data, masked CRC of the data (little-endian). */
export function tfRecord(data: Uint8Array): Buffer {
  const header = Buffer.alloc(12);
  header.writeBigUInt64LE(BigInt(data.length), 0);
  header.writeUInt32LE(maskedCrc32c(header.subarray(0, 8)), 8);
  const footer = Buffer.alloc(4);
  footer.writeUInt32LE(maskedCrc32c(data), 0);
  return Buffer.concat([header, data, footer]);
}

/** A serialized Event: the file-version record or a step's scalars. */
export function encodeEvent(event: {
  wallTime: number;
  step?: number;
  fileVersion?: string;
  scalars?: Record<string, number>;
}): Buffer {
  const parts: Buffer[] = [doubleField(1, event.wallTime)];
  if (event.step !== undefined) parts.push(intField(2, event.step));
  if (event.fileVersion !== undefined) parts.push(bytesField(3, event.fileVersion));
  if (event.scalars) {
    const values = Object.entries(event.scalars).map(([tag, value]) =>
      messageField(1, bytesField(1, tag), floatField(2, value)),
    );
    parts.push(messageField(5, ...values));
  }
  return Buffer.concat(parts);
}

/** An open event file: scalars are appended as they come; sync() makes them durable. */
export class EventFileWriter {
  private constructor(
    readonly path: string,
    private readonly handle: FileHandle,
  ) {}

  /** Creates a new event file in `dir` (which must exist) and writes its file-version record. */
  static async create(dir: string, wallTime = Date.now() / 1000): Promise<EventFileWriter> {
    const base = join(dir, eventFileName(wallTime));
    for (let n = 0; ; n++) {
      const path = n === 0 ? base : `${base}.${n}`;
      try {
        const writer = new EventFileWriter(path, await open(path, "wx"));
        await writer.write(encodeEvent({ wallTime, fileVersion: "brain.Event:2" }));
        return writer;
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== "EEXIST" || n > 100) throw error;
      }
    }
  }

  async scalars(step: number, wallTime: number, scalars: Record<string, number>): Promise<void> {
    await this.write(encodeEvent({ wallTime, step, scalars }));
  }

  async sync(): Promise<void> {
    await this.handle.datasync();
  }

  async close(): Promise<void> {
    await this.handle.sync();
    await this.handle.close();
  }

  private async write(event: Buffer): Promise<void> {
    await this.handle.write(tfRecord(event));
  }
}
