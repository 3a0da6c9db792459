// A terminal progress bar with rate, ETA and live values (loss, ...). Draws only
// on a TTY (stderr); elsewhere it stays quiet apart from an optional final line.
// (Training's plain-line progress for logs is src/train/progress_view.ts.)
import { clearLine, cursorTo } from "node:readline";

import { formatBytes } from "./bytes.js";

export interface ProgressBarOptions {
  label: string;
  total: number;
  /** Unit for the rate ("it", "img", "B"). Bytes get human-readable sizes. */
  unit?: string;
  stream?: NodeJS.WriteStream;
  /** Force drawing (or not) regardless of TTY detection. */
  enabled?: boolean;
  /** Where counting starts (a resumed run): the rate and ETA count only what this bar saw. */
  initial?: number;
}

export class ProgressBar {
  private readonly stream: NodeJS.WriteStream;
  private readonly enabled: boolean;
  private readonly started = performance.now();
  private lastDraw = 0;
  private current = 0;
  private values: Record<string, number | string> = {};

  constructor(private readonly options: ProgressBarOptions) {
    this.stream = options.stream ?? process.stderr;
    this.enabled = options.enabled ?? Boolean(this.stream.isTTY);
  }

  update(current: number, values: Record<string, number | string> = {}): void {
    this.current = current;
    this.values = { ...this.values, ...values };
    const now = performance.now();
    if (!this.enabled || (now - this.lastDraw < 100 && current < this.options.total)) return;
    this.lastDraw = now;
    this.draw();
  }

  /** Ends the bar (a newline on a TTY). */
  done(message?: string): void {
    if (this.enabled) {
      this.draw();
      this.stream.write("\n");
    }
    if (message) this.stream.write(`${message}\n`);
  }

  private draw(): void {
    const { total, label } = this.options;
    const unit = this.options.unit ?? "it";
    const elapsed = (performance.now() - this.started) / 1000;
    const fraction = total > 0 ? Math.min(1, this.current / total) : 0;
    const rate = elapsed > 0 ? (this.current - (this.options.initial ?? 0)) / elapsed : 0;
    const eta = rate > 0 ? (total - this.current) / rate : Infinity;
    const width = 24;
    const filled = Math.round(fraction * width);
    const bar = "█".repeat(filled) + "░".repeat(width - filled);
    const extra = Object.entries(this.values)
      .map(([k, v]) => `${k} ${typeof v === "number" ? formatNumber(v) : v}`)
      .join("  ");
    const count = unit === "B" ? `${formatBytes(this.current)}/${formatBytes(total)}` : `${this.current}/${total}`;
    const speed = unit === "B" ? `${formatBytes(rate)}/s` : `${rate.toFixed(2)} ${unit}/s`;
    const line = `${label} ${bar} ${(fraction * 100).toFixed(0).padStart(3)}% ${count} ${speed} ETA ${formatDuration(eta)}${extra ? `  ${extra}` : ""}`;
    cursorTo(this.stream, 0);
    clearLine(this.stream, 1);
    this.stream.write(line.slice(0, Math.max(20, (this.stream.columns ?? 120) - 1)));
  }
}

export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds)) return "--:--";
  const s = Math.round(seconds);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = s % 60;
  return h > 0
    ? `${h}:${String(m).padStart(2, "0")}:${String(sec).padStart(2, "0")}`
    : `${m}:${String(sec).padStart(2, "0")}`;
}

/** A value for a progress display: 4 significant digits, exponents for the very large or small. */
export function formatNumber(v: number): string {
  if (v === 0) return "0";
  const abs = Math.abs(v);
  return abs >= 1e4 || abs < 1e-3 ? v.toExponential(2) : v.toPrecision(4);
}
