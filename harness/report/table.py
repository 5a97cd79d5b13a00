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

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from harness.errors import UsageError
from harness.report.boards import BuildReport
from harness.report.inputs import results_paths
from harness.results import Metric, Results, write_atomic
from harness.results.validate import InvalidFile, load_valid

if TYPE_CHECKING:
    import pandas

COLUMNS = (
    "model", "task", "task_version", "metric", "value", "ci_low", "ci_high", "n", "higher_is_better",
    "config_hash", "seed", "dtype", "quantization", "limit", "bootstrap", "created_at", "source",
)  # fmt: skip
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
    write_atomic(out, table.to_csv(index=False) if fmt == "csv" else table.to_parquet(index=False))
    return len(table)


def _is_leaderboard(folder: Path) -> bool:
    return (folder / "index.json").is_file() and not (folder / "index.json").is_symlink()


def _metric_rows(metrics: dict[str, Metric], **fields: Any) -> Iterator[dict[str, Any]]:
    """One row per metric, each with the run's `fields`."""
    for key, m in metrics.items():
        yield {**fields, "metric": key, "value": m.value, "ci_low": m.ci_low, "ci_high": m.ci_high, "n": m.n,
               "higher_is_better": m.higher_is_better}  # fmt: skip


def _result_rows(results: Results, source: str) -> Iterator[dict[str, Any]]:
    yield from _metric_rows(
        results.metrics, model=results.model.spec, task=results.task.name, task_version=results.task.version,
        config_hash=results.task.config_hash, seed=results.seed, dtype=results.model.dtype,
        quantization=results.model.quantization, limit=results.limit, bootstrap=results.bootstrap,
        created_at=results.created_at, source=source,
    )  # fmt: skip


def _file_rows(path: Path, source: str) -> Iterator[dict[str, Any]]:
    try:
        results = load_valid(path, Results)
    except InvalidFile as e:
        raise UsageError(f"{path} is not a valid results file ({e}): check it with `harness validate {path}`") from None
    yield from _result_rows(results, source)


def _folder_rows(folder: Path) -> Iterator[dict[str, Any]]:
    """Every valid results file below `folder`, found as a build finds them; an invalid one is left out
    with a line on stderr, as a build does."""
    report = BuildReport()
    for path in results_paths(folder, report):
        try:
            yield from _result_rows(load_valid(path, Results), str(path.relative_to(folder)))
        except InvalidFile as e:
            report.skipped.append((path, f"not a valid results file ({e})"))
    for path, reason in report.skipped:
        print(f"skipped {path}: {reason}", file=sys.stderr)


def _board_rows(folder: Path) -> Iterator[dict[str, Any]]:
    """The rows of every board in a leaderboard folder, read and cleaned as a build reads the boards it merges into."""
    from harness.report.build import read_existing

    for name, info in read_existing(folder, BuildReport()).items():
        for board in info.boards:
            for row in board.rows:
                yield from _metric_rows(
                    row.metrics, model=row.model, task=info.task, task_version=board.task_version,
                    config_hash=board.config_hash, seed=row.seed, dtype=row.dtype, quantization=row.quantization,
                    limit=None, bootstrap=None, created_at=row.when(), source=f"{name}.json",
                )  # fmt: skip
