// `sdtune dataset build|check`: make an HF imagefolder from pictures and captions; inspect any dataset.
import {
  buildImageFolder,
  checkDataset,
  formatBytes,
  DatasetError,
  type CheckReport,
  type DatasetIssue,
  type DatasetSpec,
  type ProgressEvent,
} from "../index.js";
import { interruptSignal, parseCommandArgs, UsageError, type Command } from "./command.js";

const help = [
  "usage: sdtune dataset build DIR [--captions FILE | --caption-ext .txt] [--out DIR] [--caption-column text] [--json]",
  "       sdtune dataset check PATH [options] [--json] [--strict]",
  "",
  "build   writes an HF imagefolder (metadata.jsonl with file_name and the caption column) from the",
  "        images in DIR and their captions: same-name sidecar files (--caption-ext, default .txt) or",
  "        one --captions file (.jsonl/.csv rows with file_name and the caption column, or a .json",
  "        {file: caption} object). Images are copied to --out (default: DIR gains metadata.jsonl).",
  "        Unreadable images are left out and listed.",
  "",
  "check   decodes every image once and reports counts, sizes, formats, the aspect-bucket histogram,",
  "        duplicate images (same content hash), empty captions, and every skipped file with the reason.",
  "  --type auto|imagefolder|parquet|captions|dreambooth   reader (default auto)",
  "  --split NAME            imagefolder/parquet split (default train)",
  "  --caption-column NAME   caption column (default text)",
  "  --image-column NAME     parquet image column (default: the Image feature, else image)",
  "  --caption-ext EXT       caption sidecar extension (default .txt)",
  "  --instance-prompt P --instance-token T --class-dir DIR --class-prompt P   dreambooth",
  "  --resolution N          bucket area N² (default 512); --min-side, --max-side, --step (256, 1024, 64)",
  "  --max-pixels N          refuse larger images (default 178956970)",
  "  --strict                exit 1 when anything was skipped or warned about",
].join("\n");

export const command: Command = {
  help,
  async run(argv) {
    const [sub, ...rest] = argv;
    if (sub === "build") return build(rest);
    if (sub === "check") return check(rest);
    throw new UsageError(sub ? `unknown subcommand "${sub}"` : "missing subcommand: build or check");
  },
};

function progressPrinter(json: boolean): ((event: ProgressEvent) => void) | undefined {
  if (json || !process.stderr.isTTY) return undefined;
  return (event) => {
    process.stderr.write(`\r${event.phase} ${event.step}/${event.total}`);
    if (event.step === event.total) process.stderr.write("\n");
  };
}

const int = (value: unknown, name: string): number | undefined => {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isInteger(n) || n <= 0)
    throw new UsageError(`--${name} must be a positive integer, got "${String(value)}"`);
  return n;
};

async function build(argv: string[]): Promise<number> {
  const { values, positionals } = parseCommandArgs(argv, {
    captions: { type: "string" },
    "caption-ext": { type: "string" },
    "caption-column": { type: "string" },
    out: { type: "string" },
    json: { type: "boolean" },
  });
  if (positionals.length !== 1) throw new UsageError("build takes one folder");
  if (values.captions !== undefined && values["caption-ext"] !== undefined) {
    throw new UsageError("use either --captions FILE or --caption-ext, not both");
  }
  const json = Boolean(values.json);
  const interrupt = interruptSignal();
  try {
    const result = await buildImageFolder(positionals[0]!, {
      captionsFile: values.captions as string | undefined,
      captionExt: values["caption-ext"] as string | undefined,
      captionColumn: values["caption-column"] as string | undefined,
      out: values.out as string | undefined,
      onProgress: progressPrinter(json),
      signal: interrupt.signal,
    });
    if (json) console.log(JSON.stringify(result, null, 2));
    else {
      console.log(
        `wrote ${result.metadataPath} (${result.images} images${result.copied ? `, ${result.copied} copied` : ""})`,
      );
      printIssues(result.issues);
    }
    return 0;
  } catch (error) {
    return reportDatasetError(error, json);
  } finally {
    interrupt.dispose();
  }
}

async function check(argv: string[]): Promise<number> {
  const { values, positionals } = parseCommandArgs(argv, {
    type: { type: "string" },
    split: { type: "string" },
    "caption-column": { type: "string" },
    "image-column": { type: "string" },
    "caption-ext": { type: "string" },
    "instance-prompt": { type: "string" },
    "instance-token": { type: "string" },
    "class-dir": { type: "string" },
    "class-prompt": { type: "string" },
    resolution: { type: "string" },
    "min-side": { type: "string" },
    "max-side": { type: "string" },
    step: { type: "string" },
    "max-pixels": { type: "string" },
    strict: { type: "boolean" },
    json: { type: "boolean" },
  });
  if (positionals.length !== 1) throw new UsageError("check takes one dataset path");
  const type = (values.type as string | undefined) ?? "auto";
  if (!["auto", "imagefolder", "parquet", "captions", "dreambooth"].includes(type)) {
    throw new UsageError(`--type must be auto, imagefolder, parquet, captions or dreambooth, got "${type}"`);
  }
  const spec: DatasetSpec = {
    path: positionals[0]!,
    type: type as DatasetSpec["type"],
    split: values.split as string | undefined,
    captionColumn: values["caption-column"] as string | undefined,
    imageColumn: values["image-column"] as string | undefined,
    captionExt: values["caption-ext"] as string | undefined,
    instancePrompt: values["instance-prompt"] as string | undefined,
    instanceToken: values["instance-token"] as string | undefined,
    classDir: values["class-dir"] as string | undefined,
    classPrompt: values["class-prompt"] as string | undefined,
    maxPixels: int(values["max-pixels"], "max-pixels"),
  };
  const json = Boolean(values.json);
  const interrupt = interruptSignal();
  try {
    const report = await checkDataset(spec, {
      resolution: int(values.resolution, "resolution"),
      buckets: {
        minSide: int(values["min-side"], "min-side"),
        maxSide: int(values["max-side"], "max-side"),
        step: int(values.step, "step"),
      },
      onProgress: progressPrinter(json),
      signal: interrupt.signal,
    });
    if (json) console.log(JSON.stringify(report, null, 2));
    else printCheck(report);
    return values.strict && report.issues.length > 0 ? 1 : 0;
  } catch (error) {
    if (error instanceof RangeError) throw new UsageError(error.message);
    return reportDatasetError(error, json);
  } finally {
    interrupt.dispose();
  }
}

/** A DatasetError prints its message and report and exits 1; anything else goes to main's handler. */
function reportDatasetError(error: unknown, json: boolean): number {
  if (!(error instanceof DatasetError)) throw error;
  if (json) console.log(JSON.stringify({ error: error.message, issues: error.report }, null, 2));
  else {
    console.error(`sdtune dataset: error: ${error.message}`);
    printIssues(error.report, console.error);
  }
  return 1;
}

function printIssues(issues: DatasetIssue[], print: (line: string) => void = console.log): void {
  const shown = issues.slice(0, 50);
  for (const i of shown) print(`  ${i.skipped ? "skipped" : "warning"}  ${i.file}: ${i.code}: ${i.reason}`);
  if (issues.length > shown.length) print(`  ... ${issues.length - shown.length} more (use --json for all)`);
}

function printCheck(r: CheckReport): void {
  const fmt = (x: number): string => (Number.isInteger(x) ? String(x) : x.toFixed(2));
  const range = (x: { min: number; median: number; max: number }): string =>
    `${fmt(x.min)}..${fmt(x.max)} (median ${fmt(x.median)})`;
  const where = [r.type, r.split ? `split ${r.split}` : "", r.splits.length ? `splits: ${r.splits.join(", ")}` : ""];
  console.log(`dataset     ${r.path} (${where.filter(Boolean).join("; ")})`);
  console.log(
    `images      ${r.images} (${r.examples} examples per epoch${r.classImages ? `, ${r.classImages} class images` : ""}), ` +
      `${formatBytes(r.totalBytes)}, ${Object.entries(r.formats)
        .map(([f, n]) => `${f} ${n}`)
        .join(", ")}`,
  );
  if (r.classImagesNeeded) console.log(`class       ${r.classImagesNeeded} class images still to generate`);
  console.log(`width       ${range(r.width)}`);
  console.log(`height      ${range(r.height)}`);
  console.log(`megapixels  ${range(r.megapixels)}`);
  const b = r.buckets;
  console.log(`buckets     area ${Math.round(Math.sqrt(b.area))}², sides ${b.minSide}..${b.maxSide} step ${b.step}`);
  const most = Math.max(...b.histogram.map((s) => s.examples));
  for (const s of b.histogram) {
    const bar = "#".repeat(Math.max(1, Math.round((30 * s.examples) / most)));
    console.log(`  ${`${s.width}x${s.height}`.padEnd(10)} ${bar} ${s.examples}`);
  }
  console.log(`duplicates  ${r.duplicates.length ? "" : "none"}`);
  for (const d of r.duplicates) console.log(`  ${d.files.join(" = ")}`);
  console.log(`captions    ${r.emptyCaptions} empty`);
  console.log(`issues      ${r.skipped} skipped, ${r.warnings} warnings`);
  printIssues(r.issues);
}
