"""Leaderboards: merge results files into one JSON per task, and show them in the terminal.

A leaderboard ranks only results that are comparable: the same task version and the same
config hash form one *board*; runs with `--limit` are partial and never ranked. Every
results file is validated against the schema first; a malformed or foreign file is
reported by name and skipped.

`build` merges into the boards already in `--out` instead of replacing them: a row is
keyed by (task, task version, config hash, model, dtype, quantization, seed), a newer run
replaces the row of the same key, and boards and rows the new results do not mention are
kept. So a contributor who rebuilds the repository's leaderboard from their own results
folder adds rows and loses none.

Results files (and the boards being merged into) are untrusted input: a results file is used
only if it keeps every rule of `harness.results.validate` (the rules `harness validate` reports),
every path built from one goes through `safe_join`, plots are copied only when they are
regular PNG files inside their run's folder, and a board kept from an earlier build shows
numbers that are not finite or are absurdly large as missing and never ranks them.

`--out` must hold no symbolic link anywhere (refused with one line, before anything is read
or written), and links in the results folder are skipped by name, never followed. Clean-up
deletes only plots the builds themselves wrote and recorded in `assets/built.json` (the
manifest) that no board links any more: never a file by its name's pattern, never one a
build did not write.

Beside the boards, `build` writes `findings.json`, the verdict of each task's finding on
each model (`harness.report.findings` documents its fields and the rule), and one per-layer
chart per task under `assets/charts/` (`harness.report.charts`), both recomputed from the merged
boards, so a row kept from an earlier build counts as much as a new one. A row stores its
per-layer curves (read from the results' `details`) for that reason.

Comparisons (`harness.results.compare`, written under `<results>/_compare/` when a comparative task
ran over several models) are untrusted input too: validated against their schema, numbers
checked, plots copied only from the comparison's own folder. Each task's file keeps them in
`comparisons` (models as rows, the compared metrics as columns, every pair's paired
difference), merged like rows: a newer comparison of the same models and config replaces
the older one.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import ValidationError

from harness.errors import UsageError
from harness.report.assets import MANIFEST, copy_artifacts, copy_plots, is_asset, prune_assets, write_charts
from harness.report.boards import (
    FINDINGS_FILE,
    LEADERBOARD_VERSION,
    N_HEADLINE,
    Board,
    BuildReport,
    ComparisonView,
    Row,
    TaskBoards,
    format_table,
    json_safe,
    read_board,
    to_json,
)
from harness.report.charts import clean_curves, extract_curves
from harness.report.findings import matrix
from harness.report.inputs import (
    clean_finding,
    clean_metrics,
    clean_reference,
    comparison_is_clean,
    load_comparisons,
    load_results,
)
from harness.results import Experiment, Results, write_atomic
from harness.results.compare import Comparison
from harness.results.validate import MAX_JSON_BYTES, task_name_ok
from harness.safepath import UnsafePath, links_in, read_plain_file, safe_join

__all__ = [  # the build, and the names readers of leaderboards took from here before the split
    "MANIFEST",
    "Board",
    "BuildReport",
    "Row",
    "TaskBoards",
    "build",
    "format_table",
    "load_results",
    "read_board",
]


def row_for(path: Path, results: Results, artifacts: list[str], report: BuildReport) -> Row:
    return Row(
        model=results.model.spec,
        model_revision=results.model.resolved_revision,
        dtype=results.model.dtype,
        quantization=results.model.quantization,
        n_params=results.model.n_params,
        metrics=results.metrics,  # load_valid checked every number
        unmeasured=results.unmeasured,
        config_hash=results.task.config_hash,
        task_version=results.task.version,
        harness_version=results.harness_version,
        seed=results.seed,
        date=results.created_at[:10],
        created_at=results.created_at,
        notes=results.notes,
        artifacts=artifacts,
        curves=extract_curves(results),
    )


def sort_key(row: Row, metric: str | None) -> tuple:
    m = row.metrics.get(metric) if metric else None
    if m is None:
        return (1, 0.0, row.model)
    sign = -1.0 if m.higher_is_better is not False else 1.0
    return (0, sign * m.value, row.model)


def check_out_dir(out_dir: Path) -> None:
    """Refuse, before any work, an --out that is a file, a folder that holds something other than
    leaderboards, or one holding a symbolic link (which a read, write or clean-up could follow out of it)."""
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"--out {out_dir} is a file: name a folder for the leaderboards")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not (out_dir / "index.json").is_file():
        raise UsageError(
            f"--out {out_dir} holds files but no leaderboard (index.json): name a new or empty folder, or a leaderboards folder"
        )
    links = links_in(out_dir, limit=1)
    if links:
        raise UsageError(
            f"--out {out_dir} holds a symbolic link ({links[0]}), which build never follows: "
            "remove the link (or build into another folder) and build again"
        )


def read_existing(out_dir: Path, report: BuildReport) -> dict[str, TaskBoards]:
    """The boards already in out_dir, to merge into; a file that is not one stops the build before any write."""
    tasks: dict[str, TaskBoards] = {}
    if not out_dir.is_dir():
        return tasks
    for path in sorted(out_dir.glob("*.json")):
        name = path.stem
        if not task_name_ok(name):
            continue
        try:
            info = TaskBoards.model_validate_json(read_plain_file(path, MAX_JSON_BYTES))
            if info.task != name:
                raise ValueError(f"it holds task {info.task[:60]!r}")
        except (UnsafePath, ValidationError, ValueError) as e:
            reason = str(e).splitlines()[0]
            raise UsageError(
                f"{path} is not a leaderboard build can merge into ({reason}): move it out of {out_dir} and build again"
            ) from None
        for board in info.boards:
            board.config = json_safe(board.config)
            board.reference = clean_reference(board.reference)
            board.finding = clean_finding(board.finding)
            for row in board.rows:
                row.curves = clean_curves(row.curves)
                row.metrics, dropped = clean_metrics(row.metrics)
                kept = [a for a in row.artifacts if is_asset(out_dir, a)]
                if dropped or len(kept) != len(row.artifacts):
                    report.skipped.append((path, f"row {row.model[:60]!r}: dropped unsafe or missing values and plots"))
                row.artifacts = kept
        for view in info.comparisons:
            kept = [a for a in view.artifacts if is_asset(out_dir, a)]
            if not comparison_is_clean(view) or len(kept) != len(view.artifacts):
                report.skipped.append((path, "a comparison with unsafe values or missing plots was dropped"))
        info.comparisons = [
            v for v in info.comparisons if comparison_is_clean(v) and all(is_asset(out_dir, a) for a in v.artifacts)
        ]
        tasks[name] = info
    return tasks


def merge_comparison(
    tasks: dict[str, TaskBoards], path: Path, comparison: Comparison, results_dir: Path, out_dir: Path, report: BuildReport
) -> None:
    """Put one comparison beside its task's boards, in place of an older one of the same models, config and seed."""
    view = ComparisonView(
        task_version=comparison.task.version,
        config_hash=comparison.task.config_hash,
        seed=comparison.seed,
        bootstrap=comparison.bootstrap,
        created_at=comparison.created_at,
        models=[m.spec for m in comparison.models],
        columns=comparison.columns,
        metrics={m.spec: m.metrics for m in comparison.models},
        differences=comparison.differences,
        notes=comparison.notes,
    )
    if not comparison_is_clean(view):
        report.skipped.append((path, "comparison with numbers that are not finite or beyond the limit, or a model twice"))
        return
    name = comparison.task.name
    info = tasks.setdefault(
        name, TaskBoards(task=name, description=comparison.task.description, paper=comparison.task.paper, boards=[])
    )
    old = next((v for v in info.comparisons if v.key() == view.key()), None)
    if old is not None and old.created_at > view.created_at:
        report.skipped.append((path, f"older than the comparison already shown ({old.created_at[:40]!r})"))
        return
    view.artifacts = copy_plots(path, name, comparison.artifacts, results_dir, out_dir, report)
    info.comparisons = [v for v in info.comparisons if v.key() != view.key()] + [view]
    report.used.append(path)


def row_key(results: Results) -> tuple:
    """What makes two runs the same row: the experiment's board (task, version, config), the model, its row part."""
    experiment = Experiment.of(results)
    return (*experiment.board(), results.model.spec, *experiment.row())


def merge(
    tasks: dict[str, TaskBoards], path: Path, results: Results, results_dir: Path, out_dir: Path, report: BuildReport
) -> None:
    """Put one run into its task's board: a new row, or in place of an older run of the same key."""
    name = results.task.name
    info = tasks.setdefault(name, TaskBoards(task=name, boards=[]))
    board = next(
        (b for b in info.boards if (b.task_version, b.config_hash) == (results.task.version, results.task.config_hash)), None
    )
    if board is None:
        board = Board(
            task_version=results.task.version, config_hash=results.task.config_hash, config={}, headline_metrics=[], rows=[]
        )
        info.boards.append(board)
    ident = row_key(results)[3:]
    old = next((r for r in board.rows if r.key() == ident), None)
    if old is not None and old.when() > results.created_at:
        report.skipped.append((path, f"older than the run already on the board ({old.when()[:40]!r})"))
        return
    row = row_for(path, results, copy_artifacts(path, results, results_dir, out_dir, report), report)
    board.rows = [r for r in board.rows if r.key() != ident] + [row]
    board.config = json_safe(results.task.config)
    if results.task.default_config is not None:
        board.default_config = json_safe(results.task.default_config)
    board.headline_metrics = results.task.headline_metrics or list(results.metrics)[:N_HEADLINE]
    board.reference = clean_reference(results.reference)
    finding = clean_finding(results.task.finding)
    if results.task.finding is not None and finding is None:
        report.skipped.append((path, "its finding is malformed (effect, control, claim, paper_verdict): not used"))
    board.finding = finding or board.finding  # a run from before findings existed does not erase one
    info.description = results.task.description or info.description
    info.paper = results.task.paper or info.paper
    report.used.append(path)


def build(results_dir: Path, out_dir: Path) -> BuildReport:
    """Merge the results under results_dir into out_dir/<task>.json, out_dir/index.json and the static page.

    A pure function of the results files and the boards already there: no task code is
    imported, so a plugin that is no longer installed keeps its board and its columns.
    """
    from harness.report.page import render_page

    check_out_dir(out_dir)
    report = BuildReport()
    tasks = read_existing(out_dir, report)
    newest: dict[tuple, tuple[Path, Results]] = {}
    for path, results in load_results(results_dir, report):  # of several runs of one key, the newest counts
        key = row_key(results)
        if key not in newest or results.created_at > newest[key][1].created_at:
            newest[key] = (path, results)
    out_dir.mkdir(parents=True, exist_ok=True)
    for path, results in sorted(newest.values(), key=lambda pr: pr[1].created_at):  # the newest run sets a board's columns
        merge(tasks, path, results, results_dir, out_dir, report)
    for path, comparison in sorted(load_comparisons(results_dir, report), key=lambda pc: pc[1].created_at):
        merge_comparison(tasks, path, comparison, results_dir, out_dir, report)
    for info in tasks.values():
        for board in info.boards:
            board.rows.sort(key=lambda row: sort_key(row, board.headline_metrics[0] if board.headline_metrics else None))
        info.boards.sort(key=lambda b: (b.task_version, len(b.rows)), reverse=True)
    ordered = [tasks[n].model_dump(mode="json") for n in sorted(tasks)]
    charts = write_charts(out_dir, [tasks[n] for n in sorted(tasks)], report)
    index = {
        "leaderboard_version": LEADERBOARD_VERSION,
        "tasks": [
            {
                "task": t["task"],
                "description": t["description"],
                "paper": t["paper"],
                "file": f"{t['task']}.json",
                "models": sorted({r["model"] for b in t["boards"] for r in b["rows"]}),
                **charts.get(t["task"], {}),
            }
            for t in ordered
        ],
    }
    findings = matrix(list(tasks.values()))
    write_atomic(
        safe_join(out_dir, "index.json"), to_json(index)
    )  # first, so an interrupted build still leaves a leaderboard folder
    for t in ordered:
        write_atomic(safe_join(out_dir, f"{t['task']}.json"), to_json(t))
    write_atomic(safe_join(out_dir, FINDINGS_FILE), to_json(findings))
    write_atomic(safe_join(out_dir, "index.html"), render_page(index, ordered, findings))
    prune_assets(out_dir, json.dumps([index, ordered]), report)
    report.tasks = sorted(tasks)
    return report
