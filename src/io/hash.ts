// Content hashes of files: sha256 streamed in 4 MiB reads (models are gigabytes), optionally
// from an offset; the hash a Hugging Face cache already names a blob by; and the hashes
// AUTOMATIC1111 writes into infotext ("Model hash", "Lora hashes").
import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { open, realpath } from "node:fs/promises";

/** sha256 (hex) of a file's bytes from `start` (default 0) to its end. */
export async function sha256File(
  path: string,
  options: { start?: number; signal?: AbortSignal } = {},
): Promise<string> {
  const h = createHash("sha256");
  const stream = createReadStream(path, { start: options.start ?? 0, highWaterMark: 4 << 20, signal: options.signal });
  for await (const chunk of stream) h.update(chunk as Buffer);
  return h.digest("hex");
}

const HF_BLOB = /[/\\]blobs[/\\]([0-9a-f]{64})$/;

/** The sha256 a Hugging Face cache names `path`'s blob by (snapshot files link there), if it is one. */
export async function hfBlobSha256(path: string): Promise<string | undefined> {
  return HF_BLOB.exec(await realpath(path))?.[1];
}

/**
 * AUTOMATIC1111's AutoV3 hash of a safetensors file (its "Lora hashes", kohya's and
 * additional-networks' addnet hash): sha256 of the tensor data after the JSON header, so
 * rewriting the metadata does not change it. Infotext shows its first 12 hex digits.
 */
export async function safetensorsDataSha256(path: string, signal?: AbortSignal): Promise<string> {
  const file = await open(path, "r");
  let start: number;
  try {
    const { size } = await file.stat();
    const prefix = Buffer.alloc(8);
    const { bytesRead } = await file.read(prefix, 0, 8, 0);
    const headerLength = bytesRead === 8 ? prefix.readBigUInt64LE(0) : -1n;
    if (headerLength < 0n || headerLength + 8n > BigInt(size)) {
      throw new Error(`${path}: not a safetensors file (the header length does not fit in the file's ${size} bytes)`);
    }
    start = Number(headerLength) + 8;
  } finally {
    await file.close();
  }
  return sha256File(path, { start, ...(signal ? { signal } : {}) });
}

/**
 * AUTOMATIC1111's "Model hash" of weights: the first 10 hex digits of the sha256 of the file
 * (of the files in order, for shards). A Hugging Face cache blob is not read: its name is its hash.
 */
export async function modelShortHash(files: readonly string[], signal?: AbortSignal): Promise<string> {
  if (files.length === 1) {
    const blob = await hfBlobSha256(files[0]!);
    return (blob ?? (await sha256File(files[0]!, signal ? { signal } : {}))).slice(0, 10);
  }
  const h = createHash("sha256");
  for (const path of files) {
    const stream = createReadStream(path, { highWaterMark: 4 << 20, signal });
    for await (const chunk of stream) h.update(chunk as Buffer);
  }
  return h.digest("hex").slice(0, 10);
}
