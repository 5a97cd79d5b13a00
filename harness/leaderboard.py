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
only if it keeps every rule of `harness.validate` (the rules `harness validate` reports),
every path built from one goes through `safe_join`, plots are copied only when they are
regular PNG files inside their run's folder, and a board kept from an earlier build shows
numbers that are not finite or are absurdly large as missing and never ranks them.

`--out` must hold no symbolic link anywhere (refused with one line, before anything is read
or written), and links in the results folder are skipped by name, never followed. Clean-up
deletes only plots the builds themselves wrote and recorded in `assets/built.json` (the
manifest) that no board links any more: never a file by its name's pattern, never one a
build did not write.

Beside the boards, `build` writes `findings.json`, the verdict of each task's finding on
each model (`harness.findings` documents its fields and the rule), and one per-layer
chart per task under `assets/charts/` (`harness.charts`), both recomputed from the merged
boards, so a row kept from an earlier build counts as much as a new one. A row stores its
per-layer curves (read from the results' `details`) for that reason.

Comparisons (`harness.compare`, written under `<results>/_compare/` when a comparative task
ran over several models) are untrusted input too: validated against their schema, numbers
checked, plots copied only from the comparison's own folder. Each task's file keeps them in
`comparisons` (models as rows, the compared metrics as columns, every pair's paired
difference), merged like rows: a newer comparison of the same models and config replaces
the older one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from pydantic import BaseModel, ConfigDict, ValidationError

from harness.charts import ChartLine, choose_keys, clean_curves, extract_curves, layer_chart
from harness.compare import COMPARE_DIR, Comparison, PairedDifference
from harness.errors import UsageError
from harness.findings import matrix, parse_finding, pick_rows
from harness.results import Metric, Reference, Results, write_atomic
from harness.safepath import UnsafePath, links_in, read_plain_file, safe_join, write_file_atomic
from harness.validate import (  # noqa: F401  (MAX_JSON_BYTES, RESERVED_NAMES and TASK_NAME are read from here by publish)
    MAX_JSON_BYTES, RESERVED_NAMES, TASK_NAME, InvalidFile, is_number, load_valid, parse_json,
)

LEADERBOARD_VERSION = 1
N_HEADLINE = 6  # columns shown for a task whose results name no headline metrics
MAX_PLOT_BYTES = 5 * 2**20
MAX_PLOTS_PER_RUN = 50  # a results file cannot fill the disk with copies
FINDINGS_FILE = "findings.json"  # the findings matrix (harness.findings documents its fields)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MANIFEST = "assets/built.json"  # the asset files the builds wrote: the only files clean-up may delete
# no glob or pathspec characters (safe to hand to git and the hub), no "." or ".." component
ASSET_PATH = re.compile(r"assets(/(?!\.\.?(?:/|$|[^A-Za-z0-9_.-]))[A-Za-z0-9_.-]+)+")


class Row(BaseModel):
    """One model's result on one board, as stored in `<task>.json`."""

    model_config = ConfigDict(extra="ignore", protected_namespaces=())
    model: str
    model_revision: Optional[str] = None
    dtype: str
    quantization: Optional[str] = None
    n_params: Optional[int] = None
    metrics: dict[str, Metric]
    config_hash: str
    task_version: str
    harness_version: str = ""
    seed: int
    date: str = ""
    created_at: str = ""  # absent in boards built before merging existed; `date` stands in
    notes: list[str] = []
    artifacts: list[str] = []
    curves: dict[str, list[list[float]]] = {}  # per-layer curves by metric key: [[relative depth, value], ...]

    def key(self) -> tuple:
        return (self.model, self.dtype, self.quantization, self.seed)

    def when(self) -> str:
        return self.created_at or self.date


class Board(BaseModel):
    """The rows of one task version and config hash: only these are ranked together."""

    model_config = ConfigDict(extra="ignore")
    task_version: str
    config_hash: str
    config: dict[str, Any]
    default_config: Optional[dict[str, Any]] = None  # the task's defaults as the newest run recorded them
    headline_metrics: list[str]
    reference: Optional[Reference] = None
    finding: Optional[dict[str, Any]] = None  # the task's Finding as the newest run recorded it (harness.findings)
    rows: list[Row]


class ComparisonView(BaseModel):
    """One comparison across models as a board stores it: models as rows, `columns` as columns, paired differences."""

    model_config = ConfigDict(extra="ignore")
    task_version: str
    config_hash: str
    seed: int
    bootstrap: int
    created_at: str
    models: list[str]
    columns: list[str]
    metrics: dict[str, dict[str, Metric]]  # {model: {metric key: Metric}}
    differences: list[PairedDifference]
    notes: list[str] = []
    artifacts: list[str] = []

    def key(self) -> tuple:
        return (self.task_version, self.config_hash, tuple(self.models), self.seed, self.bootstrap)


class TaskBoards(BaseModel):
    """The file `<task>.json`: a task's description, paper, boards and comparisons across models."""

    model_config = ConfigDict(extra="ignore")
    task: str
    description: str = ""
    paper: str = ""
    boards: list[Board]
    comparisons: list[ComparisonView] = []
    leaderboard_version: int = LEADERBOARD_VERSION


@dataclass
class BuildReport:
    used: list[Path] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    tasks: list[str] = field(default_factory=list)
    written: set[str] = field(default_factory=set)  # asset files this build wrote, relative to --out
    removed: list[str] = field(default_factory=list)  # asset files clean-up deleted


def clean_metrics(metrics: dict[str, Metric]) -> tuple[dict[str, Metric], list[str]]:
    """The metrics whose value and interval are all numbers, and the names of the rest."""
    kept = {k: m for k, m in metrics.items() if all(is_number(x) for x in (m.value, m.ci_low, m.ci_high))}
    return kept, [k for k in metrics if k not in kept]


def clean_reference(reference: Reference | None) -> Reference | None:
    if reference is None:
        return None
    metrics = {model: {k: v for k, v in values.items() if is_number(v)} for model, values in reference.metrics.items()}
    return reference.model_copy(update={"metrics": metrics})


def clean_finding(raw: Any) -> dict[str, Any] | None:
    """A finding as a board stores it: checked by `harness.findings.parse_finding`, or None."""
    finding = parse_finding(raw)
    return finding.model_dump() if finding is not None else None


def json_safe(value: Any) -> Any:
    """A config as JSON can carry it: NaN and infinities (which JSON lacks) become their names."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_safe(v) for v in value]
    return value


def load_results(results_dir: Path, report: BuildReport) -> list[tuple[Path, Results]]:
    """Every valid results file under `results_dir`; the rest go to report.skipped with a reason."""
    found = []
    for path in json_files(results_dir, report):
        if any(part.startswith(".") for part in path.relative_to(results_dir).parts):
            continue  # staging folders of unfinished runs
        if path.relative_to(results_dir).parts[0] == COMPARE_DIR:
            continue  # comparisons across models: load_comparisons reads them
        if (path.parent.parent / f"{path.parent.name}.json").is_file():  # not with_suffix: versions have dots
            continue  # an artifact of the results file beside its folder (plots, samples, tables)
        try:
            results = load_valid(path, Results)
        except InvalidFile as e:
            report.skipped.append((path, f"not a valid results file ({e}; see harness validate)"))
            continue
        if results.limit is not None:
            report.skipped.append((path, f"partial run (--limit {results.limit}), not ranked"))
            continue
        found.append((path, results))
    return found


def json_files(folder: Path, report: BuildReport) -> list[Path]:
    """The .json files below `folder`, never through a symbolic link: each link met is skipped by name."""
    found = []
    for top, dirs, files in os.walk(folder, followlinks=False):
        for name in sorted(dirs + files):
            path = Path(top, name)
            if path.is_symlink():
                report.skipped.append((path, "a symbolic link, not followed"))
        dirs[:] = sorted(d for d in dirs if not Path(top, d).is_symlink())
        found += [Path(top, f) for f in files if f.endswith(".json") and not Path(top, f).is_symlink()]
    return sorted(found)


def copy_artifacts(path: Path, results: Results, results_dir: Path, out_dir: Path, report: BuildReport) -> list[str]:
    """Copy a result's plots into out_dir/assets so the page and a published copy can link them.

    Only PNG files inside the run's own folder (`<results file without .json>/`), regular
    files rather than links, with the PNG signature and at most MAX_PLOT_BYTES, are copied;
    the rest are refused by name in the report, as is every plot after the first
    MAX_PLOTS_PER_RUN. A copy is named by its content's digest, so two runs never overwrite
    each other's plots.
    """
    return copy_plots(path, results.task.name, results.artifacts, results_dir, out_dir, report)


def copy_plots(path: Path, task: str, artifacts: list[str], results_dir: Path, out_dir: Path, report: BuildReport) -> list[str]:
    """The copying behind `copy_artifacts`, for any file (results or comparison) whose plots live in its own folder."""
    run_dir = path.with_suffix("")
    copied: list[str] = []
    for rel in artifacts:
        if not rel.lower().endswith(".png"):
            continue  # samples and tables stay with the results
        first, _, rest = rel.partition("/")
        try:
            if len(copied) >= MAX_PLOTS_PER_RUN:
                raise UnsafePath(f"more than {MAX_PLOTS_PER_RUN} plots in one run")
            if first != run_dir.name or not rest or through_link(results_dir, run_dir):
                raise UnsafePath(f"not inside the run's folder {run_dir.name}/")
            data = read_plain_file(safe_join(run_dir, rest), MAX_PLOT_BYTES)
            if not data.startswith(PNG_SIGNATURE):
                raise UnsafePath("not a PNG image")
            name = re.sub(r"[^A-Za-z0-9._-]", "_", rest.rsplit("/", 1)[-1]).lstrip(".")
            dest = f"assets/{task}/{hashlib.sha256(data).hexdigest()[:16]}/{name}"
            write_file_atomic(safe_join(out_dir, dest), data)
            report.written.add(dest)
        except UnsafePath as e:
            report.skipped.append((path, f"plot {rel[:200]!r} not copied: {e}"))
            continue
        copied.append(dest)
    return copied


def through_link(root: Path, folder: Path) -> bool:
    """Whether any folder from below `root` down to `folder` is a symbolic link (so not really inside root)."""
    parts = folder.relative_to(root).parts
    return any(root.joinpath(*parts[: i + 1]).is_symlink() for i in range(len(parts)))


def row_for(path: Path, results: Results, artifacts: list[str], report: BuildReport) -> Row:
    return Row(
        model=results.model.spec,
        model_revision=results.model.resolved_revision,
        dtype=results.model.dtype,
        quantization=results.model.quantization,
        n_params=results.model.n_params,
        metrics=results.metrics,  # load_valid checked every number
        config_hash=results.task.config_hash,
        task_version=results.task.version,
        harness_version=results.harness_version,
        seed=results.seed,
        date=results.created_at[:10],
        created_at=results.created_at,
        notes=results.notes,
        artifacts=artifacts,
        curves=extract_curves(results.details),
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
        raise UsageError(f"--out {out_dir} holds files but no leaderboard (index.json): name a new or empty folder, or a leaderboards folder")
    links = links_in(out_dir, limit=1)
    if links:
        raise UsageError(f"--out {out_dir} holds a symbolic link ({links[0]}), which build never follows: "
                         "remove the link (or build into another folder) and build again")


def read_existing(out_dir: Path, report: BuildReport) -> dict[str, TaskBoards]:
    """The boards already in out_dir, to merge into; a file that is not one stops the build before any write."""
    tasks: dict[str, TaskBoards] = {}
    if not out_dir.is_dir():
        return tasks
    for path in sorted(out_dir.glob("*.json")):
        name = path.stem
        if name.lower() in RESERVED_NAMES or not TASK_NAME.fullmatch(name):
            continue
        try:
            info = TaskBoards.model_validate_json(read_plain_file(path, MAX_JSON_BYTES))
            if info.task != name:
                raise ValueError(f"it holds task {info.task[:60]!r}")
        except (UnsafePath, ValidationError, ValueError) as e:
            reason = str(e).splitlines()[0]
            raise UsageError(f"{path} is not a leaderboard build can merge into ({reason}): move it out of {out_dir} and build again") from None
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
        info.comparisons = [v for v in info.comparisons if comparison_is_clean(v) and all(is_asset(out_dir, a) for a in v.artifacts)]
        tasks[name] = info
    return tasks


def comparison_is_clean(view: ComparisonView) -> bool:
    """Every number of the comparison is fit to show, and it names each of its models once."""
    numbers = [x for per in view.metrics.values() for m in per.values() for x in (m.value, m.ci_low, m.ci_high)]
    numbers += [x for d in view.differences for x in (d.value, d.ci_low, d.ci_high)]
    return all(is_number(x) for x in numbers) and len(set(view.models)) == len(view.models) >= 2


def load_comparisons(results_dir: Path, report: BuildReport) -> list[tuple[Path, Comparison]]:
    """Every valid, complete comparison file in results_dir/_compare; the rest go to report.skipped with a reason."""
    folder = results_dir / COMPARE_DIR
    if not folder.is_dir() or folder.is_symlink():
        return []
    found = []
    for path in sorted(folder.glob("*.json")):
        if path.is_symlink():
            report.skipped.append((path, "a symbolic link, not followed"))
            continue
        try:
            comparison = load_valid(path, Comparison)
        except InvalidFile as e:
            report.skipped.append((path, f"not a valid comparison file ({e}; see harness validate)"))
            continue
        if comparison.limit is not None:
            report.skipped.append((path, f"partial run (--limit {comparison.limit}), not shown"))
            continue
        found.append((path, comparison))
    return found


def merge_comparison(tasks: dict[str, TaskBoards], path: Path, comparison: Comparison, results_dir: Path, out_dir: Path,
                     report: BuildReport) -> None:
    """Put one comparison beside its task's boards, in place of an older one of the same models, config and seed."""
    view = ComparisonView(
        task_version=comparison.task.version, config_hash=comparison.task.config_hash, seed=comparison.seed,
        bootstrap=comparison.bootstrap, created_at=comparison.created_at, models=[m.spec for m in comparison.models],
        columns=comparison.columns, metrics={m.spec: m.metrics for m in comparison.models},
        differences=comparison.differences, notes=comparison.notes,
    )
    if not comparison_is_clean(view):
        report.skipped.append((path, "comparison with numbers that are not finite or beyond the limit, or a model twice"))
        return
    name = comparison.task.name
    info = tasks.setdefault(name, TaskBoards(task=name, description=comparison.task.description, paper=comparison.task.paper, boards=[]))
    old = next((v for v in info.comparisons if v.key() == view.key()), None)
    if old is not None and old.created_at > view.created_at:
        report.skipped.append((path, f"older than the comparison already shown ({old.created_at[:40]!r})"))
        return
    view.artifacts = copy_plots(path, name, comparison.artifacts, results_dir, out_dir, report)
    info.comparisons = [v for v in info.comparisons if v.key() != view.key()] + [view]
    report.used.append(path)


def is_asset(out_dir: Path, rel: Any) -> bool:
    """Whether `rel` names a regular file (not a link) under out_dir/assets, in plain characters."""
    if not isinstance(rel, str) or not ASSET_PATH.fullmatch(rel):
        return False
    try:
        path = safe_join(out_dir, rel)
    except UnsafePath:
        return False
    return path.is_file() and not path.is_symlink()


def row_key(results: Results) -> tuple:
    """What makes two runs the same row: task, task version, config hash, model, dtype, quantization, seed."""
    return (results.task.name, results.task.version, results.task.config_hash,
            results.model.spec, results.model.dtype, results.model.quantization, results.seed)


def merge(tasks: dict[str, TaskBoards], path: Path, results: Results, results_dir: Path, out_dir: Path, report: BuildReport) -> None:
    """Put one run into its task's board: a new row, or in place of an older run of the same key."""
    name = results.task.name
    info = tasks.setdefault(name, TaskBoards(task=name, boards=[]))
    board = next((b for b in info.boards if (b.task_version, b.config_hash) == (results.task.version, results.task.config_hash)), None)
    if board is None:
        board = Board(task_version=results.task.version, config_hash=results.task.config_hash, config={}, headline_metrics=[], rows=[])
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
    from harness.leaderboard_page import render_page

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
            {"task": t["task"], "description": t["description"], "paper": t["paper"], "file": f"{t['task']}.json",
             "models": sorted({r["model"] for b in t["boards"] for r in b["rows"]}),
             **charts.get(t["task"], {})}
            for t in ordered
        ],
    }
    findings = matrix(list(tasks.values()))
    write_atomic(safe_join(out_dir, "index.json"), to_json(index))  # first, so an interrupted build still leaves a leaderboard folder
    for t in ordered:
        write_atomic(safe_join(out_dir, f"{t['task']}.json"), to_json(t))
    write_atomic(safe_join(out_dir, FINDINGS_FILE), to_json(findings))
    write_atomic(safe_join(out_dir, "index.html"), render_page(index, ordered, findings))
    prune_assets(out_dir, json.dumps([index, ordered]), report)
    report.tasks = sorted(tasks)
    return report


def read_manifest(out_dir: Path) -> set[str]:
    """The asset files earlier builds recorded as their own; an unreadable or odd manifest owns nothing."""
    try:
        data = parse_json(read_plain_file(out_dir / MANIFEST, MAX_JSON_BYTES).decode("utf-8"))
    except (UnsafePath, ValueError, RecursionError):
        return set()
    files = data.get("files") if isinstance(data, dict) else None
    return {f for f in files if isinstance(f, str) and ASSET_PATH.fullmatch(f) and f != MANIFEST} if isinstance(files, list) else set()


def prune_assets(out_dir: Path, linked_text: str, report: BuildReport) -> None:
    """Remove the plots a build wrote that no board links any more (those of rows a newer run replaced).

    Only files in the manifest (written by this build or recorded by an earlier one) are
    candidates, and each only while it is a regular file reached through real folders; a
    folder left empty by a deletion is removed (`rmdir` removes only empty ones). Anything
    else in `--out` (a file of yours, a plot a build did not write) stays. The manifest is
    rewritten with the owned files still linked.
    """
    linked = {m.group(0) for m in ASSET_PATH.finditer(linked_text)}
    owned = read_manifest(out_dir) | report.written
    for rel in sorted(owned - linked):
        try:
            path = safe_join(out_dir, rel)
        except UnsafePath:
            continue
        if through_link(out_dir, path.parent) or path.is_symlink() or not path.is_file():
            continue
        path.unlink()
        report.removed.append(rel)
        for folder in (path.parent, path.parent.parent):
            if folder != out_dir / "assets" and not folder.is_symlink():
                with contextlib.suppress(OSError):
                    folder.rmdir()  # only when empty
    kept = sorted(rel for rel in owned & linked if (out_dir / rel).is_file())
    if kept or (out_dir / MANIFEST).is_file():
        write_atomic(safe_join(out_dir, MANIFEST), to_json({"files": kept}))


def write_charts(out_dir: Path, tasks: list[TaskBoards], report: BuildReport) -> dict[str, dict[str, Any]]:
    """Draw each task's per-layer chart into out_dir/assets/charts/; per task that has one, its path and curves.

    A task's chart shows the rows its findings-matrix cells read (one per model), so the
    picture and the verdicts always describe the same runs. The entry, kept in index.json,
    is {"chart": path, "chart_solid": metric key, "chart_dashed": metric key, number or null}.
    """
    charts: dict[str, dict[str, Any]] = {}
    for info in tasks:
        if not info.boards:
            continue
        lines = [ChartLine(model, row.curves) for model, (_, row) in sorted(pick_rows(info).items())]
        board = next((b for b in info.boards if b.finding), info.boards[0])
        finding = board.finding or {}
        solid, dashed = choose_keys(lines, finding.get("effect"), finding.get("control"), board.headline_metrics)
        if solid is None:
            continue
        rel = f"assets/charts/{info.task}-layers.png"
        write_file_atomic(safe_join(out_dir, rel), layer_chart(info.task, lines, solid, dashed))
        report.written.add(rel)
        charts[info.task] = {"chart": rel, "chart_solid": solid, "chart_dashed": dashed}
    return charts


def to_json(data: Any) -> str:
    """Strict JSON (no NaN or Infinity, which browsers refuse), so every file parses anywhere."""
    return json.dumps(data, indent=2, allow_nan=False) + "\n"


def read_board(out_dir: Path, task: str) -> dict[str, Any]:
    path = out_dir / f"{task}.json"
    if not TASK_NAME.fullmatch(task) or task.lower() in RESERVED_NAMES or not path.is_file():
        known = sorted(p.stem for p in out_dir.glob("*.json") if p.stem.lower() not in RESERVED_NAMES)
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
