import { readFile, readdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { inspectSafetensors, readSafetensors, writeSafetensors } from "../src/io/safetensors.js";
import type { DType } from "../src/native/index.js";
import { tensorFrom } from "../src/tensor.js";
import { fixture, fixturesDir, tempDir } from "./helpers/fixtures.js";

let dir: { path: string; cleanup(): Promise<void> };
beforeAll(async () => {
  dir = await tempDir();
});
afterAll(async () => dir.cleanup());

/** Builds a safetensors file by hand, so malformed variants can be made. */
function encode(header: unknown, data: Uint8Array, rawHeader?: string): Buffer {
  const json = Buffer.from(rawHeader ?? JSON.stringify(header), "utf8");
  const length = Buffer.alloc(8);
  length.writeBigUInt64LE(BigInt(json.length));
  return Buffer.concat([length, json, data]);
}

const validHeader = {
  __metadata__: { format: "pt" },
  a: { dtype: "F32", shape: [2, 2], data_offsets: [0, 16] },
  b: { dtype: "I64", shape: [1], data_offsets: [16, 24] },
};
const validData = new Uint8Array(24).map((_, i) => i);

describe("safetensors round trip", () => {
  const cases: [DType, () => ArrayLike<number | bigint> & { length: number }][] = [
    ["float32", () => Float32Array.from([1.5, -2, 3.25, 1e-8, 7, 8])],
    ["float64", () => Float64Array.from([Math.PI, -1e300, 0, 1, 2, 3])],
    ["float16", () => Uint16Array.from([0x3c00, 0xc000, 0x7bff, 0x0001, 0x8000, 0x3555])],
    ["bfloat16", () => Uint16Array.from([0x3f80, 0xc000, 0x7f7f, 0x0001, 0x8000, 0x3eaa])],
    ["int64", () => BigInt64Array.from([1n, -2n, 9007199254740993n, -9223372036854775808n, 0n, 5n])],
    ["int32", () => Int32Array.from([1, -2, 2147483647, -2147483648, 0, 5])],
    ["int16", () => Int16Array.from([1, -2, 32767, -32768, 0, 5])],
    ["int8", () => Int8Array.from([1, -2, 127, -128, 0, 5])],
    ["uint8", () => Uint8Array.from([0, 1, 2, 128, 254, 255])],
    ["bool", () => Uint8Array.from([1, 0, 1, 1, 0, 0])],
  ];

  it.each(cases)("%s survives write and read bit for bit", async (dtype, make) => {
    const data = make();
    const t = tensorFrom(data as never, [2, 3], dtype);
    const path = join(dir.path, `${dtype}.safetensors`);
    await writeSafetensors(path, { x: t, scalar: tensorFrom(Float32Array.from([42]), []) }, { kind: dtype });
    const back = await readSafetensors(path);
    expect(back.metadata).toEqual({ kind: dtype });
    const x = back.tensors.get("x")!;
    expect(x.dtype).toBe(dtype);
    expect(x.shape).toEqual([2, 3]);
    expect(Array.from(x.toTypedArray() as ArrayLike<unknown>)).toEqual(Array.from(data as ArrayLike<unknown>));
    expect(back.tensors.get("scalar")!.shape).toEqual([]);
  });

  it("writes a header padded to 8 bytes, largest dtypes first", async () => {
    const path = join(dir.path, "order.safetensors");
    await writeSafetensors(path, [
      ["small", tensorFrom(Uint8Array.from([1, 2, 3]), [3])],
      ["big", tensorFrom(Float64Array.from([1]), [1])],
    ]);
    const bytes = await readFile(path);
    const n = Number(bytes.readBigUInt64LE(0));
    expect(n % 8).toBe(0);
    const header = await inspectSafetensors(path);
    expect(header.tensors.map((t) => t.name)).toEqual(["big", "small"]);
    expect(header.tensors[0]!.dataOffsets).toEqual([0, 8]);
  });

  it("leaves no temp file behind and replaces the target atomically", async () => {
    const path = join(dir.path, "atomic.safetensors");
    await writeSafetensors(path, { a: tensorFrom(Float32Array.from([1]), [1]) });
    await writeSafetensors(path, { b: tensorFrom(Float32Array.from([2]), [1]) });
    expect((await inspectSafetensors(path)).tensors.map((t) => t.name)).toEqual(["b"]);
    expect((await readdir(dir.path)).filter((f) => f.includes(".tmp-"))).toEqual([]);
  });

  it("tensors read from a file are copy-on-write: in-place changes never reach the file", async () => {
    const path = join(dir.path, "cow.safetensors");
    await writeFile(path, encode(validHeader, validData));
    const { tensors } = await readSafetensors(path);
    const view = tensors.get("a")!.toTypedArray() as Float32Array;
    view[0] = 123;
    expect((tensors.get("a")!.toTypedArray() as Float32Array)[0]).toBe(123);
    expect(Buffer.compare(await readFile(path), encode(validHeader, validData))).toBe(0);
  });

  it("reads only the names asked for, and names a missing one", async () => {
    const path = join(dir.path, "names.safetensors");
    await writeFile(path, encode(validHeader, validData));
    const some = await readSafetensors(path, { names: ["b"] });
    expect([...some.tensors.keys()]).toEqual(["b"]);
    await expect(readSafetensors(path, { names: ["zzz"] })).rejects.toThrow(/no tensor named "zzz"/);
  });
});

describe("the fixture files", () => {
  async function allSafetensors(root: string): Promise<string[]> {
    const out: string[] = [];
    for (const entry of await readdir(root, { withFileTypes: true })) {
      const full = join(root, entry.name);
      if (entry.isDirectory()) out.push(...(await allSafetensors(full)));
      else if (entry.name.endsWith(".safetensors")) out.push(full);
    }
    return out;
  }

  it("every .safetensors under fixtures reads, and every tensor has the shape its header says", async () => {
    const files = await allSafetensors(fixturesDir);
    expect(files.length).toBeGreaterThan(20);
    for (const file of files) {
      const { tensors, header } = await readSafetensors(file);
      expect(tensors.size, file).toBe(header.tensors.length);
      for (const info of header.tensors)
        expect(tensors.get(info.name)!.shape, `${file}:${info.name}`).toEqual(info.shape);
    }
  });

  it("model weights match their configs", async () => {
    const unetConfig = JSON.parse(await readFile(fixture("tiny-sd", "unet", "config.json"), "utf8"));
    const unet = await inspectSafetensors(fixture("tiny-sd", "unet", "diffusion_pytorch_model.safetensors"));
    const shape = (name: string): number[] | undefined => unet.tensors.find((t) => t.name === name)?.shape;
    const c0 = unetConfig.block_out_channels[0];
    expect(shape("conv_in.weight")).toEqual([c0, unetConfig.in_channels, 3, 3]);
    expect(shape("conv_out.weight")).toEqual([unetConfig.out_channels, c0, 3, 3]);
    expect(shape("time_embedding.linear_1.weight")).toEqual([4 * c0, c0]);
    const last = unetConfig.block_out_channels.at(-1);
    expect(shape("mid_block.attentions.0.transformer_blocks.0.attn2.to_k.weight")).toEqual([
      last,
      unetConfig.cross_attention_dim,
    ]);

    const vaeConfig = JSON.parse(await readFile(fixture("tiny-sd", "vae", "config.json"), "utf8"));
    const vae = await inspectSafetensors(fixture("tiny-sd", "vae", "diffusion_pytorch_model.safetensors"));
    const vshape = (name: string): number[] | undefined => vae.tensors.find((t) => t.name === name)?.shape;
    expect(vshape("quant_conv.weight")).toEqual([2 * vaeConfig.latent_channels, 2 * vaeConfig.latent_channels, 1, 1]);
    expect(vshape("encoder.conv_in.weight")).toEqual([vaeConfig.block_out_channels[0], vaeConfig.in_channels, 3, 3]);

    const teConfig = JSON.parse(await readFile(fixture("tiny-sd", "text_encoder", "config.json"), "utf8"));
    const te = await inspectSafetensors(fixture("tiny-sd", "text_encoder", "model.safetensors"));
    const tshape = (name: string): number[] | undefined => te.tensors.find((t) => t.name === name)?.shape;
    expect(tshape("text_model.embeddings.token_embedding.weight")).toEqual([teConfig.vocab_size, teConfig.hidden_size]);
    expect(tshape("text_model.embeddings.position_embedding.weight")).toEqual([
      teConfig.max_position_embeddings,
      teConfig.hidden_size,
    ]);
    const layers = te.tensors.filter((t) => /^text_model\.encoder\.layers\.\d+\.mlp\.fc1\.weight$/.test(t.name));
    expect(layers.length).toBe(teConfig.num_hidden_layers);
    expect(layers[0]!.shape).toEqual([teConfig.intermediate_size, teConfig.hidden_size]);
  });

  it("reads __metadata__", async () => {
    const header = await inspectSafetensors(fixture("lora", "kohya", "lora.safetensors"));
    // sd-scripts' metadata: string values, the network module among them.
    expect(header.metadata).toMatchObject({ ss_network_module: "networks.lora" });
    expect(Object.values(header.metadata).every((v) => typeof v === "string")).toBe(true);
    const unet = await inspectSafetensors(fixture("tiny-sd", "unet", "diffusion_pytorch_model.safetensors"));
    expect(unet.metadata.format).toBe("pt");
  });
});

describe("malformed files give clear errors", () => {
  const cases: [string, () => Buffer, RegExp][] = [
    ["zero bytes", () => Buffer.alloc(0), /too short for a header length/],
    [
      "truncated data",
      () => encode(validHeader, validData).subarray(0, 8 + JSON.stringify(validHeader).length + 5),
      /outside the data area/,
    ],
    ["truncated header", () => encode(validHeader, validData).subarray(0, 20), /runs past the end of the file/],
    [
      "header length beyond the file",
      () => {
        const b = encode(validHeader, validData);
        b.writeBigUInt64LE(BigInt(b.length));
        return b;
      },
      /runs past the end of the file/,
    ],
    [
      "absurd header length",
      () => {
        const b = encode(validHeader, validData);
        b.writeBigUInt64LE(0xffffffffffffn);
        return b;
      },
      /absurdly large/,
    ],
    ["not JSON", () => encode(null, validData, "{not json at all}"), /not valid JSON/],
    ["a JSON array", () => encode([1, 2, 3], new Uint8Array(0)), /must be a JSON object/],
    [
      "offsets out of bounds",
      () => encode({ a: { dtype: "F32", shape: [8], data_offsets: [0, 32] } }, new Uint8Array(16)),
      /outside the data area/,
    ],
    [
      "overlapping offsets",
      () =>
        encode(
          {
            a: { dtype: "F32", shape: [2], data_offsets: [0, 8] },
            b: { dtype: "F32", shape: [2], data_offsets: [4, 12] },
          },
          new Uint8Array(12),
        ),
      /overlaps/,
    ],
    [
      "a gap between tensors",
      () =>
        encode(
          {
            a: { dtype: "F32", shape: [1], data_offsets: [0, 4] },
            b: { dtype: "F32", shape: [1], data_offsets: [8, 12] },
          },
          new Uint8Array(12),
        ),
      /gap of 4 bytes/,
    ],
    [
      "trailing bytes",
      () => encode({ a: { dtype: "F32", shape: [1], data_offsets: [0, 4] } }, new Uint8Array(8)),
      /after the last tensor/,
    ],
    [
      "an unknown dtype",
      () => encode({ a: { dtype: "Q4", shape: [1], data_offsets: [0, 4] } }, new Uint8Array(4)),
      /unknown dtype "Q4"/,
    ],
    [
      "a shape/byte mismatch",
      () => encode({ a: { dtype: "F32", shape: [3], data_offsets: [0, 8] } }, new Uint8Array(8)),
      /shape\/byte mismatch/,
    ],
    [
      "duplicate names",
      () =>
        encode(
          null,
          new Uint8Array(8),
          '{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}',
        ),
      /duplicate tensor name "a"/,
    ],
    [
      "negative shape",
      () => encode({ a: { dtype: "F32", shape: [-1], data_offsets: [0, 4] } }, new Uint8Array(4)),
      /non-negative integers/,
    ],
    [
      "non-string metadata",
      () => encode({ __metadata__: { n: 1 } }, new Uint8Array(0)),
      /__metadata__\["n"\] must be a string/,
    ],
  ];

  it.each(cases)("%s", async (name, make, pattern) => {
    const path = join(dir.path, `bad-${name.replace(/\W+/g, "-")}.safetensors`);
    await writeFile(path, make());
    await expect(inspectSafetensors(path)).rejects.toThrow(pattern);
    const error = await readSafetensors(path).catch((e: Error) => e);
    expect(error).toBeInstanceOf(Error);
    expect((error as Error).message).toMatch(pattern);
    expect((error as Error).message).toContain(path);
    expect((error as Error).message).not.toMatch(/Exception raised from|frame #/);
  });

  it("8-bit floats get an 'unsupported' error", async () => {
    const path = join(dir.path, "f8.safetensors");
    await writeFile(path, encode({ a: { dtype: "F8_E4M3", shape: [4], data_offsets: [0, 4] } }, new Uint8Array(4)));
    // The header is valid; taking the tensor is what fails.
    await expect(readSafetensors(path)).rejects.toThrow(/F8_E4M3 \(8-bit float\) is unsupported/);
  });

  it("a missing file names the path", async () => {
    await expect(inspectSafetensors(join(dir.path, "nope.safetensors"))).rejects.toThrow(
      /nope\.safetensors: cannot open/,
    );
  });

  it("survives 2,000 random mutations of a valid file without crashing or hanging", async () => {
    const base = encode(validHeader, validData);
    let seed = 12345;
    const rand = (n: number): number => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      return seed % n;
    };
    const path = join(dir.path, "fuzz.safetensors");
    let accepted = 0;
    let rejected = 0;
    for (let i = 0; i < 2000; i++) {
      let bytes = Buffer.from(base);
      const kind = rand(4);
      if (kind === 0) {
        for (let k = 0; k <= rand(4); k++) bytes[rand(bytes.length)] = rand(256);
      } else if (kind === 1) {
        bytes = bytes.subarray(0, rand(bytes.length));
      } else if (kind === 2) {
        const at = rand(bytes.length);
        bytes = Buffer.concat([bytes.subarray(0, at), Buffer.from([rand(256)]), bytes.subarray(at)]);
      } else {
        bytes[8 + rand(bytes.length - 8)] = '{}[]",:0123456789-e.\\u'.charCodeAt(rand(22));
      }
      await writeFile(path, bytes);
      try {
        const { tensors } = await readSafetensors(path);
        for (const t of tensors.values()) t.toTypedArray();
        accepted++;
      } catch (error) {
        expect(error).toBeInstanceOf(Error);
        rejected++;
      }
    }
    expect(accepted + rejected).toBe(2000);
    expect(rejected).toBeGreaterThan(1000);
  });
});
