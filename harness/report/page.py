"""The static leaderboard page: one HTML file, no server, built from the leaderboard JSON.

What a visitor sees first is the findings matrix (tasks by models, each cell the verdict of
the task's finding with the effect and its interval, the paper's verdict as the last
column; `harness.report.findings`), then per task its per-layer chart (drawn at build time by
`harness.report.charts`), and per board the options that set it apart, the full config behind a
disclosure, and the sortable table with each run's plots as thumbnails; for a comparative task,
each comparison across models (models as rows, then every pair's paired difference).

The data is embedded as JSON (with "<" escaped, so no text can close the script tag) and
everything is built with DOM calls that set `textContent`, never HTML strings: a model
name with markup shows as text. The JSON is strict (no NaN or Infinity, which `JSON.parse`
refuses), metric names are looked up as own properties only (a metric called
`constructor` or `__proto__` is just missing), and only links and images into `assets/`
are made.
"""

from __future__ import annotations

import json
from typing import Any

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>probe-harness leaderboards</title>
<style>
  body { font-family: system-ui, sans-serif; margin: 0 auto; padding: 1rem 1.5rem; max-width: 1200px; color: #222;
         overflow-wrap: anywhere; }
  h1 { margin: 0.5rem 0; } h2 { margin-top: 2.5rem; border-bottom: 2px solid #ddd; }
  .scroll { overflow-x: auto; max-width: 100%; }
  table { border-collapse: collapse; margin: 0.5rem 0 1rem; font-size: 0.9rem; }
  th, td { border-bottom: 1px solid #ddd; padding: 0.3rem 0.6rem; text-align: left; vertical-align: top; }
  th { background: #f4f4f4; }
  table.board th { cursor: pointer; user-select: none; }
  th.sorted-asc::after { content: " \\25B2"; } th.sorted-desc::after { content: " \\25BC"; }
  tr.reference td { color: #666; font-style: italic; background: #fafafa; }
  .ci, .claim, .config { color: #666; font-size: 0.8rem; }
  table.board th, table.board td { overflow-wrap: normal; white-space: nowrap; }
  table.board td .ci { display: block; }
  table.matrix td, table.matrix th { min-width: 7rem; max-width: 16rem; }
  table.matrix tbody th { min-width: 12rem; overflow-wrap: normal; }
  table.matrix th a { color: inherit; }
  .verdict { display: inline-block; font-weight: 600; padding: 0 0.35rem; border-radius: 3px; }
  .v-holds { background: #d7f0d2; color: #1d5e16; } .v-does-not-hold { background: #f8d9d4; color: #8a1f11; }
  .v-not-run { color: #888; } .v-not-declared, .v-missing-metric { background: #f3efd7; color: #6b5d10; }
  figure { margin: 0.5rem 0 1rem; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
  img.thumb { height: 56px; width: auto; border: 1px solid #ddd; margin: 0 0.25rem 0.25rem 0; vertical-align: middle; }
  ul.options { display: flex; flex-wrap: wrap; gap: 0.1rem 1.2rem; list-style: none; margin: 0.2rem 0; padding: 0;
               font-size: 0.85rem; color: #333; }
  details pre { white-space: pre-wrap; font-size: 0.8rem; background: #f8f8f8; padding: 0.5rem; }
</style>
</head>
<body>
<h1>probe-harness leaderboards</h1>
<p>Does each paper's finding hold on each model? A cell holds when the effect's 95% interval lies wholly on the
better side of the control; it shows the effect with its interval (hover for the comparison made). The last
column is the paper's verdict on its own models. Below, per task: per-layer curves of every model, then every
number, with 95% bootstrap intervals; rows in italics are the paper's numbers. Click a column to sort.</p>
<div class="scroll"><table class="matrix" id="findings-matrix"></table></div>
<div id="boards"></div>
<script type="application/json" id="leaderboard-data">__DATA__</script>
<script>
"use strict";
const data = JSON.parse(document.getElementById("leaderboard-data").textContent);

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (cls) node.className = cls;
  return node;
}

function own(obj, key) {
  return obj !== null && typeof obj === "object" && Object.prototype.hasOwnProperty.call(obj, key) ? obj[key] : undefined;
}

function isNumber(x) {
  return typeof x === "number" && isFinite(x);
}

function isAsset(path) {
  return typeof path === "string" && path.startsWith("assets/") && /^[A-Za-z0-9._\\/-]+$/.test(path) && !path.includes("..");
}

function hasInterval(m) {
  return !!m && isNumber(m.value) && isNumber(m.ci_low) && isNumber(m.ci_high);
}

function intervalText(m) {
  return " [" + m.ci_low.toFixed(3) + ", " + m.ci_high.toFixed(3) + "]";
}

function metricCell(m) {
  const td = el("td");
  if (!hasInterval(m)) { td.textContent = "-"; td.dataset.sort = ""; return td; }
  td.appendChild(el("span", m.value.toFixed(3)));
  td.appendChild(el("span", intervalText(m), "ci"));
  td.dataset.sort = String(m.value);
  return td;
}

function renderMatrix(findings) {
  const table = document.getElementById("findings-matrix");
  const head = table.createTHead().insertRow();
  head.appendChild(el("th", "task"));
  findings.models.forEach(model => head.appendChild(el("th", model)));
  head.appendChild(el("th", "paper's verdict"));
  const body = table.createTBody();
  findings.tasks.forEach(entry => {
    const tr = body.insertRow();
    tr.dataset.task = entry.task;
    const name = el("th");
    const link = el("a", entry.task);
    link.href = "#task-" + encodeURIComponent(entry.task);
    name.appendChild(link);
    if (entry.finding) {
      if (entry.finding.claim) name.appendChild(el("div", entry.finding.claim, "claim"));
      name.appendChild(el("div", entry.finding.effect + " vs " + entry.finding.control, "claim"));
    }
    tr.appendChild(name);
    entry.cells.forEach(cell => {
      const td = el("td");
      td.dataset.model = cell.model;
      const verdict = el("span", cell.verdict, "verdict v-" + String(cell.verdict).replace(/[^a-z]+/g, "-"));
      td.appendChild(verdict);
      if (hasInterval(cell.effect)) {
        td.appendChild(el("div", cell.effect.value.toFixed(3) + intervalText(cell.effect), "ci"));
      }
      if (cell.reason) td.title = cell.reason;
      tr.appendChild(td);
    });
    tr.appendChild(el("td", entry.paper_verdict || "", "claim"));
  });
}

function sortTable(table, col, th) {
  const body = table.tBodies[0];
  const rows = Array.from(body.rows).filter(r => !r.classList.contains("reference"));
  const refs = Array.from(body.rows).filter(r => r.classList.contains("reference"));
  const asc = !th.classList.contains("sorted-asc");
  table.querySelectorAll("th").forEach(h => h.classList.remove("sorted-asc", "sorted-desc"));
  th.classList.add(asc ? "sorted-asc" : "sorted-desc");
  const key = r => r.cells[col].dataset.sort;
  rows.sort((a, b) => {
    const x = key(a), y = key(b);
    const nx = parseFloat(x), ny = parseFloat(y);
    const cmp = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : String(x).localeCompare(String(y));
    return asc ? cmp : -cmp;
  });
  rows.concat(refs).forEach(r => body.appendChild(r));
}

function renderConfig(board, differing) {
  const wrap = el("div", null, "config");
  const against = board.default_config && typeof board.default_config === "object" ? "the task's defaults" : "the task's other boards";
  wrap.appendChild(el("span", "task version " + board.task_version + ", config " + board.config_hash +
                      (differing === null ? ": the only configuration of this task here" :
                       differing.length ? ": options that differ from " + against : ": the same options as " + against)));
  if (differing && differing.length) {
    const list = el("ul", null, "options");
    differing.forEach(pair => list.appendChild(el("li", pair[0] + " = " + JSON.stringify(pair[1]))));
    wrap.appendChild(list);
  }
  const more = el("details");
  more.appendChild(el("summary", "full config (JSON)"));
  more.appendChild(el("pre", JSON.stringify(board.config, null, 2)));
  wrap.appendChild(more);
  return wrap;
}

function plotsCell(row) {
  const td = el("td");
  row.artifacts.forEach(path => {
    if (!isAsset(path)) return;
    const name = path.split("/").pop();
    const a = el("a");
    a.href = path;
    a.title = name;
    const img = el("img", null, "thumb");
    img.src = path;
    img.alt = name;
    a.appendChild(img);
    td.appendChild(a);
  });
  return td;
}

function renderBoard(task, board, differing) {
  const wrap = el("div", null, "board");
  wrap.appendChild(renderConfig(board, differing));
  const table = el("table", null, "board");
  table.dataset.task = task.task;
  const head = table.createTHead().insertRow();
  const columns = ["model"].concat(board.headline_metrics).concat(["date", "plots"]);
  columns.forEach((name, i) => {
    const th = el("th", name);
    if (name !== "plots") th.addEventListener("click", () => sortTable(table, i, th));
    head.appendChild(th);
  });
  const body = table.createTBody();
  board.rows.forEach(row => {
    const tr = body.insertRow();
    const name = el("td", row.model); name.dataset.sort = row.model; tr.appendChild(name);
    board.headline_metrics.forEach(m => tr.appendChild(metricCell(own(row.metrics, m))));
    const date = el("td", row.date); date.dataset.sort = row.date; tr.appendChild(date);
    tr.appendChild(plotsCell(row));
  });
  const ref = board.reference;
  if (ref && ref.metrics) {
    Object.keys(ref.metrics).forEach(model => {
      const values = ref.metrics[model];
      if (!board.headline_metrics.some(m => isNumber(own(values, m)))) return;
      const tr = body.insertRow();
      tr.className = "reference";
      tr.appendChild(el("td", "paper: " + model));
      board.headline_metrics.forEach(m => tr.appendChild(el("td", isNumber(own(values, m)) ? own(values, m).toFixed(3) : "")));
      tr.appendChild(el("td", ""));
      tr.appendChild(el("td", ""));
    });
  }
  const scroll = el("div", null, "scroll");
  scroll.appendChild(table);
  wrap.appendChild(scroll);
  if (ref && ref.source) wrap.appendChild(el("p", "Paper's numbers: " + ref.source, "config"));
  return wrap;
}

function signed(x) {
  return (x >= 0 ? "+" : "") + x.toFixed(3);
}

function differenceCell(d) {
  const td = el("td");
  if (!hasInterval(d)) { td.textContent = "-"; return td; }
  td.appendChild(el("span", signed(d.value)));
  td.appendChild(el("span", " [" + signed(d.ci_low) + ", " + signed(d.ci_high) + "]", "ci"));
  td.title = "n = " + d.n + " paired items";
  return td;
}

function renderComparison(view) {
  const wrap = el("div", null, "board comparison");
  const columns = Array.isArray(view.columns) ? view.columns.filter(c => typeof c === "string") : [];
  const models = Array.isArray(view.models) ? view.models.filter(m => typeof m === "string") : [];
  wrap.appendChild(el("p", "Comparison of " + models.length + " models, task version " + view.task_version + ", config " +
                     view.config_hash + ", seed " + view.seed + ": models as rows; below, each pair's difference with a paired 95% interval (same items).", "config"));
  const table = el("table", null, "board comparison-models");
  const head = table.createTHead().insertRow();
  ["model"].concat(columns).forEach(name => head.appendChild(el("th", name)));
  const body = table.createTBody();
  models.forEach(model => {
    const tr = body.insertRow();
    tr.appendChild(el("td", model));
    const metrics = own(view.metrics, model);
    columns.forEach(c => tr.appendChild(metricCell(own(metrics, c))));
  });
  const diffs = el("table", null, "board comparison-differences");
  const dhead = diffs.createTHead().insertRow();
  ["pair (first − second)"].concat(columns).forEach(name => dhead.appendChild(el("th", name)));
  const dbody = diffs.createTBody();
  const pairs = [];
  (Array.isArray(view.differences) ? view.differences : []).forEach(d => {
    if (!pairs.some(p => p[0] === d.model_a && p[1] === d.model_b)) pairs.push([d.model_a, d.model_b]);
  });
  pairs.forEach(([a, b]) => {
    const tr = dbody.insertRow();
    tr.appendChild(el("td", a + " − " + b));
    columns.forEach(c => tr.appendChild(differenceCell(view.differences.find(d => d.model_a === a && d.model_b === b && d.metric === c))));
  });
  [table, diffs].forEach(t => { const scroll = el("div", null, "scroll"); scroll.appendChild(t); wrap.appendChild(scroll); });
  const plots = plotsCell({artifacts: Array.isArray(view.artifacts) ? view.artifacts : []});
  if (plots.childNodes.length) { const p = el("p"); Array.from(plots.childNodes).forEach(n => p.appendChild(n)); wrap.appendChild(p); }
  return wrap;
}

function renderChart(entry) {
  const path = entry && entry.chart;
  if (!isAsset(path)) return null;
  const figure = el("figure");
  const a = el("a");
  a.href = path;
  const img = el("img");
  img.src = path;
  img.alt = "per-layer curves of every model";
  a.appendChild(img);
  figure.appendChild(a);
  const dashed = entry.chart_dashed;
  figure.appendChild(el("figcaption", "Per layer, every model (the run each matrix cell reads): " + entry.chart_solid + " solid" +
                        (typeof dashed === "string" ? ", " + dashed + " dashed" : isNumber(dashed) ? ", the control " + dashed + " dashed" : "") +
                        ". Click for full size.", "config"));
  return figure;
}

renderMatrix(data.findings);
const root = document.getElementById("boards");
data.tasks.forEach((task, t) => {
  const section = el("section");
  section.id = "task-" + task.task;
  section.appendChild(el("h2", task.task));
  if (task.description) section.appendChild(el("p", task.description));
  if (task.paper) section.appendChild(el("p", "Paper: " + task.paper, "config"));
  const entry = data.index.tasks.find(e => e.task === task.task);
  const chart = renderChart(entry);
  if (chart) section.appendChild(chart);
  task.boards.forEach((board, b) => section.appendChild(renderBoard(task, board, data.differing[t][b])));
  (Array.isArray(task.comparisons) ? task.comparisons : []).forEach(view => section.appendChild(renderComparison(view)));
  root.appendChild(section);
});
</script>
</body>
</html>
"""


def differing_options(boards: list[dict[str, Any]]) -> list[list[list[Any]] | None]:
    """For each board, the [option, value] pairs that differ from the task's defaults.

    Results record the task's defaults (resolved for the run's device) beside the config;
    a board from results that predate that record compares with the task's other boards
    instead (the options not the same on every board), and None is a single old board.
    """
    if all(isinstance(b.get("default_config"), dict) for b in boards):
        return [[[k, v] for k, v in sorted((b.get("config") or {}).items())
                 if json.dumps(v, sort_keys=True) != json.dumps(b["default_config"].get(k), sort_keys=True)]
                for b in boards]
    if len(boards) < 2:
        return [None] * len(boards)
    configs = [b.get("config") or {} for b in boards]
    keys = sorted({k for c in configs for k in c})
    varying = [k for k in keys if len({json.dumps(c.get(k, None), sort_keys=True) for c in configs}) > 1]
    return [[[k, c.get(k)] for k in varying] for c in configs]


def render_page(index: dict[str, Any], tasks: list[dict[str, Any]], findings: dict[str, Any]) -> str:
    """The page for these tasks, their findings matrix (`harness.report.findings.matrix`) and index.json's entries."""
    differing = [differing_options(t["boards"]) for t in tasks]
    payload = json.dumps({"index": index, "tasks": tasks, "findings": findings, "differing": differing}, sort_keys=True, allow_nan=False)
    payload = payload.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return PAGE.replace("__DATA__", payload)
