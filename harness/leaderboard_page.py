"""The static leaderboard page: one HTML file, no server, built from the leaderboard JSON.

The data is embedded as JSON (with "<" escaped, so no text can close the script tag) and
the tables are built with DOM calls that set `textContent`, never HTML strings: a model
name with markup shows as text. The JSON is strict (no NaN or Infinity, which `JSON.parse`
refuses), metric names are looked up as own properties only (a metric called
`constructor` or `__proto__` is just missing), and only links into `assets/` are made.
"""

from __future__ import annotations

import json
from typing import Any

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>probe-harness leaderboards</title>
<style>
  body { font-family: system-ui, sans-serif; margin: 2rem; max-width: 80rem; color: #222; }
  table { border-collapse: collapse; margin: 0.5rem 0 1.5rem; font-size: 0.9rem; }
  th, td { border-bottom: 1px solid #ddd; padding: 0.3rem 0.6rem; text-align: left; vertical-align: top; }
  th { cursor: pointer; background: #f4f4f4; user-select: none; }
  th.sorted-asc::after { content: " \\25B2"; } th.sorted-desc::after { content: " \\25BC"; }
  tr.reference td { color: #666; font-style: italic; background: #fafafa; }
  .ci { color: #777; font-size: 0.8rem; }
  .config { color: #555; font-size: 0.8rem; }
</style>
</head>
<body>
<h1>probe-harness leaderboards</h1>
<p>Each table ranks results of one task version and configuration. Values are shown with
their 95% bootstrap interval; rows in italics are the paper's numbers. Click a column to sort.</p>
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

function metricCell(m) {
  const td = el("td");
  if (!m || !isNumber(m.value) || !isNumber(m.ci_low) || !isNumber(m.ci_high)) { td.textContent = "-"; td.dataset.sort = ""; return td; }
  td.appendChild(el("span", m.value.toFixed(3)));
  td.appendChild(el("span", " [" + m.ci_low.toFixed(3) + ", " + m.ci_high.toFixed(3) + "]", "ci"));
  td.dataset.sort = String(m.value);
  return td;
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

function renderBoard(task, board) {
  const wrap = el("div", null, "board");
  wrap.appendChild(el("p", "task version " + board.task_version + ", config " + board.config_hash + ": " +
                     JSON.stringify(board.config), "config"));
  const table = el("table");
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
    const plots = el("td");
    row.artifacts.forEach(path => {
      if (typeof path !== "string" || !path.startsWith("assets/") || !/^[A-Za-z0-9._/-]+$/.test(path) || path.includes("..")) return;
      const a = el("a", path.split("/").pop());
      a.href = path;
      plots.appendChild(a);
      plots.appendChild(document.createTextNode(" "));
    });
    tr.appendChild(plots);
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
  wrap.appendChild(table);
  if (ref && ref.source) wrap.appendChild(el("p", "Paper's numbers: " + ref.source, "config"));
  return wrap;
}

const root = document.getElementById("boards");
data.tasks.forEach(task => {
  const section = el("section");
  section.id = "task-" + task.task;
  section.appendChild(el("h2", task.task));
  if (task.description) section.appendChild(el("p", task.description));
  if (task.paper) section.appendChild(el("p", "Paper: " + task.paper, "config"));
  task.boards.forEach(board => section.appendChild(renderBoard(task, board)));
  root.appendChild(section);
});
</script>
</body>
</html>
"""


def render_page(index: dict[str, Any], tasks: list[dict[str, Any]]) -> str:
    """The page for these tasks; `index` is accepted for symmetry with index.json and embedded too."""
    payload = json.dumps({"index": index, "tasks": tasks}, sort_keys=True, allow_nan=False)
    payload = payload.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return PAGE.replace("__DATA__", payload)
