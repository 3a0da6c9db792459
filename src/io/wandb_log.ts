// A W&B offline run's binary log (`run-<id>.wandb`), written without wandb: the 7-byte header
// ":W&B", magic 0xBEE1, version 0, then LevelDB log framing (32 KiB blocks; each record
// fragment is crc32(type byte + data) (IEEE, as wandb's datastore computes it), uint16 length,
// type FULL/FIRST/MIDDLE/LAST, data; a block tail too short for a header is zero padding)
// around serialized `wandb_internal.Record` protobufs. Only the records a metrics log needs
// are encoded (field numbers from wandb/proto/wandb_internal.proto):
//   Record { int64 num = 1; HistoryRecord history = 2; SummaryRecord summary = 3;
//            RunRecord run = 17; RunExitRecord exit = 18; FinalRecord final = 20; HeaderRecord header = 21; }
//   RunRecord { run_id = 1; project = 3; ConfigRecord config = 4; display_name = 8; host = 13;
//               Timestamp start_time = 17 {seconds = 1; nanos = 2}; }
//   ConfigRecord / SummaryRecord { repeated Item update = 1; }  Item { key = 1; value_json = 16; }
//   HistoryRecord { repeated HistoryItem item = 1; HistoryStep step = 2 { num = 1; } }
//   RunExitRecord { int32 exit_code = 1; int32 runtime = 2; }
import { open, type FileHandle } from "node:fs/promises";
import { crc32 } from "node:zlib";

import { bytesField, intField, messageField } from "./protobuf.js";

const BLOCK = 32768;
const HEADER = 7;
const FULL = 1;
const FIRST = 2;
const MIDDLE = 3;
const LAST = 4;

/** The file header: ident ":W&B", magic 0xBEE1 (uint16 LE), version 0. */
export function wandbFileHeader(): Buffer {
  const b = Buffer.alloc(HEADER);
  b.write(":W&B", 0, "latin1");
  b.writeUInt16LE(0xbee1, 4);
  b.writeUInt8(0, 6);
  return b;
}

/** The bytes of one record written at file offset `offset`: padding, fragments and their headers. */
export function frameRecord(data: Buffer, offset: number): Buffer {
  const out: Buffer[] = [];
  let at = offset;
  let used = 0;
  let first = true;
  for (;;) {
    let left = BLOCK - (at % BLOCK);
    if (left < HEADER) {
      out.push(Buffer.alloc(left));
      at += left;
      left = BLOCK;
    }
    const room = left - HEADER;
    const chunk = data.subarray(used, used + room);
    used += chunk.length;
    const last = used >= data.length;
    const type = first && last ? FULL : first ? FIRST : last ? LAST : MIDDLE;
    first = false;
    const header = Buffer.alloc(HEADER);
    header.writeUInt32LE(crc32(chunk, crc32(Buffer.from([type]))) >>> 0, 0);
    header.writeUInt16LE(chunk.length, 4);
    header.writeUInt8(type, 6);
    out.push(header, chunk);
    at += HEADER + chunk.length;
    if (last) return Buffer.concat(out);
  }
}

type Item = [key: string, value: unknown];
const items = (field: number, entries: Item[]): Buffer[] =>
  entries.map(([key, value]) => messageField(field, bytesField(1, key), bytesField(16, JSON.stringify(value))));

/** Record encoders: each returns a serialized Record with sequence number `num`. */
export const wandbRecord = {
  header: (num: number): Buffer => Buffer.concat([intField(1, num), messageField(21)]),
  run: (
    num: number,
    run: { id: string; project: string; name: string; host: string; startTime: number; config: Item[] },
  ): Buffer => {
    const seconds = Math.floor(run.startTime);
    const start = messageField(17, intField(1, seconds), intField(2, Math.round((run.startTime - seconds) * 1e9)));
    const fields = [bytesField(1, run.id), bytesField(3, run.project), messageField(4, ...items(1, run.config))];
    fields.push(bytesField(8, run.name), bytesField(13, run.host), start);
    return Buffer.concat([intField(1, num), messageField(17, ...fields)]);
  },
  history: (num: number, step: number, entries: Item[]): Buffer =>
    Buffer.concat([intField(1, num), messageField(2, ...items(1, entries), messageField(2, intField(1, step)))]),
  summary: (num: number, entries: Item[]): Buffer =>
    Buffer.concat([intField(1, num), messageField(3, ...items(1, entries))]),
  exit: (num: number, exitCode: number, runtime: number): Buffer =>
    Buffer.concat([intField(1, num), messageField(18, intField(1, exitCode), intField(2, Math.round(runtime)))]),
  final: (num: number): Buffer => Buffer.concat([intField(1, num), messageField(20)]),
};

/** An open .wandb file: records are appended as they come; sync() makes them durable. */
export class WandbLogWriter {
  private offset = HEADER;
  private count = 0;

  private constructor(
    readonly path: string,
    private readonly handle: FileHandle,
  ) {}

  static async create(path: string): Promise<WandbLogWriter> {
    const handle = await open(path, "wx");
    await handle.write(wandbFileHeader());
    return new WandbLogWriter(path, handle);
  }

  /** The next record's sequence number (1, 2, ...). */
  next(): number {
    return ++this.count;
  }

  async write(record: Buffer): Promise<void> {
    const bytes = frameRecord(record, this.offset);
    await this.handle.write(bytes);
    this.offset += bytes.length;
  }

  async sync(): Promise<void> {
    await this.handle.datasync();
  }

  async close(): Promise<void> {
    await this.handle.sync();
    await this.handle.close();
  }
}
