// CLIP tokenizer: folder load time (vocab.json + merges.txt, 49408 tokens / 48894 merges)
// and encode throughput for SD-pipeline calls (padding max_length, truncation), with
// the per-word BPE cache cold (fresh tokenizer) and warm (same prompts again).
import { readFile } from "node:fs/promises";

import { ClipTokenizer } from "../src/text/clip_tokenizer.js";
import { fixture } from "../test/helpers/fixtures.js";
import { machine, median, time } from "./_util.js";
import type { Benchmark } from "./run.js";

/** Deterministic caption-like prompts from the golden prompt words (no randomness between runs). */
function captions(seedPrompts: string[], count: number): string[] {
  const words = seedPrompts.join(" ").split(/\s+/).filter(Boolean);
  const out: string[] = [];
  let state = 12345;
  const next = (): number => (state = (state * 1103515245 + 12345) % 2 ** 31);
  for (let i = 0; i < count; i++) {
    const n = 5 + (next() % 40);
    out.push(Array.from({ length: n }, () => words[next() % words.length]).join(" "));
  }
  return out;
}

export const benchmark: Benchmark = {
  description:
    "CLIP tokenizer: load ms (vocab.json + merges.txt) and prompts/s (SD pipeline call), cold and warm cache",
  async run(args) {
    const count = Number(args[0] ?? 5000);
    const dir = fixture("tiny-sd", "tokenizer");
    const golden = JSON.parse(await readFile(fixture("golden", "prompts.json"), "utf8")) as {
      prompts: { prompt: string }[];
    };
    const prompts = captions(
      golden.prompts.map((p) => p.prompt),
      count,
    );

    const loads = await time(() => ClipTokenizer.fromPretrained(dir), 5);
    // Cold: a fresh tokenizer, so every distinct word goes through BPE once.
    const tokenizer = await ClipTokenizer.fromPretrained(dir);
    const t0 = performance.now();
    tokenizer.encodeIds(prompts);
    const coldMs = performance.now() - t0;
    const warm = await time(() => tokenizer.encodeIds(prompts), 5);
    const perSecond = (ms: number): number => (prompts.length / ms) * 1000;
    return {
      machine: machine(),
      prompts: prompts.length,
      loadMedianMs: median(loads),
      loadMinMs: Math.min(...loads),
      coldPromptsPerSecond: perSecond(coldMs),
      warmPromptsPerSecond: perSecond(median(warm)),
    };
  },
};
