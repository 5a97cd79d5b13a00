"""Results as one table, for a notebook or a spreadsheet: a row per (model, task, metric).

`read_results(path)` takes a results file, a folder of them (found as `leaderboard build` finds
them: no link followed, staging folders, comparisons and artifacts left out, each file accepted
only whole by the validator) or a leaderboard folder (its `<task>.json` boards), and returns a
pandas DataFrame; `harness leaderboard export` writes the same table as CSV or Parquet. Runs with
`--limit` are kept (the `limit` column says so): a table is for looking, a board for ranking.
pandas is imported when a table is made (it comes with `datasets`), so reading boards needs no
more than reporting does. The pydantic reader of one results file is `harness.results.read_results`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from harness.errors import UsageError
from harness.report.boards import BuildReport, TaskBoards
from harness.report.inputs import json_files
from harness.results import Results
from harness.results.compare import COMPARE_DIR
from harness.results.validate import MAX_JSON_BYTES, InvalidFile, load_valid, task_name_ok
from harness.safepath import UnsafePath, read_plain_file

if TYPE_CHECKING:
    import pandas

COLUMNS = (
    "model", "task", "task_version", "metric", "value", "ci_low", "ci_high", "n", "higher_is_better",
    "config_hash", "seed", "dtype", "quantization", "limit", "bootstrap", "created_at", "source",
)  # fmt: skip
BOARD_FILES_OF_ANOTHER_KIND = ("index.json", "findings.json")
EXPORT_FORMATS = ("csv", "parquet")


def read_results(path: str | Path) -> pandas.DataFrame:
    """One row per (model, task, metric) of a results file, a folder of them, or a leaderboard folder.

    Columns: model, task, task_version, metric, value, ci_low, ci_high, n, higher_is_better,
    config_hash, seed, dtype, quantization, limit, bootstrap (None for boards, which keep no
    resample count), created_at and source (the file, relative to `path` for a folder).
    """
    import pandas

    path = Path(path)
    if path.is_file():
        rows = list(_file_rows(path, path.name))
    elif path.is_dir():
        rows = list(_board_rows(path) if _is_leaderboard(path) else _folder_rows(path))
    else:
        raise UsageError(f"no results file or folder at {path}: give a results .json, a folder of them or a leaderboard folder")
    return pandas.DataFrame(rows, columns=list(COLUMNS))


def export(path: str | Path, out: str | Path, fmt: str | None = None) -> int:
    """Write `read_results(path)` to `out` as CSV or Parquet (from the suffix unless `fmt`), atomically; the row count."""
    out = Path(out)
    fmt = fmt or out.suffix.removeprefix(".").lower()
    if fmt not in EXPORT_FORMATS:
        raise UsageError(f"cannot tell the format of {out}: name it .csv or .parquet, or pass --format csv|parquet")
    table = read_results(path)
    if out.is_dir():
        raise UsageError(f"{out} is a folder: give a file name such as results.{fmt}")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        table.to_csv(tmp, index=False) if fmt == "csv" else table.to_parquet(tmp, index=False)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return len(table)


def _is_leaderboard(folder: Path) -> bool:
    return (folder / "index.json").is_file() and not (folder / "index.json").is_symlink()


def _result_rows(results: Results, source: str) -> Iterator[dict[str, Any]]:
    for key, m in results.metrics.items():
        yield {
            "model": results.model.spec, "task": results.task.name, "task_version": results.task.version, "metric": key,
            "value": m.value, "ci_low": m.ci_low, "ci_high": m.ci_high, "n": m.n, "higher_is_better": m.higher_is_better,
            "config_hash": results.task.config_hash, "seed": results.seed, "dtype": results.model.dtype,
            "quantization": results.model.quantization, "limit": results.limit, "bootstrap": results.bootstrap,
            "created_at": results.created_at, "source": source,
        }  # fmt: skip


def _file_rows(path: Path, source: str) -> Iterator[dict[str, Any]]:
    try:
        results = load_valid(path, Results)
    except InvalidFile as e:
        raise UsageError(f"{path} is not a valid results file ({e}): check it with `harness validate {path}`") from None
    yield from _result_rows(results, source)


def _folder_rows(folder: Path) -> Iterator[dict[str, Any]]:
    """Every valid results file below `folder`; an invalid one is left out with a warning on stderr, as a build does."""
    import sys

    report = BuildReport()
    for path in json_files(folder, report):
        rel = path.relative_to(folder)
        if any(part.startswith(".") for part in rel.parts) or rel.parts[0] == COMPARE_DIR:
            continue  # staging folders of unfinished runs; comparisons across models
        if (path.parent.parent / f"{path.parent.name}.json").is_file():
            continue  # an artifact of the results file beside its folder
        try:
            yield from _result_rows(load_valid(path, Results), str(rel))
        except InvalidFile as e:
            report.skipped.append((path, f"not a valid results file ({e})"))
    for path, reason in report.skipped:
        print(f"skipped {path}: {reason}", file=sys.stderr)


def _board_rows(folder: Path) -> Iterator[dict[str, Any]]:
    """The rows of every board in a leaderboard folder (`<task>.json`), as `leaderboard build` wrote them."""
    for path in sorted(folder.glob("*.json")):
        if path.name in BOARD_FILES_OF_ANOTHER_KIND or not task_name_ok(path.stem) or path.is_symlink():
            continue
        try:
            info = TaskBoards.model_validate_json(read_plain_file(path, MAX_JSON_BYTES))
        except (UnsafePath, ValueError) as e:
            raise UsageError(
                f"{path} is not a leaderboard file ({str(e).splitlines()[0]}): rebuild it with `harness leaderboard build`"
            ) from None
        for board in info.boards:
            for row in board.rows:
                for key, m in row.metrics.items():
                    yield {
                        "model": row.model, "task": info.task, "task_version": board.task_version, "metric": key,
                        "value": m.value, "ci_low": m.ci_low, "ci_high": m.ci_high, "n": m.n,
                        "higher_is_better": m.higher_is_better, "config_hash": board.config_hash, "seed": row.seed,
                        "dtype": row.dtype, "quantization": row.quantization, "limit": None, "bootstrap": None,
                        "created_at": row.when(), "source": path.name,
                    }  # fmt: skip
