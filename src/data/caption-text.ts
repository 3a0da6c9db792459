// Caption transforms applied per example (dropout, tag shuffling) and the
// DreamBooth instance-token check.
import type { Rng } from "./rng.js";
import type { DataItem, DatasetIssue, DatasetSpec } from "./types.js";

export interface CaptionOptions {
  /** Probability of training an example with an empty caption (unconditional). */
  captionDropout?: number;
  /** Shuffle comma-separated tags, keeping the first keepTags in place (kohya shuffle_caption). */
  shuffleTags?: boolean;
  keepTags?: number;
  /** Tag separator (default ","). */
  tagSeparator?: string;
}

/**
 * The caption an example trains with. Draws from `rng` in a fixed order (dropout
 * first, then the shuffle) so the result depends only on the seed and position.
 */
export function processCaption(caption: string, options: CaptionOptions, rng: Rng): string {
  const dropout = options.captionDropout ?? 0;
  if (dropout > 0 && rng.float() < dropout) return "";
  if (!options.shuffleTags) return caption;
  const separator = options.tagSeparator ?? ",";
  const tags = caption
    .split(separator)
    .map((t) => t.trim())
    .filter((t) => t !== "");
  const keep = Math.max(0, options.keepTags ?? 0);
  const rest = tags.slice(keep);
  rng.shuffle(rest);
  return [...tags.slice(0, keep), ...rest].join(`${separator} `);
}

/** True when `token` appears in `text` as a whole word (case-sensitive: identifiers are). */
export function containsToken(text: string, token: string): boolean {
  const escaped = token.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  return new RegExp(`(^|[^\\p{L}\\p{N}_])${escaped}($|[^\\p{L}\\p{N}_])`, "u").test(text);
}

/**
 * DreamBooth checks: the instance prompt (or, without one, every instance
 * caption) must contain the instance token, and the class prompt must not.
 * Problems become warnings, or one error when tokenCheck is "error".
 */
export function checkInstanceToken(spec: DatasetSpec, items: readonly DataItem[]): DatasetIssue[] {
  const token = spec.instanceToken?.trim();
  if (!token || spec.tokenCheck === "off") return [];
  const issues: DatasetIssue[] = [];
  const warn = (file: string, reason: string): void => {
    issues.push({ file, code: "instance-token", reason, skipped: false });
  };
  if (spec.instancePrompt !== undefined && !containsToken(spec.instancePrompt, token)) {
    warn(
      "instancePrompt",
      `the instance prompt "${spec.instancePrompt}" does not contain the instance token "${token}"`,
    );
  }
  if (spec.classPrompt !== undefined && containsToken(spec.classPrompt, token)) {
    warn(
      "classPrompt",
      `the class prompt "${spec.classPrompt}" contains the instance token "${token}"; prior images would teach it`,
    );
  }
  // Items captioned with the instance prompt were covered by the prompt check above.
  const lacking = items.filter(
    (i) => i.role !== "class" && i.caption !== spec.instancePrompt && !containsToken(i.caption, token),
  );
  for (const item of lacking.slice(0, 20)) {
    warn(item.name, `the caption "${item.caption}" lacks the instance token "${token}"`);
  }
  if (lacking.length > 20) warn("captions", `${lacking.length - 20} more captions lack the instance token "${token}"`);
  return issues;
}
