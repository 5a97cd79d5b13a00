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
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent


def page_template() -> str:
    """The page's HTML with its stylesheet and script (files of their own beside this module) inlined:
    one file that opens from disk, with no server and nothing fetched."""
    html = (HERE / "page.html").read_text(encoding="utf-8")
    return html.replace("__STYLE__", (HERE / "page.css").read_text(encoding="utf-8"), 1).replace(
        "__SCRIPT__", (HERE / "page.js").read_text(encoding="utf-8"), 1
    )


def differing_options(boards: list[dict[str, Any]]) -> list[list[list[Any]] | None]:
    """For each board, the [option, value] pairs that differ from the task's defaults.

    Results record the task's defaults (resolved for the run's device) beside the config;
    a board from results that predate that record compares with the task's other boards
    instead (the options not the same on every board), and None is a single old board.
    """
    if all(isinstance(b.get("default_config"), dict) for b in boards):
        return [
            [
                [k, v]
                for k, v in sorted((b.get("config") or {}).items())
                if json.dumps(v, sort_keys=True) != json.dumps(b["default_config"].get(k), sort_keys=True)
            ]
            for b in boards
        ]
    if len(boards) < 2:
        return [None] * len(boards)
    configs = [b.get("config") or {} for b in boards]
    keys = sorted({k for c in configs for k in c})
    varying = [k for k in keys if len({json.dumps(c.get(k, None), sort_keys=True) for c in configs}) > 1]
    return [[[k, c.get(k)] for k in varying] for c in configs]


def render_page(index: dict[str, Any], tasks: list[dict[str, Any]], findings: dict[str, Any]) -> str:
    """The page for these tasks, their findings matrix (`harness.report.findings.matrix`) and index.json's entries."""
    differing = [differing_options(t["boards"]) for t in tasks]
    payload = json.dumps(
        {"index": index, "tasks": tasks, "findings": findings, "differing": differing}, sort_keys=True, allow_nan=False
    )
    payload = payload.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return page_template().replace("__DATA__", payload)
