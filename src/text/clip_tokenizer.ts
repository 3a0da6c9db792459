// The CLIP BPE tokenizer of Stable Diffusion pipelines, id-for-id with transformers'
// slow CLIPTokenizer (what diffusers loads), without ftfy (see clip_normalize.ts).
//
// Why not @huggingface/tokenizers end to end: its Tokenizer runs a tokenizer.json
// pipeline (NFC + whitespace + lowercase normalizer, CLIP regex split), which is the
// *fast* tokenizer's behaviour. The slow tokenizer differs: it puts spaces around CJK
// ideographs ("東京" -> "東 京", two words), drops control and format characters, and
// with SD-2 tokenizers cuts the pad token "!" out of the raw text as a special token.
// Run on golden/prompts.json with a CLIP tokenizer.json it matched 9 of 10 prompts
// (the CJK prompt differs). So we use the library only for what it gets right, the
// BPE merge loop over the vocab/merges (its `BPE` model), and write the rest here.
import * as hfTokenizers from "@huggingface/tokenizers";

import type { Tensor } from "../native/index.js";
import { tensorFrom } from "../tensor.js";
import { AddedTokenSplitter, type AddedToken } from "./added_tokens.js";
import { basicClean, BYTE_TABLES, byteEncode, clipWords, pyStrip } from "./clip_normalize.js";
import { readTokenizerFolder, type TokenizerSpec } from "./tokenizer_files.js";

export interface EncodeOptions {
  /**
   * "max_length" (default, what the SD pipeline uses): every row padded to maxLength;
   * "longest": rows padded to the longest row (CLIP score); false: no padding.
   */
  padding?: "max_length" | "longest" | false;
  /** Defaults to the tokenizer's model_max_length (77). */
  maxLength?: number;
  /** Drop content tokens past maxLength (BOS and EOS are kept). Default true. */
  truncation?: boolean;
}

export interface EncodedBatch {
  /** BOS + content + EOS (+ padding) per prompt. */
  ids: number[][];
  /** 1 for BOS/content/EOS, 0 for padding. */
  attentionMask: number[][];
  /** len(BOS + content + EOS) before truncation. */
  untruncatedLengths: number[];
  /** The BPE tokens truncation dropped, per prompt (empty when none). */
  truncated: string[][];
  /** The dropped part decoded, per prompt ("" when none): what diffusers prints in its warning. */
  truncatedText: string[];
}

export interface DecodeOptions {
  /** Leave out bos/eos/pad/unk and other special tokens. Default false. */
  skipSpecialTokens?: boolean;
  /** transformers' clean_up_tokenization (" ," -> "," ...). Default: the folder's setting (true). */
  cleanUpTokenizationSpaces?: boolean;
}

/**
 * The part of @huggingface/tokenizers' BPE model we use. Its published .d.ts files
 * re-export with extensionless paths, which TypeScript's NodeNext resolution cannot
 * follow, so the class is typed here (runtime: the package's ESM build).
 */
interface BpeModel {
  /** Merges one byte-level word (end-of-word suffix appended to its last symbol) into tokens. */
  bpe(word: string): string[];
  tokens_to_ids: Map<string, number>;
  /** id -> token. */
  vocab: string[];
}
const BPE = (hfTokenizers as unknown as { BPE: new (config: Record<string, unknown>) => BpeModel }).BPE;

interface Word {
  tokens: string[];
  ids: number[];
}

/** Entries kept in the per-word cache before it is cleared (bounds memory on huge caption sets). */
const WORD_CACHE_LIMIT = 200_000;

export class ClipTokenizer {
  readonly maxLength: number;
  readonly padTokenId: number;
  readonly bosTokenId: number;
  readonly eosTokenId: number;
  readonly unkTokenId: number;
  /** Where the files came from. */
  readonly dir: string;

  private readonly bpe: BpeModel;
  private readonly added: AddedTokenSplitter;
  private readonly addedById = new Map<number, AddedToken>();
  private readonly specialIds = new Set<number>();
  private readonly cleanUpSpaces: boolean;
  private readonly words = new Map<string, Word>();

  /** Reads a tokenizer folder (or a diffusers pipeline folder with tokenizer/ inside). */
  static async fromPretrained(dir: string): Promise<ClipTokenizer> {
    return new ClipTokenizer(await readTokenizerFolder(dir));
  }

  constructor(spec: TokenizerSpec) {
    this.dir = spec.dir;
    this.bpe = new BPE({
      type: "BPE",
      vocab: spec.vocab,
      merges: spec.merges,
      end_of_word_suffix: "</w>",
      unk_token: spec.unkToken,
      ignore_merges: false,
    });
    this.added = new AddedTokenSplitter(spec.addedTokens);
    for (const token of spec.addedTokens) {
      this.addedById.set(token.id, token);
      if (token.special) this.specialIds.add(token.id);
    }
    this.cleanUpSpaces = spec.cleanUpTokenizationSpaces;
    this.maxLength = spec.maxLength;
    // Every special token is an added token with an id (tokenizer_files.ts), so these resolve.
    const specialId = (content: string): number => this.added.get(content)!.id;
    this.bosTokenId = specialId(spec.bosToken);
    this.eosTokenId = specialId(spec.eosToken);
    this.unkTokenId = specialId(spec.unkToken);
    this.padTokenId = specialId(spec.padToken);
    // The slow tokenizer's BPE cache starts with these two, so they never get "</w>"
    // (reachable when a prompt spells them in another case: "<|ENDOFTEXT|>").
    for (const special of ["<|startoftext|>", "<|endoftext|>"]) {
      this.words.set(special, { tokens: [special], ids: [this.tokenId(special)] });
    }
  }

  /** Vocabulary entries plus added tokens (len(tokenizer) in transformers). */
  get vocabSize(): number {
    let extra = 0;
    for (const t of this.addedById.values()) if (!this.bpe.tokens_to_ids.has(t.content)) extra++;
    return this.bpe.tokens_to_ids.size + extra;
  }

  /** BPE tokens of one prompt, without BOS/EOS (added tokens appear as their text). */
  tokenize(text: string): string[] {
    return this.content(text).tokens;
  }

  /** Id of a token string: added tokens first, then the vocab, else the unk id. */
  tokenId(token: string): number {
    return this.added.get(token)?.id ?? this.bpe.tokens_to_ids.get(token) ?? this.unkTokenId;
  }

  /** What `tokenizer(prompts, padding=..., max_length=..., truncation=...)` returns, as plain arrays. */
  encodeIds(prompts: string | readonly string[], options: EncodeOptions = {}): EncodedBatch {
    const list = typeof prompts === "string" ? [prompts] : prompts;
    const padding = options.padding ?? "max_length";
    const truncation = options.truncation ?? true;
    const maxLength = options.maxLength ?? this.maxLength;
    if (!Number.isInteger(maxLength) || maxLength < 2) {
      throw new RangeError(`ClipTokenizer.encodeIds: maxLength must be an integer >= 2 (BOS + EOS), got ${maxLength}`);
    }
    if (padding !== "max_length" && padding !== "longest" && padding !== false) {
      throw new RangeError(
        `ClipTokenizer.encodeIds: padding must be "max_length", "longest" or false, got ${String(padding)}`,
      );
    }

    const out: EncodedBatch = { ids: [], attentionMask: [], untruncatedLengths: [], truncated: [], truncatedText: [] };
    for (const prompt of list) {
      if (typeof prompt !== "string")
        throw new TypeError(`ClipTokenizer.encodeIds: prompts must be strings, got ${typeof prompt}`);
      const { tokens, ids } = this.content(prompt);
      const room = maxLength - 2;
      const keep = truncation && ids.length > room ? room : ids.length;
      out.ids.push([this.bosTokenId, ...ids.slice(0, keep), this.eosTokenId]);
      out.untruncatedLengths.push(ids.length + 2);
      out.truncated.push(tokens.slice(keep));
      out.truncatedText.push(keep < ids.length ? this.decode(ids.slice(keep)) : "");
    }
    const target =
      padding === "max_length" ? maxLength : padding === "longest" ? Math.max(0, ...out.ids.map((r) => r.length)) : 0;
    for (const row of out.ids) {
      const real = row.length;
      while (row.length < target) row.push(this.padTokenId);
      out.attentionMask.push(row.map((_, i) => (i < real ? 1 : 0)));
    }
    return out;
  }

  /** encodeIds(...).ids as an int64 tensor [n, L] (rows must have one length: use padding). */
  encode(prompts: string | readonly string[], options?: EncodeOptions): Tensor {
    return this.encodeWithMask(prompts, options).ids;
  }

  /** Ids and attention mask as int64 tensors [n, L] (the mask is what CLIP score feeds the text model). */
  encodeWithMask(prompts: string | readonly string[], options?: EncodeOptions): { ids: Tensor; attentionMask: Tensor } {
    const batch = this.encodeIds(prompts, options);
    const width = batch.ids[0]?.length ?? 0;
    if (batch.ids.some((r) => r.length !== width)) {
      throw new RangeError(
        `ClipTokenizer.encode: rows have different lengths (${batch.ids.map((r) => r.length).join(", ")}); ` +
          'use padding "max_length" or "longest" (and truncation) to get a rectangular tensor',
      );
    }
    const toTensor = (rows: number[][]): Tensor =>
      tensorFrom(
        BigInt64Array.from(rows.flat(), (v) => BigInt(v)),
        [rows.length, width],
      );
    return { ids: toTensor(batch.ids), attentionMask: toTensor(batch.attentionMask) };
  }

  /** Ids back to text, as CLIPTokenizer.decode: "</w>" becomes a space, bytes are UTF-8 decoded. */
  decode(ids: Iterable<number | bigint>, options: DecodeOptions = {}): string {
    const vocab = this.bpe.vocab;
    const parts: string[] = [];
    let run: string[] = [];
    const flush = (last: boolean): void => {
      const text = run.length ? tokensToString(run) : "";
      if (run.length && (text || last)) parts.push(text);
      run = [];
    };
    for (const value of ids) {
      const id = Number(value);
      if (options.skipSpecialTokens && this.specialIds.has(id)) continue;
      const added = this.addedById.get(id);
      const token = added?.content ?? vocab[id];
      if (token === undefined)
        throw new RangeError(`ClipTokenizer.decode: id ${String(value)} is not in the vocabulary`);
      // Added tokens that are not special are kept verbatim between byte-decoded runs.
      if (added && !added.special) {
        flush(false);
        parts.push(token);
      } else run.push(token);
    }
    flush(true);
    const text = parts.join(" ");
    return (options.cleanUpTokenizationSpaces ?? this.cleanUpSpaces) ? cleanUpTokenization(text) : text;
  }

  /** Content tokens of one prompt: added tokens cut out of the raw text, the rest cleaned, split and BPE'd. */
  private content(text: string): Word {
    const tokens: string[] = [];
    const ids: number[] = [];
    for (const piece of this.added.split(text)) {
      if (piece.token) {
        tokens.push(piece.token.content);
        ids.push(piece.token.id);
        continue;
      }
      for (const raw of clipWords(basicClean(piece.text))) {
        const word = this.word(raw);
        tokens.push(...word.tokens);
        ids.push(...word.ids);
      }
    }
    return { tokens, ids };
  }

  private word(raw: string): Word {
    let word = this.words.get(raw);
    if (!word) {
      const tokens = this.bpe.bpe(byteEncode(raw));
      word = { tokens, ids: tokens.map((t) => this.tokenId(t)) };
      if (this.words.size >= WORD_CACHE_LIMIT) this.words.clear();
      this.words.set(raw, word);
    }
    return word;
  }
}

const utf8Decoder = new TextDecoder("utf-8", { ignoreBOM: true }); // invalid bytes -> U+FFFD, like errors="replace"
const utf8Encoder = new TextEncoder();

/** CLIPTokenizer.convert_tokens_to_string. */
function tokensToString(tokens: string[]): string {
  const bytes: number[] = [];
  for (const ch of tokens.join("")) {
    const b = BYTE_TABLES.decoder.get(ch);
    if (b !== undefined) bytes.push(b);
    else bytes.push(...utf8Encoder.encode(ch)); // an added token's character outside the byte alphabet
  }
  return pyStrip(utf8Decoder.decode(new Uint8Array(bytes)).replaceAll("</w>", " "));
}

/** transformers' clean_up_tokenization. */
function cleanUpTokenization(text: string): string {
  return text
    .replaceAll(" .", ".")
    .replaceAll(" ?", "?")
    .replaceAll(" !", "!")
    .replaceAll(" ,", ",")
    .replaceAll(" ' ", "'")
    .replaceAll(" n't", "n't")
    .replaceAll(" 'm", "'m")
    .replaceAll(" 's", "'s")
    .replaceAll(" 've", "'ve")
    .replaceAll(" 're", "'re");
}
