// Report charts as Vega specs rendered headless to SVG (no canvas, no browser): training
// loss and learning rate over steps, and each metric per variant with its spread over seeds.
import * as vega from "vega";

import type { RunCurve } from "./runs.js";
import type { Stat } from "./results.js";

/** Points per run drawn at most (every k-th step beyond that; the last point always). */
const MAX_POINTS = 2000;

/** Renders a Vega spec to an SVG string. */
export async function renderSvg(spec: vega.Spec): Promise<string> {
  const view = new vega.View(vega.parse(spec), { renderer: "none" });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}

function thin<T>(points: readonly T[]): T[] {
  if (points.length <= MAX_POINTS) return [...points];
  const stride = Math.ceil(points.length / MAX_POINTS);
  const out = points.filter((_, i) => i % stride === 0);
  if (out.at(-1) !== points.at(-1)) out.push(points.at(-1)!);
  return out;
}

const base = (title: string): Partial<vega.Spec> => ({
  $schema: "https://vega.github.io/schema/vega/v6.json",
  width: 560,
  height: 220,
  padding: 8,
  title: { text: title, anchor: "start", fontSize: 14 },
  config: { axis: { labelFont: "sans-serif", titleFont: "sans-serif" }, legend: { labelFont: "sans-serif" } },
});

/**
 * Lines per run over step: the raw values faint, a trailing moving average on top. The
 * learning rate is drawn on a log axis (1e-4 beside 1e-3 is not a flat line there); zeros,
 * which a log axis cannot show (warmup from 0), are left out.
 */
function curveSpec(curves: readonly RunCurve[], field: "loss" | "lr", title: string, smooth: number): vega.Spec {
  const log = field === "lr";
  const values = curves.flatMap((c) =>
    thin(c.points.filter((p) => p[field] !== null && (!log || p[field]! > 0))).map((p) => ({
      run: c.name,
      step: p.step,
      value: p[field],
    })),
  );
  const line = (data: string, y: string, opacity: number, width: number): vega.Mark => ({
    type: "group",
    from: { facet: { name: `${data}-by-run`, data, groupby: "run" } },
    marks: [
      {
        type: "line",
        from: { data: `${data}-by-run` },
        encode: {
          enter: {
            x: { scale: "x", field: "step" },
            y: { scale: "y", field: y },
            stroke: { scale: "color", field: "run" },
            strokeOpacity: { value: opacity },
            strokeWidth: { value: width },
          },
        },
      },
    ],
  });
  return {
    ...base(title),
    data: [
      { name: "points", values },
      {
        name: "smoothed",
        source: "points",
        transform: [
          {
            type: "window",
            groupby: ["run"],
            sort: { field: "step" },
            ops: ["mean"],
            fields: ["value"],
            as: ["avg"],
            frame: [-(smooth - 1), 0],
          },
        ],
      },
    ],
    scales: [
      { name: "x", type: "linear", domain: { data: "points", field: "step" }, range: "width", nice: true },
      {
        name: "y",
        type: log ? "log" : "linear",
        domain: { data: "points", field: "value" },
        range: "height",
        zero: false,
        nice: true,
      },
      { name: "color", type: "ordinal", domain: { data: "points", field: "run" }, range: "category" },
    ],
    axes: [
      { orient: "bottom", scale: "x", title: "step" },
      {
        orient: "left",
        scale: "y",
        title: field === "lr" ? "learning rate" : "loss",
        format: field === "lr" ? "~e" : "",
      },
    ],
    legends: [{ stroke: "color", title: "run", orient: "right" }],
    marks:
      smooth > 1
        ? [line("points", "value", 0.25, 1), line("smoothed", "avg", 1, 2)]
        : [line("points", "value", 1, 1.5)],
  } as vega.Spec;
}

/** Training loss (raw + moving average) and, when logged, the learning rate. */
export async function trainingCharts(curves: readonly RunCurve[]): Promise<{ loss?: string; lr?: string }> {
  const withPoints = curves.filter((c) => c.points.length > 0);
  if (withPoints.length === 0) return {};
  const longest = Math.max(...withPoints.map((c) => c.points.length));
  const smooth = Math.max(1, Math.min(50, Math.round(longest / 20)));
  const out: { loss?: string; lr?: string } = {
    loss: await renderSvg(
      curveSpec(withPoints, "loss", `Training loss${smooth > 1 ? ` (moving average of ${smooth})` : ""}`, smooth),
    ),
  };
  const withLr = withPoints.filter((c) => c.points.some((p) => p.lr !== null && p.lr > 0));
  if (withLr.length > 0) out.lr = await renderSvg(curveSpec(withLr, "lr", "Learning rate (log scale)", 1));
  return out;
}

/** One metric per variant: a bar at the mean over seeds with a ±std whisker. */
export async function metricChart(
  title: string,
  axisTitle: string,
  rows: { variant: string; stat: Stat }[],
): Promise<string> {
  const values = rows.map((r) => ({
    variant: r.variant,
    mean: r.stat.mean,
    lo: r.stat.mean - (r.stat.std ?? 0),
    hi: r.stat.mean + (r.stat.std ?? 0),
  }));
  const spec = {
    ...base(title),
    height: 180,
    data: [{ name: "rows", values }],
    scales: [
      { name: "x", type: "band", domain: { data: "rows", field: "variant" }, range: "width", padding: 0.3 },
      {
        name: "y",
        type: "linear",
        domain: { data: "rows", fields: ["lo", "hi", "mean"] },
        range: "height",
        zero: true,
        nice: true,
      },
    ],
    axes: [
      { orient: "bottom", scale: "x", title: "variant" },
      { orient: "left", scale: "y", title: axisTitle },
    ],
    marks: [
      {
        type: "rect",
        from: { data: "rows" },
        encode: {
          enter: {
            x: { scale: "x", field: "variant" },
            width: { scale: "x", band: 1 },
            y: { scale: "y", field: "mean" },
            y2: { scale: "y", value: 0 },
            fill: { value: "#4c78a8" },
          },
        },
      },
      {
        type: "rule",
        from: { data: "rows" },
        encode: {
          enter: {
            x: { scale: "x", field: "variant", band: 0.5 },
            y: { scale: "y", field: "lo" },
            y2: { scale: "y", field: "hi" },
            stroke: { value: "#222" },
            strokeWidth: { value: 1.5 },
          },
        },
      },
    ],
  } as vega.Spec;
  return renderSvg(spec);
}

export const CLAMPED_NOTE =
  "No CLIP score chart: every variant scores 0. CLIP score is max(100 · mean cosine, 0) (torchmetrics), so a " +
  "negative mean similarity, images that do not match their prompts at all (typical of an untrained or tiny " +
  "model), is clamped to 0. CLIP-T and the raw per-prompt scores keep the unclamped values.";

/**
 * The CLIP score chart, or, when every variant's score is 0 (all clamped), a note saying so:
 * a chart of zero-height bars looks broken.
 */
export async function clipScoreChart(
  rows: { variant: string; stat: Stat }[],
): Promise<{ title: string; svg?: string; note?: string }> {
  const title = "CLIP score";
  if (rows.length > 0 && rows.every((r) => r.stat.mean === 0)) return { title, note: CLAMPED_NOTE };
  return { title, svg: await metricChart("CLIP score by variant (mean ± std over seeds)", "CLIP score", rows) };
}
