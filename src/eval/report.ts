// report.html: one self-contained page (inline CSS and SVG charts, no scripts) next to its
// grids/ folder. Every number shown comes from eval.json's result; table cells carry the
// exact values in data-* attributes so tools (and the report test) can read them back.
import { formatStat, METRIC_DEFINITIONS, type EvalResult, type Stat } from "./results.js";

export interface ReportCharts {
  /** A chart, or a note saying why there is none. */
  metrics: { title: string; svg?: string; note?: string }[];
  loss?: string;
  lr?: string;
}

export function escapeHtml(text: string): string {
  return text.replace(/[<>&"']/g, (c) => ({ "<": "&lt;", ">": "&gt;", "&": "&amp;", '"': "&quot;", "'": "&#39;" })[c]!);
}

const attr = (v: number | null): string => (v === null || !Number.isFinite(v) ? "" : String(v));

/** A table cell for a mean ± std over seeds, with the exact values as data attributes. */
function statCell(variant: string, metric: string, s: Stat | null, digits: number): string {
  if (!s) return `<td class="num" data-variant="${escapeHtml(variant)}" data-metric="${metric}">–</td>`;
  return (
    `<td class="num" data-variant="${escapeHtml(variant)}" data-metric="${metric}" data-mean="${attr(s.mean)}" ` +
    `data-std="${attr(s.std)}" data-n="${s.n}">${formatStat(s, digits)}</td>`
  );
}

function valueCell(variant: string, metric: string, v: number | null, digits: number): string {
  return (
    `<td class="num" data-variant="${escapeHtml(variant)}" data-metric="${metric}" data-value="${attr(v)}">` +
    `${v === null ? "–" : v.toFixed(digits)}</td>`
  );
}

function metricsTable(r: EvalResult): string {
  const hasClipI = r.variants.some((v) => v.clipI !== null);
  const head = [
    "Variant",
    "Images",
    "Seeds",
    "CLIP score (mean ± std over seeds)",
    "CLIP-T",
    ...(hasClipI ? ["CLIP-I"] : []),
    "CLIP score (all pairs)",
  ];
  const rows = r.variants.map((v) =>
    [
      `<tr data-variant="${escapeHtml(v.name)}">`,
      `<th scope="row">${escapeHtml(v.name)}</th>`,
      `<td class="num">${v.images}</td>`,
      `<td class="num">${v.replicates.length}</td>`,
      statCell(v.name, "clipScore", v.summary.clipScore, 2),
      statCell(v.name, "clipT", v.summary.clipT, 4),
      ...(hasClipI ? [statCell(v.name, "clipI", v.summary.clipI, 4)] : []),
      valueCell(v.name, "clipScoreAll", v.clipScore, 2),
      "</tr>",
    ].join(""),
  );
  const bySample = r.variants.filter((v) => v.replicateBy === "sample").map((v) => escapeHtml(v.name));
  const note = bySample.length
    ? `<p class="meta">No seeds recorded for ${bySample.join(", ")}: their images count as replicates in file-name order per prompt.</p>`
    : "";
  return `<table id="metrics"><thead><tr>${head.map((h) => `<th>${h}</th>`).join("")}</tr></thead><tbody>${rows.join("")}</tbody></table>${note}`;
}

function promptTable(r: EvalResult): string {
  const head = `<tr><th>#</th><th>Prompt</th>${r.variants.map((v) => `<th>${escapeHtml(v.name)}</th>`).join("")}</tr>`;
  const rows = r.prompts.map((prompt, p) => {
    const cells = r.variants.map((v) => {
      const m = v.perPrompt.find((x) => x.index === p);
      return statCell(v.name, `prompt-${p}-clipScoreRaw`, m ? m.clipScoreRaw : null, 2);
    });
    return `<tr><td class="num">${p}</td><td class="prompt">${escapeHtml(prompt)}</td>${cells.join("")}</tr>`;
  });
  return `<table id="per-prompt"><thead>${head}</thead><tbody>${rows.join("")}</tbody></table>`;
}

function imageTables(r: EvalResult): string {
  return r.variants
    .map((v) => {
      const rows = v.perImage.map(
        (i) =>
          `<tr><td>${escapeHtml(i.file)}</td><td class="num">${i.promptIndex}</td><td class="num">${i.seed ?? "–"}</td>` +
          `<td class="num">${i.clipScoreRaw.toFixed(3)}</td><td class="num">${i.clipI === null ? "–" : i.clipI.toFixed(4)}</td></tr>`,
      );
      return (
        `<details><summary>${escapeHtml(v.name)}: ${v.images} images (${escapeHtml(v.source)})</summary>` +
        `<table class="images"><thead><tr><th>File</th><th>Prompt #</th><th>Seed</th><th>CLIP score (raw)</th><th>CLIP-I</th></tr></thead>` +
        `<tbody>${rows.join("")}</tbody></table></details>`
      );
    })
    .join("\n");
}

/** The prompts as a numbered list (numbers from 0, as grid captions and tables count them). */
export function promptListHtml(prompts: readonly string[], id = "prompt-list"): string {
  const items = prompts.map((p, i) => `<li value="${i}" data-prompt="${i}">${escapeHtml(p)}</li>`);
  return `<ol class="prompt-list" id="${escapeHtml(id)}" start="0">${items.join("")}</ol>`;
}

function gridsSection(r: EvalResult): string {
  if (r.grids.length === 0) return "";
  const figures = r.grids.map(
    (g) =>
      `<figure><img src="${escapeHtml(g.file)}" alt="${escapeHtml(`grid, ${g.key}: prompts by variants`)}" loading="eager">` +
      `<figcaption>${escapeHtml(g.key)} · prompts ${g.prompts.join(", ")}</figcaption></figure>`,
  );
  return (
    `<section id="grids"><h2>Images</h2><p>Rows are prompts, columns variants; every column of a grid uses the same seed. ` +
    `The prompts:</p>${promptListHtml(r.prompts)}${figures.join("")}</section>`
  );
}

function trainingSection(r: EvalResult, charts: ReportCharts): string {
  if (r.runs.length === 0) return "";
  const rows = r.runs.map(
    (run) =>
      `<tr><td>${run.report ? `<a href="${escapeHtml(run.report)}">${escapeHtml(run.name)}</a>` : escapeHtml(run.name)}</td>` +
      `<td class="num">${run.points}</td><td class="num">${run.finalStep ?? "–"}</td>` +
      `<td class="num">${run.finalLoss === null ? "–" : run.finalLoss.toPrecision(4)}</td></tr>`,
  );
  return (
    `<section id="training"><h2>Training</h2>` +
    `${charts.loss ? `<div class="chart" id="loss-chart">${charts.loss}</div>` : "<p>No loss values logged.</p>"}` +
    `${charts.lr ? `<div class="chart" id="lr-chart">${charts.lr}</div>` : ""}` +
    `<table id="runs"><thead><tr><th>Run</th><th>Logged steps</th><th>Last step</th><th>Last loss</th></tr></thead>` +
    `<tbody>${rows.join("")}</tbody></table></section>`
  );
}

const STYLE = `
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px auto;max-width:1200px;padding:0 16px;color:#1d1d1f}
h1{font-size:22px;margin-bottom:4px}h2{font-size:17px;margin-top:32px;border-bottom:1px solid #ddd;padding-bottom:4px}
table{border-collapse:collapse;margin:8px 0}th,td{border:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:top}
thead th{background:#f4f4f6}td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td.prompt{max-width:420px}.meta{color:#555}figure{margin:12px 0}figure img{max-width:100%;border:1px solid #ddd}
figcaption{color:#555;font-size:12px}.chart{margin:12px 0}.charts{display:flex;flex-wrap:wrap;gap:12px}
dl{display:grid;grid-template-columns:max-content 1fr;gap:2px 12px}dt{font-weight:600}details{margin:6px 0}`;

/** The whole page. */
export function renderReport(r: EvalResult, charts: ReportCharts): string {
  const instance = r.instanceImages
    ? ` · instance images: ${r.instanceImages.count} (${escapeHtml(r.instanceImages.path)})`
    : "";
  const definitions = Object.entries(METRIC_DEFINITIONS)
    .map(([k, v]) => `<dt>${escapeHtml(k)}</dt><dd>${escapeHtml(v)}</dd>`)
    .join("");
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>${escapeHtml(r.title)}</title>
<style>${STYLE}</style>
</head>
<body>
<h1>${escapeHtml(r.title)}</h1>
${r.trainingReport ? `<p><a id="training-report" href="${escapeHtml(r.trainingReport)}">← training report</a></p>` : ""}
<p class="meta">${r.mode === "generate" ? "generated and scored" : "scored image folders"} · CLIP ${escapeHtml(r.clip.model)} (${escapeHtml(r.clip.dtype)}) · ${r.prompts.length} prompts · ${r.variants.length} variants${instance} · sdtune ${escapeHtml(r.versions.sdtune)}, libtorch ${escapeHtml(r.versions.libtorch)} · numbers in <a href="eval.json">eval.json</a></p>
<section id="summary"><h2>Metrics</h2>
${metricsTable(r)}
<div class="charts">${charts.metrics
    .map((c) =>
      c.svg ? `<div class="chart">${c.svg}</div>` : `<p class="meta chart-note">${escapeHtml(c.note ?? "")}</p>`,
    )
    .join("")}</div>
</section>
<section id="prompts"><h2>Per prompt: CLIP score (raw, mean ± std over seeds)</h2>
${promptTable(r)}
</section>
${gridsSection(r)}
${trainingSection(r, charts)}
<section id="images"><h2>Per image</h2>
${imageTables(r)}
</section>
<section id="definitions"><h2>Definitions</h2><dl>${definitions}</dl></section>
</body>
</html>
`;
}
