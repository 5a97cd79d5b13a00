"""The plots a leaderboard shows: copied only as regular PNG files from inside a run's own folder,
drawn per-layer charts, and the manifest (`assets/built.json`) of the files a build wrote, the only
files its clean-up may delete."""

from __future__ import annotations

import contextlib
import hashlib
import re
from pathlib import Path
from typing import Any

from harness.report.boards import BuildReport, TaskBoards, to_json
from harness.report.charts import ChartLine, choose_keys, layer_chart
from harness.report.findings import pick_rows
from harness.results import Results, write_atomic
from harness.results.validate import MAX_JSON_BYTES, parse_json
from harness.safepath import UnsafePath, read_plain_file, safe_join, write_file_atomic

MAX_PLOT_BYTES = 5 * 2**20
MAX_PLOTS_PER_RUN = 50  # a results file cannot fill the disk with copies
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MANIFEST = "assets/built.json"  # the asset files the builds wrote: the only files clean-up may delete
# no glob or pathspec characters (safe to hand to git and the hub), no "." or ".." component
ASSET_PATH = re.compile(r"assets(/(?!\.\.?(?:/|$|[^A-Za-z0-9_.-]))[A-Za-z0-9_.-]+)+")


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


def is_asset(out_dir: Path, rel: Any) -> bool:
    """Whether `rel` names a regular file (not a link) under out_dir/assets, in plain characters."""
    if not isinstance(rel, str) or not ASSET_PATH.fullmatch(rel):
        return False
    try:
        path = safe_join(out_dir, rel)
    except UnsafePath:
        return False
    return path.is_file() and not path.is_symlink()


def read_manifest(out_dir: Path) -> set[str]:
    """The asset files earlier builds recorded as their own; an unreadable or odd manifest owns nothing."""
    try:
        data = parse_json(read_plain_file(out_dir / MANIFEST, MAX_JSON_BYTES).decode("utf-8"))
    except (UnsafePath, ValueError, RecursionError):
        return set()
    files = data.get("files") if isinstance(data, dict) else None
    return (
        {f for f in files if isinstance(f, str) and ASSET_PATH.fullmatch(f) and f != MANIFEST}
        if isinstance(files, list)
        else set()
    )


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
