// What a training run shows while it runs, the one home for the rule: a progress bar on a
// terminal, plain lines elsewhere (Colab, nohup, docker logs, Slurm: a log file keeps every
// line, so a bar's carriage returns would be noise), or nothing.
import { formatDuration, formatNumber, ProgressBar } from "../io/progress_bar.js";
import { formatBytes } from "../io/bytes.js";
import type { TrainProgress } from "./run.js";
import type { StageProgress } from "./stage.js";

export const PROGRESS_MODES = ["auto", "bar", "plain", "none"] as const;
/** auto: a bar when the stream is a terminal, plain lines otherwise. */
export type ProgressMode = (typeof PROGRESS_MODES)[number];

/** How often plain lines are printed (besides at each phase's start and end). */
export const PLAIN_INTERVAL_SECONDS = 10;

export interface ProgressViewOptions {
  mode: ProgressMode;
  /** Default: process.stderr. */
  stream?: NodeJS.WritableStream & { isTTY?: boolean };
  /** Seconds between plain lines (default PLAIN_INTERVAL_SECONDS). */
  intervalSeconds?: number;
  /** The clock in milliseconds (default performance.now). */
  now?: () => number;
}

export function resolveProgressMode(mode: ProgressMode, stream: { isTTY?: boolean }): "bar" | "plain" | "none" {
  return mode === "auto" ? (stream.isTTY ? "bar" : "plain") : mode;
}

const PHASES: Record<string, string> = {
  train: "training",
  "class-images": "class images",
  cache: "caching latents",
  evaluate: "evaluation",
};

/** Shows a run's progress events (TrainOptions.onProgress) as the mode asks. */
export class TrainProgressView {
  private readonly mode: "bar" | "plain" | "none";
  private readonly stream: NodeJS.WritableStream & { isTTY?: boolean };
  private readonly now: () => number;
  private readonly interval: number;
  private bar: ProgressBar | undefined;
  private key = "";
  private downloading = "";
  /** Plain mode: when the phase started (and at which step), when a line was last printed. */
  private started = { at: 0, step: 0 };
  private lastLine = -Infinity;

  constructor(options: ProgressViewOptions) {
    this.stream = options.stream ?? process.stderr;
    this.mode = resolveProgressMode(options.mode, this.stream);
    this.now = options.now ?? (() => performance.now());
    this.interval = (options.intervalSeconds ?? PLAIN_INTERVAL_SECONDS) * 1000;
  }

  show(event: TrainProgress): void {
    if (this.mode === "none") return;
    const stage = event.stage ? `${event.stage}: ` : "";
    if (event.phase === "notice") {
      // Damaged checkpoints passed over, the dataset report...: on their own lines, between bars.
      this.done();
      this.line(`${stage}${String(event.message)}`);
      return;
    }
    if (event.phase === "download") return this.download(event as { file?: string; fileBytes?: number });
    if (event.phase === "validation" && this.mode === "plain") {
      this.line(`${stage}validation samples at step ${String(event.step)}`);
      return;
    }
    const e = event as StageProgress;
    const phase = PHASES[e.phase];
    if (!phase || typeof e.step !== "number" || typeof e.total !== "number") return;
    this.endDownload();
    const key = `${e.stage} ${phase}`;
    if (key !== this.key) this.start(key, e);
    if (this.mode === "bar") {
      this.bar!.update(e.step, e.loss === undefined ? {} : { loss: e.loss, lr: e.lr ?? 0 });
    } else if (e.step >= e.total || this.now() - this.lastLine >= this.interval) {
      this.plainLine(e, phase);
    }
  }

  /** Ends the current bar (a newline on a terminal). */
  done(): void {
    this.bar?.done();
    this.bar = undefined;
    this.key = "";
  }

  private start(key: string, e: StageProgress): void {
    this.done();
    this.key = key;
    this.started = { at: this.now(), step: e.step };
    this.lastLine = -Infinity;
    if (this.mode === "bar") {
      const unit = e.phase === "train" ? "step" : "img";
      this.bar = new ProgressBar({
        label: key,
        total: e.total,
        unit,
        initial: e.phase === "train" ? e.step : 0,
        stream: this.stream as NodeJS.WriteStream,
        enabled: true,
      });
    }
  }

  /** "train: training step 120/1000 (12%) epoch 1 loss 0.1234 lr 1.000e-4 1.52 step/s elapsed 1:19 ETA 9:40" */
  private plainLine(e: StageProgress, phase: string): void {
    this.lastLine = this.now();
    const elapsed = (this.lastLine - this.started.at) / 1000;
    const done = e.step - this.started.step;
    const rate = elapsed > 0 && done > 0 ? done / elapsed : undefined;
    const unit = e.phase === "train" ? "step" : "img";
    const percent = e.total > 0 ? Math.floor((100 * e.step) / e.total) : 100;
    const parts = [`${e.stage}: ${phase} ${unit} ${e.step}/${e.total} (${percent}%)`];
    if (typeof e.epoch === "number") parts.push(`epoch ${e.epoch + 1}`);
    if (typeof e.loss === "number") parts.push(`loss ${formatNumber(e.loss)}`);
    if (typeof e.lr === "number") parts.push(`lr ${e.lr.toExponential(3)}`);
    if (rate !== undefined) parts.push(`${formatNumber(rate)} ${unit}/s`);
    parts.push(`elapsed ${formatDuration(elapsed)}`);
    if (e.step < e.total) parts.push(`ETA ${formatDuration(rate ? (e.total - e.step) / rate : Infinity)}`);
    this.line(parts.join(" "));
  }

  private download(e: { file?: string; fileBytes?: number }): void {
    if (!e.file) return;
    if (this.mode === "bar" && this.stream.isTTY) {
      this.stream.write(`\rdownloading ${e.file} ${formatBytes(e.fileBytes ?? 0)}   `);
      this.downloading = e.file;
    } else if (this.mode === "plain" && e.file !== this.downloading) {
      this.line(`downloading ${e.file}`);
      this.downloading = e.file;
    }
  }

  private endDownload(): void {
    if (this.downloading && this.mode === "bar") this.stream.write("\n");
    this.downloading = "";
  }

  private line(text: string): void {
    this.stream.write(`${text}\n`);
  }
}

/** The options of train() a progress view reads. */
interface ViewedOptions {
  progress?: ProgressMode;
  progressInterval?: number;
  onProgress?: (event: TrainProgress) => void;
}

/** Runs `fn` with the progress view `options.progress` asks for fed its events. */
export async function withProgressView<T, O extends ViewedOptions>(
  options: O,
  fn: (options: O) => Promise<T>,
): Promise<T> {
  const view = progressView(options);
  if (!view) return fn(options);
  const onProgress = options.onProgress;
  try {
    return await fn({
      ...options,
      onProgress: (event) => {
        view.show(event);
        onProgress?.(event);
      },
    });
  } finally {
    view.done();
  }
}
/** The view `progress` asks for; a bad mode or interval is refused before anything runs. */
function progressView(options: ViewedOptions): TrainProgressView | undefined {
  const { progress, progressInterval } = options;
  if (progress !== undefined && !PROGRESS_MODES.includes(progress)) {
    throw new Error(`progress: "${String(progress)}" is not one of ${PROGRESS_MODES.join(", ")}`);
  }
  if (progressInterval !== undefined && !(Number.isFinite(progressInterval) && progressInterval > 0)) {
    throw new Error(`progressInterval: expected a positive number of seconds, got ${String(progressInterval)}`);
  }
  if (!progress || progress === "none") return undefined;
  return new TrainProgressView({ mode: progress, intervalSeconds: progressInterval });
}
