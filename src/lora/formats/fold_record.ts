// The metadata entry in which sdtune records, for diffusers / PEFT-key exports,
// the alpha each module had before alpha / rank was folded into its up weights,
// plus (only where the fold is not exactly invertible) the correction that makes
// unfolding bit-exact. Other loaders ignore it. See save.ts for the reasoning.
//
//   "sdtune_folded_alphas": {"<module key>": 8, "<module key>": {"alpha": 6,
//     "residual": base64(deflate(int8 bit-pattern corrections)), "up": sha256(up bytes)[:16]}}
import { createHash } from "node:crypto";
import { deflateRawSync, inflateRawSync } from "node:zlib";

import type { Tensor } from "../../native/index.js";
import { tensorFrom } from "../../tensor.js";
import type { LoraAdapter } from "./types.js";

export const FOLDED_ALPHAS_KEY = "sdtune_folded_alphas";

export type FoldedEntry = number | { alpha: number; residual: string; up: string };

const bytesOf = (t: Tensor): Buffer => {
  const a = t.toTypedArray();
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength);
};
const fingerprint = (t: Tensor): string => createHash("sha256").update(bytesOf(t)).digest("hex").slice(0, 16);

/** The record entry for a module whose stored up is `up` (already folded). */
export function foldedEntry(alpha: number, up: Tensor, residual?: Tensor): FoldedEntry {
  if (!residual) return alpha;
  return { alpha, residual: deflateRawSync(bytesOf(residual)).toString("base64"), up: fingerprint(up) };
}

/** Sets originalAlpha / foldResidual on the adapters the file's record names. */
export function applyFoldedRecord(
  adapters: Map<string, LoraAdapter>,
  metadata: Record<string, string>,
  warnings: string[],
): void {
  const raw = metadata[FOLDED_ALPHAS_KEY];
  if (!raw) return;
  let record: Record<string, unknown>;
  try {
    record = JSON.parse(raw) as Record<string, unknown>;
  } catch {
    warnings.push(`metadata "${FOLDED_ALPHAS_KEY}" is not valid JSON; ignored`);
    return;
  }
  for (const [key, entry] of Object.entries(record)) {
    const adapter = adapters.get(key);
    const alpha = typeof entry === "number" ? entry : (entry as { alpha?: unknown } | null)?.alpha;
    if (!adapter || typeof alpha !== "number" || !(alpha > 0) || adapter.alpha !== adapter.rank) {
      warnings.push(`metadata "${FOLDED_ALPHAS_KEY}": entry "${key}" does not match the file; ignored`);
      continue;
    }
    adapter.originalAlpha = alpha;
    if (typeof entry === "number") continue;
    const { residual, up } = entry as { residual?: unknown; up?: unknown };
    if (typeof residual !== "string" || up !== fingerprint(adapter.up)) {
      warnings.push(
        `metadata "${FOLDED_ALPHAS_KEY}": the up weights of "${key}" changed since the record was written; ` +
          "its alpha is restored, the last-bit correction is not",
      );
      continue;
    }
    const bytes = inflateRawSync(Buffer.from(residual, "base64"));
    if (bytes.length !== adapter.up.numel) {
      warnings.push(`metadata "${FOLDED_ALPHAS_KEY}": the correction of "${key}" has the wrong size; ignored`);
      continue;
    }
    const corrections = new Int8Array(bytes.buffer, bytes.byteOffset, bytes.length);
    adapter.foldResidual = tensorFrom(corrections, adapter.up.shape);
  }
}
