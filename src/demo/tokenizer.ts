// A small CLIP-format BPE tokenizer for the demo model, built from a word list:
// the 512 byte symbols (with and without the end-of-word mark) as CLIP has them,
// merges that spell each demo word, and CLIP's special tokens. It is read by the
// same ClipTokenizer as real checkpoints (vocab.json + merges.txt).
import { mkdir } from "node:fs/promises";
import { join } from "node:path";

import { writeFileAtomic } from "../io/atomic.js";
import { BYTE_TABLES, byteEncode } from "../text/clip_normalize.js";

/** Writes tokenizer files for `words` into `dir`; returns the vocabulary size. */
export async function writeDemoTokenizer(dir: string, words: readonly string[]): Promise<number> {
  const byteSymbols = [...BYTE_TABLES.encoder];
  const vocab = new Map<string, number>();
  const add = (token: string): void => {
    if (!vocab.has(token)) vocab.set(token, vocab.size);
  };
  byteSymbols.forEach(add);
  byteSymbols.forEach((s) => add(`${s}</w>`));
  const merges: string[] = [];
  const seen = new Set<string>();
  for (const word of [...new Set(words.map((w) => w.toLowerCase()))].sort()) {
    const symbols = [...byteEncode(word)];
    if (symbols.length === 0) continue;
    symbols[symbols.length - 1] += "</w>";
    // Merge left to right: (w0 w1), (w0w1 w2), ... until the word is one token.
    let current = symbols[0]!;
    for (let i = 1; i < symbols.length; i++) {
      const merge = `${current} ${symbols[i]}`;
      current += symbols[i];
      if (!seen.has(merge)) {
        seen.add(merge);
        merges.push(merge);
        add(current);
      }
    }
  }
  add("<|startoftext|>");
  add("<|endoftext|>");
  await mkdir(dir, { recursive: true });
  await writeFileAtomic(join(dir, "vocab.json"), JSON.stringify(Object.fromEntries(vocab)));
  await writeFileAtomic(join(dir, "merges.txt"), `#version: 0.2\n${merges.join("\n")}\n`);
  const special = { content: "<|endoftext|>", lstrip: false, normalized: true, rstrip: false, single_word: false };
  await writeFileAtomic(
    join(dir, "special_tokens_map.json"),
    JSON.stringify(
      {
        bos_token: { ...special, content: "<|startoftext|>" },
        eos_token: special,
        pad_token: special,
        unk_token: special,
      },
      null,
      2,
    ),
  );
  await writeFileAtomic(
    join(dir, "tokenizer_config.json"),
    JSON.stringify(
      {
        bos_token: "<|startoftext|>",
        eos_token: "<|endoftext|>",
        pad_token: "<|endoftext|>",
        unk_token: "<|endoftext|>",
        do_lower_case: true,
        model_max_length: 77,
        tokenizer_class: "CLIPTokenizer",
        clean_up_tokenization_spaces: true,
      },
      null,
      2,
    ),
  );
  return vocab.size;
}
