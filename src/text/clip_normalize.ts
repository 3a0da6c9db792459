// Text clean-up and pre-tokenization exactly as transformers' slow CLIPTokenizer does
// it when ftfy is not installed (the default `pip install diffusers transformers`):
// BasicTokenizer(strip_accents=False, do_split_on_punc=False) then the CLIP regex.
//
// We follow the no-ftfy path on purpose: it is what a plain diffusers install runs,
// and ftfy's fix_text (mojibake repair, HTML unescaping, ...) is a large heuristic
// library with no faithful JS port. Prompts only differ between the two paths when
// they contain CJK ideographs, control/format characters or broken encodings.

/**
 * Python's str.isspace() set: what str.split() / str.strip() treat as whitespace
 * (bidi classes WS, B, S and category Zs). Differs from JS \s (e.g. \x1c-\x1f,
 * \x85 are in; \ufeff is out).
 */
export const PY_SPACE = "\\t\\n\\v\\f\\r\\x1c-\\x20\\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000";
const PY_SPACE_RUN = new RegExp(`[${PY_SPACE}]+`, "u");
const PY_LEADING_SPACE = new RegExp(`^[${PY_SPACE}]+`, "u");
const PY_TRAILING_SPACE = new RegExp(`[${PY_SPACE}]+$`, "u");

export const pyLstrip = (s: string): string => s.replace(PY_LEADING_SPACE, "");
export const pyRstrip = (s: string): string => s.replace(PY_TRAILING_SPACE, "");
export const pyStrip = (s: string): string => pyRstrip(pyLstrip(s));
/** Python's `s.split()` (no argument): split on whitespace runs, no empty pieces. */
export const pySplit = (s: string): string[] => {
  const stripped = pyStrip(s);
  return stripped ? stripped.split(PY_SPACE_RUN) : [];
};

// BasicTokenizer._is_control: any category C* (Cc, Cf, Cs, Co, Cn) except \t \n \r.
const CONTROL = /\p{C}/u;
// BasicTokenizer._is_whitespace: space, \t, \n, \r or category Zs.
const WHITESPACE = /[ \t\n\r\p{Zs}]/u;

/** BasicTokenizer._is_chinese_char: the CJK Unified Ideographs blocks (not kana, not hangul). */
function isCjkIdeograph(cp: number): boolean {
  return (
    (cp >= 0x4e00 && cp <= 0x9fff) ||
    (cp >= 0x3400 && cp <= 0x4dbf) ||
    (cp >= 0x20000 && cp <= 0x2a6df) ||
    (cp >= 0x2a700 && cp <= 0x2b73f) ||
    (cp >= 0x2b740 && cp <= 0x2b81f) ||
    (cp >= 0x2b820 && cp <= 0x2ceaf) ||
    (cp >= 0xf900 && cp <= 0xfaff) ||
    (cp >= 0x2f800 && cp <= 0x2fa1f)
  );
}

/**
 * BasicTokenizer.tokenize joined with single spaces, in its order: drop NUL, U+FFFD
 * and control/format characters, map whitespace to " ", put spaces around CJK
 * ideographs, NFC, split on whitespace, lowercase each word (Python's str.lower and
 * JS toLowerCase are both full Unicode case mapping), join with " ".
 */
export function basicClean(text: string): string {
  let out = "";
  for (const ch of text) {
    // for..of walks code points; a lone surrogate comes through as one unit (category Cs).
    const cp = ch.codePointAt(0)!;
    if (cp === 0 || cp === 0xfffd || (CONTROL.test(ch) && ch !== "\t" && ch !== "\n" && ch !== "\r")) continue;
    if (WHITESPACE.test(ch)) out += " ";
    else if (isCjkIdeograph(cp)) out += ` ${ch} `;
    else out += ch;
  }
  return pySplit(out.normalize("NFC"))
    .map((word) => word.toLowerCase())
    .join(" ");
}

/**
 * CLIPTokenizer's pattern (compiled with re.IGNORECASE in Python): the two special
 * strings, English contractions, letter runs, single digits, runs of anything else
 * that is not whitespace.
 */
const CLIP_PATTERN = /<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|\p{L}+|\p{N}|[^\s\p{L}\p{N}]+/giu;

/**
 * The CLIP regex's matches over cleaned text (re.findall). Compared code point by
 * code point (alone and between letters, apostrophes and punctuation) against
 * Python's `regex` module, the JS pattern agrees everywhere except U+0345
 * (combining ypogegrammeni, case-folding to the letter iota): under IGNORECASE
 * Python matches it with no alternative, so it separates words and disappears.
 * It becomes a space here for the same effect. (U+0085 and U+FEFF differ too, but
 * basicClean has already dropped them as control/format characters.)
 */
export function clipWords(cleaned: string): string[] {
  return cleaned.replace(/\u0345/g, " ").match(CLIP_PATTERN) ?? [];
}

/**
 * GPT-2/CLIP bytes_to_unicode: printable Latin-1 bytes map to themselves, the other
 * 68 bytes to U+0100.. in byte order, so every byte is one visible character.
 */
function buildByteTables(): { encoder: string[]; decoder: Map<string, number> } {
  const printable = (b: number): boolean =>
    (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
  const encoder: string[] = new Array<string>(256);
  let next = 0;
  for (let b = 0; b < 256; b++) encoder[b] = String.fromCodePoint(printable(b) ? b : 256 + next++);
  const decoder = new Map(encoder.map((ch, b) => [ch, b] as const));
  return { encoder, decoder };
}

export const BYTE_TABLES = buildByteTables();
const utf8 = new TextEncoder();

/** A word's UTF-8 bytes as byte-level characters (the alphabet of the BPE vocab). */
export function byteEncode(word: string): string {
  let out = "";
  for (const b of utf8.encode(word)) out += BYTE_TABLES.encoder[b]!;
  return out;
}
