// Hand-written protobuf encoding for the few messages sdtune writes (TensorBoard events, W&B
// offline records): proto3 wire format, fields emitted in the order given.

/** Base-128 varint of a non-negative integer below 2^53. */
export function varint(value: number): Buffer {
  if (!Number.isSafeInteger(value) || value < 0) throw new RangeError(`varint: ${value} is not a non-negative integer`);
  const bytes: number[] = [];
  let v = value;
  while (v >= 0x80) {
    bytes.push((v % 0x80) | 0x80);
    v = Math.floor(v / 0x80);
  }
  bytes.push(v);
  return Buffer.from(bytes);
}

const key = (field: number, wireType: number): Buffer => varint(field * 8 + wireType);

/** A varint field (int32/int64/bool/enum with a non-negative value). */
export function intField(field: number, value: number): Buffer {
  return Buffer.concat([key(field, 0), varint(value)]);
}

export function doubleField(field: number, value: number): Buffer {
  const b = Buffer.alloc(8);
  b.writeDoubleLE(value);
  return Buffer.concat([key(field, 1), b]);
}

export function floatField(field: number, value: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeFloatLE(value);
  return Buffer.concat([key(field, 5), b]);
}

/** A length-delimited field: an embedded message (its encoded bytes) or a UTF-8 string. */
export function bytesField(field: number, data: Buffer | string): Buffer {
  const bytes = typeof data === "string" ? Buffer.from(data, "utf8") : data;
  return Buffer.concat([key(field, 2), varint(bytes.length), bytes]);
}

/** An embedded message from its fields. */
export function messageField(field: number, ...fields: Buffer[]): Buffer {
  return bytesField(field, Buffer.concat(fields));
}
