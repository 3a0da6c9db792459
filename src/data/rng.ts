// Seeded randomness for the data stream. Generators are keyed by
// (seed, purpose, epoch, batch, slot), not carried along, so any position in
// the stream can be recomputed without replaying what came before: that is what
// makes exact resume possible.

export interface Rng {
  /** Uniform uint32. */
  next(): number;
  /** Uniform in [0, 1). */
  float(): number;
  /** Uniform integer in [0, n), unbiased; n in [1, 2^32]. */
  int(n: number): number;
  /** Fisher-Yates in place. */
  shuffle<T>(items: T[]): T[];
}

/** Purposes, so streams for different things never share numbers. */
export const RNG_PURPOSE = { order: 1, item: 2, classOrder: 3, caption: 4 } as const;

/** A generator for the key `words` (integers; each may be up to 2^53). */
export function keyedRng(...words: number[]): Rng {
  const parts: number[] = [];
  for (const w of words) {
    if (!Number.isSafeInteger(w) || w < 0)
      throw new RangeError(`rng key must be a non-negative safe integer, got ${w}`);
    parts.push(w >>> 0, Math.floor(w / 2 ** 32) >>> 0);
  }
  // Four independent hashes of the key seed sfc32's four words of state.
  const state = [0x9e3779b9, 0x243f6a88, 0xb7e15162, 0x3c6ef372].map((salt) => {
    let h = salt;
    for (const p of parts) h = murmurRound(h, p);
    return fmix(h ^ parts.length);
  });
  return sfc32(state[0]!, state[1]!, state[2]!, state[3]!);
}

function murmurRound(h: number, k: number): number {
  k = Math.imul(k, 0xcc9e2d51);
  k = (k << 15) | (k >>> 17);
  k = Math.imul(k, 0x1b873593);
  h ^= k;
  h = (h << 13) | (h >>> 19);
  return (Math.imul(h, 5) + 0xe6546b64) | 0;
}

function fmix(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** Chris Doty-Humphrey's small fast counting generator (PractRand-clean). */
function sfc32(a: number, b: number, c: number, d: number): Rng {
  const next = (): number => {
    const t = (((a + b) | 0) + d) | 0;
    d = (d + 1) | 0;
    a = b ^ (b >>> 9);
    b = (c + (c << 3)) | 0;
    c = (c << 21) | (c >>> 11);
    c = (c + t) | 0;
    return t >>> 0;
  };
  for (let i = 0; i < 12; i++) next();
  const rng: Rng = {
    next,
    float: () => next() / 2 ** 32,
    int(n) {
      if (!(Number.isInteger(n) && n >= 1 && n <= 2 ** 32)) throw new RangeError(`rng.int: bad bound ${n}`);
      const limit = 2 ** 32 - (2 ** 32 % n);
      for (;;) {
        const x = next();
        if (x < limit) return x % n;
      }
    },
    shuffle(items) {
      for (let i = items.length - 1; i > 0; i--) {
        const j = rng.int(i + 1);
        const t = items[i]!;
        items[i] = items[j]!;
        items[j] = t;
      }
      return items;
    },
  };
  return rng;
}
