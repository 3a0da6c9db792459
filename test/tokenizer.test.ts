// CLIP tokenizer parity with transformers' slow CLIPTokenizer (golden/tokenizer.safetensors,
// golden/prompts.json, golden/clip_score.safetensors), SD-1 vs SD-2 special tokens,
// tokenizer.json loading and error reporting.
import { copyFile, mkdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { ClipTokenizer } from "../src/text/clip_tokenizer.js";
import { fixture, get, golden, tempDir } from "./helpers/fixtures.js";

interface PromptCase {
  index: number;
  prompt: string;
  tokens: string[];
  ids_untruncated: number[];
  untruncated_length: number;
  truncated: boolean;
}
interface PromptsJson {
  pad_token: string;
  pad_token_id: number;
  model_max_length: number;
  prompts: PromptCase[];
}

const sdTokenizerDir = fixture("tiny-sd", "tokenizer");
const readJson = async <T>(path: string): Promise<T> => JSON.parse(await readFile(path, "utf8")) as T;

/** Rows of an int64 [n, L] tensor as numbers. */
function rows(t: { shape: number[]; toTypedArray(): unknown }): number[][] {
  const flat = Array.from(t.toTypedArray() as BigInt64Array, Number);
  const [n, l] = t.shape as [number, number];
  return Array.from({ length: n }, (_, i) => flat.slice(i * l, (i + 1) * l));
}

let tmp: { path: string; cleanup(): Promise<void> };
let sd2: ClipTokenizer;
let reference: PromptsJson;
let vocab: Record<string, number>;
beforeAll(async () => {
  tmp = await tempDir("sdtune-tok-");
  sd2 = await ClipTokenizer.fromPretrained(sdTokenizerDir);
  reference = await readJson<PromptsJson>(fixture("golden", "prompts.json"));
  vocab = await readJson<Record<string, number>>(join(sdTokenizerDir, "vocab.json"));
});
afterAll(async () => tmp.cleanup());

/** A tokenizer folder with tiny-sd's vocab/merges and the given config files. */
async function makeFolder(name: string, files: Record<string, unknown>, copy = ["vocab.json", "merges.txt"]) {
  const dir = join(tmp.path, name);
  await mkdir(dir, { recursive: true });
  for (const f of copy) await copyFile(join(sdTokenizerDir, f), join(dir, f));
  for (const [f, content] of Object.entries(files)) {
    await writeFile(join(dir, f), typeof content === "string" ? content : JSON.stringify(content));
  }
  return dir;
}

describe("the tiny-sd tokenizer against golden/tokenizer.safetensors", () => {
  it("reads the special tokens and length from the folder", () => {
    expect(sd2.maxLength).toBe(reference.model_max_length);
    expect(sd2.padTokenId).toBe(reference.pad_token_id);
    expect(sd2.bosTokenId).toBe(vocab["<|startoftext|>"]);
    expect(sd2.eosTokenId).toBe(vocab["<|endoftext|>"]);
  });

  it("input_ids, attention_mask and untruncated lengths match for every prompt", async () => {
    const ref = await golden("tokenizer");
    const prompts = reference.prompts.map((p) => p.prompt);
    const out = sd2.encodeIds(prompts, { padding: "max_length", truncation: true });
    expect(out.ids).toEqual(rows(get(ref, "input_ids")));
    expect(out.attentionMask).toEqual(rows(get(ref, "attention_mask")));
    const lengths = Array.from(get(ref, "untruncated_lengths").toTypedArray() as BigInt64Array, Number);
    expect(out.untruncatedLengths).toEqual(lengths);
  });

  it("encode() returns the same int64 tensor (defaults = the SD pipeline call)", async () => {
    const ref = get(await golden("tokenizer"), "input_ids");
    const t = sd2.encode(reference.prompts.map((p) => p.prompt));
    try {
      expect(t.dtype).toBe("int64");
      expect(t.shape).toEqual(ref.shape);
      expect(rows(t)).toEqual(rows(ref));
    } finally {
      t.dispose();
    }
  });

  it("tokens and untruncated ids match prompts.json, truncation reports what was dropped", () => {
    const out = sd2.encodeIds(
      reference.prompts.map((p) => p.prompt),
      { padding: false, truncation: false },
    );
    const truncated = sd2.encodeIds(reference.prompts.map((p) => p.prompt));
    for (const [i, p] of reference.prompts.entries()) {
      expect(sd2.tokenize(p.prompt), `prompt ${i} tokens`).toEqual(p.tokens);
      expect(out.ids[i], `prompt ${i} ids`).toEqual(p.ids_untruncated);
      expect(out.untruncatedLengths[i]).toBe(p.untruncated_length);
      // Truncation keeps maxLength - 2 content tokens, then the EOS.
      const room = reference.model_max_length - 2;
      expect(truncated.truncated[i], `prompt ${i} dropped tokens`).toEqual(p.tokens.slice(room));
      expect(truncated.truncatedText[i] !== "", `prompt ${i} truncated`).toBe(p.truncated);
      if (p.truncated) expect(truncated.ids[i]!.at(-1)).toBe(sd2.eosTokenId);
    }
  });

  it("the pad token is cut out of the raw text as its own id, like every special token", () => {
    // SD-2 tokenizers pad with "!", SD-1 ones with "<|endoftext|>": either is a special token.
    const pad = reference.pad_token;
    expect(sd2.tokenize(`HORSE${pad}${pad}${pad}`)).toEqual(["horse</w>", pad, pad, pad]);
    expect(sd2.encodeIds([`wow${pad}`], { padding: false }).ids[0]).toEqual([
      sd2.bosTokenId,
      vocab["wow</w>"],
      sd2.padTokenId,
      sd2.eosTokenId,
    ]);
  });

  it("padding longest pads to the longest row and masks the padding", () => {
    const out = sd2.encodeIds(["a cat", "a photo of a cat"], { padding: "longest" });
    const lengths = out.untruncatedLengths;
    const width = Math.max(...lengths);
    expect(out.ids.map((r) => r.length)).toEqual([width, width]);
    expect(out.attentionMask[0]).toEqual([...Array(lengths[0]).fill(1), ...Array(width - lengths[0]!).fill(0)]);
    expect(out.ids[0]!.slice(lengths[0])).toEqual(Array(width - lengths[0]!).fill(sd2.padTokenId));
  });

  it("padding false gives ragged rows, which encode() refuses with a clear error", () => {
    const out = sd2.encodeIds(["a", "a b c"], { padding: false });
    expect(out.ids.map((r) => r.length)).toEqual(out.untruncatedLengths);
    expect(() => sd2.encode(["a", "a b c"], { padding: false })).toThrow(/different lengths.*padding/);
  });

  it("a custom maxLength truncates content but keeps BOS and EOS", () => {
    const out = sd2.encodeIds(["a photo of an astronaut"], { maxLength: 4 });
    const full = sd2.encodeIds(["a photo of an astronaut"], { padding: false, truncation: false }).ids[0]!;
    expect(out.ids[0]).toEqual([...full.slice(0, 3), sd2.eosTokenId]);
    expect(out.truncated[0]).toEqual(sd2.tokenize("a photo of an astronaut").slice(2));
    expect(() => sd2.encodeIds(["x"], { maxLength: 1 })).toThrow(RangeError);
  });

  it("clean-up follows the BasicTokenizer path (no ftfy)", () => {
    // CJK ideographs become separate words, kana do not.
    expect(sd2.tokenize("東京")).toEqual(sd2.tokenize("東 京"));
    expect(sd2.tokenize("タワー")).not.toEqual(sd2.tokenize("タ ワ ー"));
    // Control and format characters are dropped, whitespace of any kind collapses, text is lowercased.
    expect(sd2.tokenize("a\u200bb\u0007c")).toEqual(sd2.tokenize("abc"));
    expect(sd2.tokenize("\t A\u3000\u00a0B\r\n")).toEqual(sd2.tokenize("a b"));
    // U+0345 matches no alternative of the CLIP regex under Python's `regex` IGNORECASE
    // (checked code point by code point against Python regex 2026.5), so it splits words like a space.
    expect(sd2.tokenize("x\u0345y")).toEqual(sd2.tokenize("x y"));
    // NFC: a decomposed é is the composed one.
    expect(sd2.tokenize("cafe\u0301")).toEqual(sd2.tokenize("café"));
    // The special strings in another case survive lowercasing and hit the BPE cache's
    // pre-seeded entries (CLIPTokenizer.bpe), so they keep their special id.
    expect(sd2.encodeIds(["<|ENDOFTEXT|>"], { padding: false }).ids[0]).toEqual([
      sd2.bosTokenId,
      sd2.eosTokenId,
      sd2.eosTokenId,
    ]);
  });

  it("decodes ids back to text", () => {
    const first = reference.prompts[0]!;
    const ids = sd2.encodeIds([first.prompt]).ids[0]!;
    expect(sd2.decode(ids, { skipSpecialTokens: true })).toBe(first.prompt);
    // BOS and the first two tokens (from prompts.json): "</w>" ends a word.
    const twoTokens = first.tokens.slice(0, 2).join("").replaceAll("</w>", " ").trim();
    expect(sd2.decode(ids.slice(0, 3))).toBe(`<|startoftext|>${twoTokens}`);
    expect(() => sd2.decode([1_000_000])).toThrow(/not in the vocabulary/);
  });

  it("accepts a diffusers pipeline folder and finds tokenizer/ inside", async () => {
    const tok = await ClipTokenizer.fromPretrained(fixture("tiny-sd"));
    expect(tok.encodeIds(["a photo"]).ids).toEqual(sd2.encodeIds(["a photo"]).ids);
  });
});

describe("SD-1 style tokenizer (pad <|endoftext|>)", () => {
  it("'!!!' is one BPE token, and padding uses <|endoftext|>", async () => {
    const dir = await makeFolder("sd1", {
      "special_tokens_map.json": {
        bos_token: "<|startoftext|>",
        eos_token: "<|endoftext|>",
        pad_token: "<|endoftext|>",
        unk_token: "<|endoftext|>",
      },
      "tokenizer_config.json": { model_max_length: 77, tokenizer_class: "CLIPTokenizer", do_lower_case: true },
    });
    const sd1 = await ClipTokenizer.fromPretrained(dir);
    expect(sd1.padTokenId).toBe(vocab["<|endoftext|>"]);

    // The expectation comes from the BPE data: "!!!</w>" is a vocab entry, and some merge builds it.
    const merges = (await readFile(join(sdTokenizerDir, "merges.txt"), "utf8")).split("\n").slice(1);
    expect(merges.some((m) => m.split(" ").join("") === "!!!</w>")).toBe(true);
    expect(vocab["!!!</w>"]).toBeTypeOf("number");
    expect(sd1.tokenize("HORSE!!!")).toEqual(["horse</w>", "!!!</w>"]);
    const out = sd1.encodeIds(["HORSE!!!"]);
    expect(out.ids[0]!.slice(0, 4)).toEqual([sd1.bosTokenId, vocab["horse</w>"], vocab["!!!</w>"], sd1.eosTokenId]);
    expect(out.ids[0]!.slice(4)).toEqual(Array(77 - 4).fill(vocab["<|endoftext|>"])); // model_max_length 77 above
  });

  it("tiny-clip with padding 'longest' matches golden/clip_score input_ids and attention_mask", async () => {
    const clip = await ClipTokenizer.fromPretrained(fixture("tiny-clip"));
    const { captions } = await readJson<{ captions: string[] }>(fixture("golden", "clip_score.json"));
    const ref = await golden("clip_score");
    // CLIPProcessor(padding=True) = padding "longest", no truncation.
    const out = clip.encodeIds(captions, { padding: "longest", truncation: false });
    expect(out.ids).toEqual(rows(get(ref, "input_ids")));
    expect(out.attentionMask).toEqual(rows(get(ref, "attention_mask")));
    const tensors = clip.encodeWithMask(captions, { padding: "longest", truncation: false });
    expect(rows(tensors.ids)).toEqual(out.ids);
    expect(rows(tensors.attentionMask)).toEqual(out.attentionMask);
    tensors.ids.dispose();
    tensors.attentionMask.dispose();
  });
});

describe("tokenizer.json", () => {
  /** A tokenizers-library file built from the slow files, as CLIPTokenizerFast would save it. */
  async function tokenizerJson(pairMerges: boolean): Promise<unknown> {
    const merges = (await readFile(join(sdTokenizerDir, "merges.txt"), "utf8")).trim().split("\n").slice(1);
    const config = await readJson<{ added_tokens_decoder: Record<string, Record<string, unknown>> }>(
      join(sdTokenizerDir, "tokenizer_config.json"),
    );
    return {
      version: "1.0",
      added_tokens: Object.entries(config.added_tokens_decoder).map(([id, t]) => ({ id: Number(id), ...t })),
      model: {
        type: "BPE",
        unk_token: "<|endoftext|>",
        continuing_subword_prefix: "",
        end_of_word_suffix: "</w>",
        vocab,
        merges: pairMerges ? merges.map((m) => m.split(" ")) : merges,
      },
    };
  }

  it.each([
    ["'a b' merges", false],
    ["[a, b] merges", true],
  ])("gives the slow files' ids (%s)", async (name, pairs) => {
    const dir = await makeFolder(
      `fast-${pairs}`,
      {
        "tokenizer.json": await tokenizerJson(pairs),
        "tokenizer_config.json": await readFile(join(sdTokenizerDir, "tokenizer_config.json"), "utf8"),
        "special_tokens_map.json": await readFile(join(sdTokenizerDir, "special_tokens_map.json"), "utf8"),
      },
      [],
    );
    const fast = await ClipTokenizer.fromPretrained(dir);
    const prompts = reference.prompts.map((p) => p.prompt);
    expect(fast.encodeIds(prompts)).toEqual(sd2.encodeIds(prompts));
    expect(fast.padTokenId).toBe(sd2.padTokenId);
  });

  it("without tokenizer_config.json uses CLIPTokenizer's defaults (pad <|endoftext|>, 77)", async () => {
    const json = (await tokenizerJson(false)) as { added_tokens: { content: string }[] };
    // Only CLIPTokenizer's own specials: drop an SD-2 pad token such as "!".
    json.added_tokens = json.added_tokens.filter((t) => ["<|startoftext|>", "<|endoftext|>"].includes(t.content));
    const dir = await makeFolder("fast-bare", { "tokenizer.json": json }, []);
    const tok = await ClipTokenizer.fromPretrained(dir);
    expect(tok.padTokenId).toBe(vocab["<|endoftext|>"]);
    expect(tok.maxLength).toBe(77);
    expect(tok.tokenize("HORSE!!!")).toEqual(["horse</w>", "!!!</w>"]);
  });
});

describe("errors name the folder and file", () => {
  it("missing folder", async () => {
    await expect(ClipTokenizer.fromPretrained(join(tmp.path, "nope"))).rejects.toThrow(
      /nope: tokenizer folder not found/,
    );
  });

  it("missing vocab.json", async () => {
    const dir = await makeFolder("no-vocab", {}, ["merges.txt"]);
    await expect(ClipTokenizer.fromPretrained(dir)).rejects.toThrow(`${dir}: vocab.json missing`);
  });

  it("missing merges.txt", async () => {
    const dir = await makeFolder("no-merges", {}, ["vocab.json"]);
    await expect(ClipTokenizer.fromPretrained(dir)).rejects.toThrow(/no-merges: merges\.txt missing/);
  });

  it("malformed vocab.json", async () => {
    const dir = await makeFolder("bad-vocab", { "vocab.json": "{ not json" }, ["merges.txt"]);
    await expect(ClipTokenizer.fromPretrained(dir)).rejects.toThrow(/bad-vocab\/vocab\.json: not valid JSON/);
    await writeFile(join(dir, "vocab.json"), JSON.stringify({ a: "zero" }));
    await expect(ClipTokenizer.fromPretrained(dir)).rejects.toThrow(/bad-vocab\/vocab\.json: token "a" has id "zero"/);
  });

  it("malformed merges.txt", async () => {
    const dir = await makeFolder("bad-merges", { "merges.txt": "#version: 0.2\ni n\nt h e\n" }, ["vocab.json"]);
    await expect(ClipTokenizer.fromPretrained(dir)).rejects.toThrow(/bad-merges\/merges\.txt: line 3 .*two symbols/);
  });

  it("malformed tokenizer_config.json and tokenizer.json", async () => {
    const dir = await makeFolder("bad-config", { "tokenizer_config.json": "[1," });
    await expect(ClipTokenizer.fromPretrained(dir)).rejects.toThrow(
      /bad-config\/tokenizer_config\.json: not valid JSON/,
    );
    const fast = await makeFolder(
      "bad-fast",
      { "tokenizer.json": { model: { type: "BPE", vocab, merges: ["a b c"] } } },
      [],
    );
    await expect(ClipTokenizer.fromPretrained(fast)).rejects.toThrow(/bad-fast\/tokenizer\.json: model\.merges\[0\]/);
  });
});
