// Added (special) tokens are cut out of the raw text before any clean-up or BPE,
// as transformers' slow tokenizers do (PreTrainedTokenizer.tokenize: tokens_trie.split,
// then the AddedToken lstrip/rstrip/single_word adjustments). Matching is
// case-sensitive and leftmost-longest.
import { pyLstrip, pyRstrip } from "./clip_normalize.js";

export interface AddedToken {
  content: string;
  id: number;
  /** Special tokens (bos, eos, unk, pad, additional_special_tokens) are skipped by decode(..., {skipSpecialTokens}). */
  special: boolean;
  lstrip: boolean;
  rstrip: boolean;
  singleWord: boolean;
}

/** A piece of the input: plain text for the normal pipeline, or an added token. */
export type Piece = { text: string; token?: undefined } | { text: string; token: AddedToken };

export class AddedTokenSplitter {
  private readonly byContent: Map<string, AddedToken>;
  /** Contents grouped by first character, longest first (leftmost-longest matching). */
  private readonly byFirstChar = new Map<string, string[]>();

  constructor(tokens: Iterable<AddedToken>) {
    this.byContent = new Map([...tokens].filter((t) => t.content !== "").map((t) => [t.content, t]));
    for (const content of this.byContent.keys()) {
      const first = content[0]!;
      const list = this.byFirstChar.get(first) ?? [];
      list.push(content);
      this.byFirstChar.set(first, list);
    }
    for (const list of this.byFirstChar.values()) list.sort((a, b) => b.length - a.length);
  }

  get(content: string): AddedToken | undefined {
    return this.byContent.get(content);
  }

  split(text: string): Piece[] {
    const pieces: Piece[] = [];
    let plainStart = 0;
    for (let i = 0; i < text.length;) {
      const candidates = this.byFirstChar.get(text[i]!);
      const match = candidates?.find((c) => text.startsWith(c, i));
      if (!match) {
        i++;
        continue;
      }
      if (i > plainStart) pieces.push({ text: text.slice(plainStart, i) });
      pieces.push({ text: match, token: this.byContent.get(match)! });
      i += match.length;
      plainStart = i;
    }
    if (plainStart < text.length) pieces.push({ text: text.slice(plainStart) });
    return this.applyStripping(pieces);
  }

  /** AddedToken.rstrip eats whitespace after the token, lstrip before it; single_word glues to a neighbour word. */
  private applyStripping(pieces: Piece[]): Piece[] {
    for (let i = 0; i < pieces.length; i++) {
      const token = pieces[i]!.token;
      if (!token) continue;
      const left = pieces[i - 1];
      const right = pieces[i + 1];
      if (token.rstrip && right && !right.token) right.text = pyLstrip(right.text);
      if (token.lstrip && left && !left.token) left.text = pyRstrip(left.text);
      // single_word: a token touching a word is not a token there (it stays in the text).
      if (token.singleWord && left && !left.token && left.text && !left.text.endsWith(" ")) {
        left.text += token.content;
        pieces[i] = { text: "" };
      } else if (token.singleWord && right && !right.token && right.text && !right.text.startsWith(" ")) {
        right.text = token.content + right.text;
        pieces[i] = { text: "" };
      }
    }
    return pieces.filter((p) => p.text !== "");
  }
}
