"""Comparisons: one file across the models of an invocation, for a task that declares `comparative = True`.

A comparative finding ("models trained on code beat models trained on text") is a claim about
differences between models, so its interval must be the interval of a difference measured on
the same items: a *paired* bootstrap, resampling items and taking each model's score on the
same resampled items. Two independent intervals that overlap say little about the difference.

The per-item scores come from each model's results file, never from the task's memory, so a
comparison can be rebuilt from reused results. The contract a comparative task fulfils in
`TaskResult.details`:

- `details["items"][table] = {"id": [item ids], "<metric key>": [one number per item], ...}`:
  each column holds the per-item values whose mean is the metric of that key (0/1 correctness,
  a log-probability...); rows are paired across models by `(table, id)`.
- `details["item_units"][table] = [one unit label per id]` (optional): the unit each item
  belongs to (a bAbI story holds several questions; an author several facts). Items of one
  unit are not independent, so the paired bootstrap resamples whole units and `n` counts
  them; without it every item is its own unit.
- `details["pooled"][metric key] = [metric keys]` (optional): a metric that is the mean over the
  rows of the listed columns pooled (e.g. `fld_acc` over every FLD sub-task).
- `TaskResult.curves` (optional): per-layer curves (`harness.results.Curve`, a probe's accuracy
  by layer); the comparison draws each `plot` with one colour per model and one line style per
  `label`.

The comparison file `<output_dir>/_compare/<task>-<hash>.json` (no model's folder can be named
`_compare`: model slugs never start with "_") is a pydantic model like the results file, with
a generated JSON Schema (`python -m harness.results.compare`), a Markdown table beside it and its plots
in the folder of the same name.
"""

from __future__ import annotations

import itertools
import json
import math
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal, Optional, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

import harness
from harness.results import Experiment, Metric, TaskRecord, config_hash, write_atomic
from harness.results.records import json_schema as results_schema
from harness.results.stats import bootstrap_ci
from harness.results.validate import refuse_invalid

SCHEMA_VERSION = 1
SCHEMA_PATH = Path(__file__).parent / "schema" / "comparison.v1.schema.json"
COMPARE_DIR = "_compare"
TIMING_FIELDS = ("created_at",)  # the only field allowed to differ between two comparisons of one seed


class ComparedModel(BaseModel):
    """One model of the comparison: which weights, which results file, its own metrics with intervals."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())
    spec: str
    fingerprint: Optional[str] = None
    results_file: str = Field(
        description="the model's results file, relative to the output folder (for people; never opened from here)"
    )
    reused: bool = False
    metrics: dict[str, Metric]


class PairedDifference(BaseModel):
    """metric(model_a) - metric(model_b) on the same items, with a paired 95% bootstrap interval over items."""

    model_config = ConfigDict(extra="forbid")
    model_a: str
    model_b: str
    metric: str
    value: float
    ci_low: float
    ci_high: float
    n: int = Field(ge=0, description="items both models were scored on")
    higher_is_better: Optional[bool] = True


class CurveLine(BaseModel):
    """One model's line in a comparison plot."""

    model_config = ConfigDict(extra="forbid")
    model: str
    label: str
    x: list[float]
    y: list[float]


class Comparison(BaseModel):
    """Everything one comparison across models holds; the unit a leaderboard comparison table is built from."""

    model_config = ConfigDict(extra="forbid")
    schema_version: Literal[1] = SCHEMA_VERSION
    kind: Literal["comparison"] = "comparison"
    harness_version: str
    task: TaskRecord
    seed: int
    limit: Optional[int] = None
    bootstrap: int = Field(ge=1)
    created_at: str
    columns: list[str] = Field(
        description="the metric keys a table shows, in order (the task's headline metrics that were compared)"
    )
    models: list[ComparedModel] = Field(min_length=2)
    differences: list[PairedDifference]
    plots: dict[str, list[CurveLine]] = Field(default_factory=dict, description="per-model curves, one plot each")
    notes: list[str] = Field(default_factory=list)
    artifacts: list[str] = Field(default_factory=list, description="plots, relative to the comparison file")


def json_schema() -> dict[str, Any]:
    return results_schema(Comparison, "comparison")


# Reading the per-item tables of a results file (untrusted: checked, never trusted) -------------


class ItemTableError(ValueError):
    """A results file's details["items"] or details["pooled"] that does not follow the contract."""


def _number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def item_columns(details: dict[str, Any]) -> dict[str, dict[tuple, float]]:
    """{metric key: {(table, item id): value}} from `details` (items and pooled); ItemTableError if malformed."""
    tables = details.get("items")
    if not isinstance(tables, dict):
        raise ItemTableError('details["items"] is missing or not a mapping of tables')
    columns: dict[str, dict[tuple, float]] = {}
    for table, rows in tables.items():
        if not isinstance(rows, dict) or not isinstance(rows.get("id"), list):
            raise ItemTableError(f"items table {str(table)[:60]!r} has no id list")
        ids = rows["id"]
        if not all(isinstance(i, str) for i in ids) or len(set(ids)) != len(ids):
            raise ItemTableError(f"items table {str(table)[:60]!r}: ids must be unique strings")
        for key, values in rows.items():
            if key == "id":
                continue
            if not isinstance(values, list) or len(values) != len(ids) or not all(_number(v) for v in values):
                raise ItemTableError(f"items column {str(key)[:60]!r}: one finite number per id expected")
            if key in columns:
                raise ItemTableError(f"items column {str(key)[:60]!r} appears in two tables")
            columns[key] = {(table, i): float(v) for i, v in zip(ids, values)}
    pooled = details.get("pooled", {})
    if not isinstance(pooled, dict):
        raise ItemTableError('details["pooled"] is not a mapping')
    for key, parts in pooled.items():
        if key in columns or not isinstance(parts, list) or not parts or any(p not in columns for p in parts):
            raise ItemTableError(f"pooled metric {str(key)[:60]!r} must list item columns")
        columns[key] = {(p, *row): v for p in parts for row, v in columns[p].items()}
    return columns


def item_units(details: dict[str, Any]) -> dict[tuple, str]:
    """{(table, item id): unit} from `details["item_units"]`; items without one are their own unit."""
    units = details.get("item_units", {})
    tables = details.get("items", {})
    if not isinstance(units, dict):
        raise ItemTableError('details["item_units"] is not a mapping of tables')
    out: dict[tuple, str] = {}
    for table, labels in units.items():
        ids = tables.get(table, {}).get("id") if isinstance(tables.get(table), dict) else None
        if (
            not isinstance(ids, list)
            or not isinstance(labels, list)
            or len(labels) != len(ids)
            or not all(isinstance(u, str) and len(u) <= 500 for u in labels)
        ):
            raise ItemTableError(f"item_units {str(table)[:60]!r}: one string per id of its items table expected")
        out.update({(table, i): u for i, u in zip(ids, labels)})
    return out


def paired_difference(
    a: dict[Any, float], b: dict[Any, float], seed: int, n_boot: int, units: dict[Any, str] | None = None
) -> tuple[float, float, float, int]:
    """(mean(a - b), ci_low, ci_high, n) over the items both have, resampling items (the paired bootstrap).

    units: {item key: unit} where items share one (keys are (table, id), and for a pooled
    metric (column, table, id): its last two parts); whole units are resampled and n counts them."""
    common = [k for k in a if k in b]
    if not common:
        raise ItemTableError("the two models share no scored item")
    diff = np.array([a[k] - b[k] for k in common])
    if not units:
        value, lo, hi = bootstrap_ci(diff, seed=seed, n_boot=n_boot)
        return value, lo, hi, len(common)
    labels = [units.get(tuple(k[-2:]), repr(tuple(k[-2:]))) for k in common]
    value, lo, hi = bootstrap_ci(diff, seed=seed, n_boot=n_boot, units=labels)
    return value, lo, hi, len(set(labels))


def curves_of(results: Any) -> dict[str, list[dict[str, Any]]]:
    """A run's curves (`Results.curves`) by plot (a curve's `plot`, else its metric), finite points only."""
    out: dict[str, list[dict[str, Any]]] = {}
    for curve in results.curves:
        points = [(L, v) for L, v in zip(curve.layers, curve.values) if _number(v)]
        if points:
            out.setdefault(curve.plot or curve.metric, []).append(
                {
                    "label": curve.label or curve.metric,
                    "x": [L for L, _ in points],
                    "y": [v for _, v in points],
                    "xlabel": curve.xlabel,
                    "ylabel": curve.ylabel,
                }
            )
    return out


# Building ----------------------------------------------------------------------------------------


def comparison_path(output_dir: Path, first: Any, models: Sequence[str], bootstrap: int) -> Path:
    """_compare/<task>-<hash of task version, config hash, models, seed, limit, resamples>.json, from one model's Results."""
    key = {
        "version": first.task.version,
        "config": first.task.config_hash,
        "models": list(models),
        "seed": first.seed,
        "limit": first.limit,
        "bootstrap": bootstrap,
    }
    return output_dir / COMPARE_DIR / f"{first.task.name}-{config_hash(key)[:8]}.json"


def compare(
    runs: Sequence[Any], seed: int, n_boot: int, headline: Sequence[str] | None = None
) -> tuple[list[str], list[str], list[PairedDifference], list[str]]:
    """(compared keys, table columns, paired differences of every pair, notes) of several models' Results.

    A key is compared when every model has it as a metric and as a per-item column; pairs are
    (earlier model, later model) in the order given, their difference earlier minus later.
    """
    notes: list[str] = []
    columns: list[dict[str, dict[Any, float]]] = []
    units: list[dict[tuple, str]] = []
    for run in runs:
        try:
            columns.append(item_columns(run.results.details))
            units.append(item_units(run.results.details))
        except ItemTableError as e:
            raise ItemTableError(f"{run.model}: {e}") from None
    first = runs[0].results
    keys = [k for k in first.metrics if all(k in c and k in r.results.metrics for c, r in zip(columns, runs))]
    if not keys:
        raise ItemTableError("no metric has per-item scores in every model's results")
    shown = [k for k in (headline or []) if k in keys] or keys
    differences = []
    for (i, a), (j, b) in itertools.combinations(enumerate(runs), 2):
        for key in keys:
            if set(columns[i][key]) != set(columns[j][key]):
                notes.append(f"{key}: {a.model} and {b.model} were scored on different items; only the shared ones are paired")
            if units[i] != units[j]:
                notes.append(
                    f"{key}: {a.model} and {b.model} group their items into units differently; {a.model}'s units are used"
                )
            value, lo, hi, n = paired_difference(columns[i][key], columns[j][key], seed, n_boot, units[i])
            differences.append(
                PairedDifference(
                    model_a=a.model,
                    model_b=b.model,
                    metric=key,
                    value=value,
                    ci_low=lo,
                    ci_high=hi,
                    n=n,
                    higher_is_better=first.metrics[key].higher_is_better,
                )
            )
    return keys, shown, differences, notes


def write_comparison(task: Any, config: Any, runs: Sequence[Any], spec: Any) -> Path:
    """Compare the runs (`harness.run.runner.Outcome`s of one task) and write the JSON, Markdown table and plots.

    Called by the runner after every model of the invocation ran (reused results included).
    The runs must be one experiment: the same task version, config and seed. The file is named
    and filled from the results files alone (`config` is what the runner passes; the results
    record its hash), so it is the same whether the runs were fresh or reused.
    """
    if len({Experiment.of(r.results).setup() for r in runs}) != 1:
        raise ValueError("the runs of a comparison must share task version, config, seed and limit")
    if len({r.model for r in runs}) != len(runs):
        raise ValueError("a comparison needs distinct models")
    path = comparison_path(spec.output_dir, runs[0].results, [r.model for r in runs], spec.bootstrap)
    keys, shown, differences, notes = compare(runs, spec.seed, spec.bootstrap, task.headline_metrics)
    plots: dict[str, list[CurveLine]] = {}
    for run in runs:
        for plot, lines in curves_of(run.results).items():
            plots.setdefault(plot, []).extend(CurveLine(model=run.model, label=c["label"], x=c["x"], y=c["y"]) for c in lines)
    first = runs[0].results
    comparison = Comparison(
        harness_version=harness.__version__,
        task=first.task,
        seed=first.seed,
        limit=first.limit,
        bootstrap=spec.bootstrap,
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        columns=shown,
        models=[
            ComparedModel(
                spec=r.model,
                fingerprint=r.results.model.fingerprint,
                results_file=_relative(r.path, spec.output_dir),
                reused=r.reused,
                metrics={k: r.results.metrics[k] for k in keys},
            )
            for r in runs
        ],
        differences=differences,
        plots=plots,
        notes=notes,
    )
    refuse_invalid(comparison, path, f"{first.task.name}: the comparison of {len(runs)} models")
    axes = {plot: lines[0] for run in runs for plot, lines in curves_of(run.results).items()}
    comparison.artifacts = draw_plots(comparison, path.with_suffix(""), axes)
    write_atomic(path.with_suffix(".md"), markdown(comparison))
    write_atomic(path, comparison.model_dump_json(indent=2) + "\n")  # last: its presence means the comparison is complete
    return path


def _relative(path: Path, root: Path) -> str:
    try:
        return Path(path).resolve().relative_to(Path(root).resolve()).as_posix()
    except ValueError:
        return Path(path).name


def draw_plots(comparison: Comparison, folder: Path, axes_of: dict[str, dict[str, Any]]) -> list[str]:
    """One PNG per plot: a colour per model, a line style per label; names relative to the comparison file."""
    from matplotlib.figure import Figure

    if not comparison.plots:
        return []
    folder.mkdir(parents=True, exist_ok=True)
    models = [m.spec for m in comparison.models]
    styles = ["-", ":", "--", "-."]
    written = []
    for k, (plot, lines) in enumerate(sorted(comparison.plots.items())):
        labels = sorted({line.label for line in lines})
        fig = Figure(figsize=(6, 3.5))
        ax = fig.subplots()
        for line in lines:
            ax.plot(
                line.x,
                line.y,
                marker="o",
                ms=3,
                color=f"C{models.index(line.model) % 10}",
                ls=styles[labels.index(line.label) % len(styles)],
                label=f"{line.model} ({line.label})",
            )
        info = axes_of.get(plot, {})
        ax.set_title(plot), ax.set_xlabel(info.get("xlabel", "")), ax.set_ylabel(info.get("ylabel", ""))
        ax.legend(fontsize=6)
        name = f"plot{k}.png"
        fig.savefig(folder / name, dpi=120, bbox_inches="tight", metadata={"Software": None})
        written.append(f"{folder.name}/{name}")
    return written


# Reading and showing -----------------------------------------------------------------------------


def fmt(value: float, lo: float, hi: float, signed: bool = False) -> str:
    sign = "+" if signed else ""
    return f"{value:{sign}.3f} [{lo:{sign}.3f}, {hi:{sign}.3f}]"


def markdown(comparison: Comparison) -> str:
    """Models as rows and the compared metrics as columns (value [95% CI]), then every pair's paired difference."""
    cols = comparison.columns
    head = lambda first: [f"| {first} | " + " | ".join(cols) + " |", "|" + " --- |" * (len(cols) + 1)]  # noqa: E731
    lines = [
        f"# {comparison.task.name} {comparison.task.version}: {len(comparison.models)} models",
        "",
        f"config {comparison.task.config_hash}, seed {comparison.seed}, {comparison.bootstrap} bootstrap resamples; "
        "values with their 95% interval.",
        "",
        *head("model"),
    ]
    for m in comparison.models:
        cells = [fmt(m.metrics[c].value, m.metrics[c].ci_low, m.metrics[c].ci_high) if c in m.metrics else "-" for c in cols]
        lines.append(f"| {m.spec} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Paired differences (first minus second model, same items and shots; 95% paired bootstrap interval):",
        "",
        *head("pair"),
    ]
    pairs = dict.fromkeys((d.model_a, d.model_b) for d in comparison.differences)
    for a, b in pairs:
        by_key = {d.metric: d for d in comparison.differences if (d.model_a, d.model_b) == (a, b)}
        cells = [fmt(by_key[c].value, by_key[c].ci_low, by_key[c].ci_high, signed=True) if c in by_key else "-" for c in cols]
        lines.append(f"| {a} − {b} | " + " | ".join(cells) + " |")
    if comparison.notes:
        lines += ["", *(f"- {n}" for n in comparison.notes)]
    if comparison.artifacts:
        lines += ["", *(f"![{a}]({a})" for a in comparison.artifacts)]
    return "\n".join(lines) + "\n"


def read_comparison(path: Path) -> Comparison:
    return Comparison.model_validate_json(path.read_text())


if __name__ == "__main__":
    print(json.dumps(json_schema(), indent=2))
