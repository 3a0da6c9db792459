// What `train` says about each stage's dataset before training: images kept, files
// skipped with their reasons, images without a caption (which train unconditionally),
// and DreamBooth prompts that cannot teach a new identifier. Printed as a notice and
// recorded as <run>/<stage>/dataset_report.json.
import type { StageConfig } from "../config/train.js";
import type { Dataset, DatasetIssue } from "../data/index.js";

export interface DatasetSummary {
  root: string;
  type: string;
  /** Usable images by role (train / instance / class). */
  kept: Record<string, number>;
  /** Every skipped file with its reason. */
  skipped: Pick<DatasetIssue, "file" | "code" | "reason">[];
  /** Training images (not class images) whose caption is empty. */
  captionless: number;
  /** Warnings: caption problems, DreamBooth prompt checks. */
  warnings: string[];
}

export function datasetSummary(dataset: Dataset, stage: StageConfig & { name: string }): DatasetSummary {
  const kept: Record<string, number> = {};
  for (const item of dataset.items) kept[item.role] = (kept[item.role] ?? 0) + 1;
  const captionless = dataset.items.filter((i) => i.role !== "class" && i.caption.trim() === "").length;
  const warnings = dataset.report.filter((i) => !i.skipped).map((i) => `${i.file}: ${i.reason}`);
  warnings.push(...promptWarnings(stage));
  return {
    root: dataset.root,
    type: dataset.type,
    kept,
    skipped: dataset.report.filter((i) => i.skipped).map(({ file, code, reason }) => ({ file, code, reason })),
    captionless,
    warnings,
  };
}

/** DreamBooth: an instance prompt with no word beyond the class prompt's names no new subject. */
function promptWarnings(stage: StageConfig): string[] {
  const instance = stage.instance_prompt?.trim();
  const cls = stage.prior_preservation?.class_prompt.trim();
  if (stage.method !== "dreambooth" || !instance || !cls) return [];
  if (instance.toLowerCase() === cls.toLowerCase()) {
    return [`the instance prompt equals the class prompt ("${instance}"): prior preservation would undo the training`];
  }
  const words = (s: string): string[] =>
    s
      .toLowerCase()
      .split(/[^\p{L}\p{N}]+/u)
      .filter(Boolean);
  const classWords = new Set(words(cls));
  if (words(instance).every((w) => classWords.has(w))) {
    return [
      `the instance prompt "${instance}" has no word that the class prompt "${cls}" lacks: ` +
        'add a rare identifier (e.g. "a photo of sks dog")',
    ];
  }
  return [];
}

/** A few lines for the terminal: counts, then up to `limit` skipped files and warnings. */
export function formatDatasetSummary(s: DatasetSummary, limit = 10): string {
  const kept = Object.entries(s.kept)
    .map(([role, n]) => `${n} ${role}`)
    .join(", ");
  const lines = [`dataset ${s.root} (${s.type}): ${kept} image${kept === "1 train" ? "" : "s"} kept`];
  if (s.skipped.length) {
    lines.push(`  skipped ${s.skipped.length} file${s.skipped.length === 1 ? "" : "s"}:`);
    for (const i of s.skipped.slice(0, limit)) lines.push(`    ${i.file}: ${i.reason}`);
    if (s.skipped.length > limit) lines.push(`    ... ${s.skipped.length - limit} more (see dataset_report.json)`);
  }
  if (s.captionless) {
    lines.push(
      `  ${s.captionless} image${s.captionless === 1 ? " has" : "s have"} no caption (trained unconditionally)`,
    );
  }
  for (const w of s.warnings.slice(0, limit)) lines.push(`  warning: ${w}`);
  return lines.join("\n");
}
