"""Leaderboards: merge results files into one JSON per task, and show them in the terminal.

A leaderboard ranks only results that are comparable: the same task version and the same
config hash form one *board*; runs with `--limit` are partial and never ranked. Every
results file is validated against the schema first; a malformed or foreign file is
reported by name and skipped.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from harness.results import Results, write_atomic

LEADERBOARD_VERSION = 1
N_HEADLINE = 6


@dataclass
class BuildReport:
    used: list[Path] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    tasks: list[str] = field(default_factory=list)


def load_results(results_dir: Path, report: BuildReport) -> list[tuple[Path, Results]]:
    """Every valid results file under `results_dir`; the rest go to report.skipped with a reason."""
    found = []
    for path in sorted(results_dir.rglob("*.json")):
        if any(part.startswith(".") for part in path.relative_to(results_dir).parts):
            continue  # staging folders of unfinished runs
        if path.parent.with_suffix(".json").is_file():
            continue  # an artifact of the results file beside its folder (plots, samples, tables)
        try:
            results = Results.model_validate_json(path.read_text())
        except (ValidationError, ValueError, UnicodeDecodeError) as e:
            reason = str(e).splitlines()[0]
            report.skipped.append((path, f"not a valid results file ({reason})"))
            continue
        if results.limit is not None:
            report.skipped.append((path, f"partial run (--limit {results.limit}), not ranked"))
            continue
        found.append((path, results))
    return found


def task_info(name: str) -> dict[str, Any]:
    """Description, paper and headline metrics of a registered task (empty for a task not installed here)."""
    from harness.registry import all_tasks

    task = all_tasks().get(name)
    if task is None:
        return {"description": "", "paper": "", "headline_metrics": None}
    return {"description": task.description, "paper": task.paper, "headline_metrics": getattr(task, "headline_metrics", None)}


def row_for(results: Results, artifacts: list[str]) -> dict[str, Any]:
    return {
        "model": results.model.spec,
        "model_revision": results.model.resolved_revision,
        "dtype": results.model.dtype,
        "quantization": results.model.quantization,
        "n_params": results.model.n_params,
        "metrics": {k: m.model_dump() for k, m in results.metrics.items()},
        "config_hash": results.task.config_hash,
        "task_version": results.task.version,
        "harness_version": results.harness_version,
        "seed": results.seed,
        "date": results.created_at[:10],
        "notes": results.notes,
        "artifacts": artifacts,
    }


def sort_key(row: dict[str, Any], metric: str | None) -> tuple:
    m = row["metrics"].get(metric) if metric else None
    if m is None:
        return (1, 0.0, row["model"])
    sign = -1.0 if m.get("higher_is_better") is not False else 1.0
    return (0, sign * m["value"], row["model"])


def copy_artifacts(path: Path, results: Results, out_dir: Path, task: str) -> list[str]:
    """Copy a result's plots next to the leaderboard so the page and a published copy can link them."""
    copied = []
    slug = path.parent.name
    for rel in results.artifacts:
        src = path.parent / rel
        if not src.is_file() or src.suffix.lower() != ".png":
            continue
        dest = Path("assets") / task / slug / f"{path.stem}-{src.name}"
        (out_dir / dest).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, out_dir / dest)
        copied.append(dest.as_posix())
    return copied


def build(results_dir: Path, out_dir: Path) -> BuildReport:
    """Write out_dir/<task>.json for every task with results, out_dir/index.json, and the static page."""
    from harness.leaderboard_page import render_page

    report = BuildReport()
    by_board: dict[tuple[str, str, str], list[tuple[Path, Results]]] = {}
    for path, results in load_results(results_dir, report):
        key = (results.task.name, results.task.version, results.task.config_hash)
        by_board.setdefault(key, []).append((path, results))
    out_dir.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(out_dir / "assets", ignore_errors=True)
    tasks: dict[str, dict[str, Any]] = {}
    for (name, version, chash), entries in sorted(by_board.items()):
        latest: dict[tuple, tuple[Path, Results]] = {}
        for path, results in entries:  # one row per model and load setting: the newest run wins
            ident = (results.model.spec, results.model.dtype, results.model.quantization, results.seed)
            if ident not in latest or results.created_at > latest[ident][1].created_at:
                latest[ident] = (path, results)
        info = tasks.setdefault(name, {"task": name, **task_info(name), "boards": []})
        first = next(iter(latest.values()))[1]
        headline = info["headline_metrics"] or list(first.metrics)[:N_HEADLINE]
        rows = [row_for(r, copy_artifacts(p, r, out_dir, name)) for p, r in latest.values()]
        rows.sort(key=lambda row: sort_key(row, headline[0] if headline else None))
        report.used.extend(p for p, _ in latest.values())
        info["boards"].append({
            "task_version": version,
            "config_hash": chash,
            "config": first.task.config,
            "headline_metrics": headline,
            "reference": first.reference.model_dump() if first.reference else None,
            "rows": rows,
        })
    for name, info in tasks.items():
        info.pop("headline_metrics", None)
        info["leaderboard_version"] = LEADERBOARD_VERSION
        info["boards"].sort(key=lambda b: (b["task_version"], -len(b["rows"])), reverse=True)
        write_atomic(out_dir / f"{name}.json", json.dumps(info, indent=2, sort_keys=False) + "\n")
    index = {
        "leaderboard_version": LEADERBOARD_VERSION,
        "tasks": [
            {"task": n, "description": i["description"], "paper": i["paper"], "file": f"{n}.json",
             "models": sorted({r["model"] for b in i["boards"] for r in b["rows"]})}
            for n, i in sorted(tasks.items())
        ],
    }
    write_atomic(out_dir / "index.json", json.dumps(index, indent=2) + "\n")
    write_atomic(out_dir / "index.html", render_page(index, [tasks[n] for n in sorted(tasks)]))
    report.tasks = sorted(tasks)
    return report


def read_board(out_dir: Path, task: str) -> dict[str, Any]:
    from harness.errors import UsageError

    path = out_dir / f"{task}.json"
    if not path.exists():
        known = sorted(p.stem for p in out_dir.glob("*.json") if p.stem != "index")
        raise UsageError(f"no leaderboard for {task} in {out_dir}: run `harness leaderboard build` (have: {', '.join(known) or 'none'})")
    return json.loads(path.read_text())


def format_metric(m: dict[str, Any] | None) -> str:
    if m is None:
        return "-"
    return f"{m['value']:.3f} [{m['ci_low']:.3f}, {m['ci_high']:.3f}]"


def format_table(board: dict[str, Any]) -> str:
    """A board as a plain-text table: one row per model, then the paper's numbers."""
    metrics = board["headline_metrics"]
    header = ["model", *metrics]
    lines = [[row["model"], *(format_metric(row["metrics"].get(m)) for m in metrics)] for row in board["rows"]]
    reference = board.get("reference") or {}
    for model, values in (reference.get("metrics") or {}).items():
        if any(m in values for m in metrics):
            lines.append([f"paper: {model}", *(f"{values[m]:.3f}" if m in values else "" for m in metrics)])
    widths = [max(len(str(x)) for x in col) for col in zip(header, *lines)]
    fmt = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return "\n".join([fmt(header), fmt(["-" * w for w in widths]), *map(fmt, lines)])
