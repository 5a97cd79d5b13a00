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
  return typeof path === "string" && path.startsWith("assets/") && /^[A-Za-z0-9._\/-]+$/.test(path) && !path.includes("..");
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
      const facets = entry.finding.facets && entry.finding.facets.length ? entry.finding.facets
        : [{kind: "", effect: entry.finding.effect, control: entry.finding.control}];
      facets.forEach(f => name.appendChild(el("div", (f.kind ? f.kind + ": " : "") + f.effect + " vs " + f.control, "claim")));
    }
    tr.appendChild(name);
    entry.cells.forEach(cell => {
      const td = el("td");
      td.dataset.model = cell.model;
      const verdictClass = v => "verdict v-" + (/ only$/.test(String(v)) ? "partial" : String(v).replace(/[^a-z]+/g, "-"));
      td.appendChild(el("span", cell.verdict, verdictClass(cell.verdict)));
      const facets = Array.isArray(cell.facets) ? cell.facets : [];
      if (facets.length > 1) {
        facets.forEach(f => {
          const line = el("div", "", "facet");
          line.appendChild(el("span", String(f.kind) + ": "));
          line.appendChild(el("span", String(f.verdict), verdictClass(f.verdict)));
          if (hasInterval(f.effect)) line.appendChild(el("span", " " + f.effect.value.toFixed(3) + intervalText(f.effect), "ci"));
          line.title = String(f.effect_metric) + ": " + String(f.reason);
          td.appendChild(line);
        });
      } else if (hasInterval(cell.effect)) {
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
