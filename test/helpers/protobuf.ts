// A generic protobuf wire-format walk for tests (no schema): decoders of the files sdtune
// writes by hand use it, so a field-number or wire-type mistake in src/ shows up as a mismatch.
export type Field = { field: number; wire: number; value: number | Buffer };

export function fields(buf: Buffer): Field[] {
  const out: Field[] = [];
  let at = 0;
  const varint = (): number => {
    let result = 0;
    let scale = 1;
    for (;;) {
      const b = buf[at++]!;
      result += (b & 0x7f) * scale;
      scale *= 128;
      if (b < 0x80) return result;
    }
  };
  while (at < buf.length) {
    const key = varint();
    const field = Math.floor(key / 8);
    const wire = key % 8;
    if (wire === 0) out.push({ field, wire, value: varint() });
    else if (wire === 1) out.push({ field, wire, value: buf.subarray(at, (at += 8)) });
    else if (wire === 5) out.push({ field, wire, value: buf.subarray(at, (at += 4)) });
    else if (wire === 2) {
      const n = varint();
      out.push({ field, wire, value: buf.subarray(at, (at += n)) });
    } else throw new Error(`unexpected wire type ${wire}`);
  }
  return out;
}

/** The one field numbered `n` (throws when absent). */
export function one(all: Field[], n: number): Field {
  const f = all.find((x) => x.field === n);
  if (!f) throw new Error(`no field ${n}`);
  return f;
}

export const text = (f: Field): string => (f.value as Buffer).toString("utf8");
