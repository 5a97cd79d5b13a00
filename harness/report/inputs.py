"""Results and comparison files as untrusted input: found without following links, each accepted
only whole when the one validator (`harness.results.validate`) passes it, and cleaned for display."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness.report.boards import BuildReport, ComparisonView
from harness.report.findings import parse_finding
from harness.results import Metric, Reference, Results
from harness.results.compare import COMPARE_DIR, Comparison
from harness.results.validate import InvalidFile, is_number, load_valid
from harness.safepath import entries


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
    """A finding as a board stores it: checked by `harness.report.findings.parse_finding`, or None."""
    finding = parse_finding(raw)
    if finding is None:
        return None
    return finding.model_dump(exclude_none=True, exclude={"facets"} if not finding.facets else None)


def results_paths(results_dir: Path, report: BuildReport) -> list[Path]:
    """The .json files under `results_dir` that can be results files, found without following links."""
    found = []
    for path in json_files(results_dir, report):
        if any(part.startswith(".") for part in path.relative_to(results_dir).parts):
            continue  # staging folders of unfinished runs
        if path.relative_to(results_dir).parts[0] == COMPARE_DIR:
            continue  # comparisons across models: load_comparisons reads them
        if (path.parent.parent / f"{path.parent.name}.json").is_file():  # not with_suffix: versions have dots
            continue  # an artifact of the results file beside its folder (plots, samples, tables)
        found.append(path)
    return found


def load_results(results_dir: Path, report: BuildReport) -> list[tuple[Path, Results]]:
    """Every valid, complete results file under `results_dir`; the rest go to report.skipped with a reason."""
    found = []
    for path in results_paths(results_dir, report):
        results = accepted(path, Results, report, "results", "not ranked")
        if results is not None:
            found.append((path, results))
    return found


def accepted(path: Path, kind: type, report: BuildReport, noun: str, partial: str) -> Any:
    """The file as `kind` when the validator passes it whole and it is a complete run; else None, with the reason in `report`."""
    try:
        item = load_valid(path, kind)
    except InvalidFile as e:
        report.skipped.append((path, f"not a valid {noun} file ({e}; see harness validate)"))
        return None
    if item.limit is not None:
        report.skipped.append((path, f"partial run (--limit {item.limit}), {partial}"))
        return None
    return item


def json_files(folder: Path, report: BuildReport) -> list[Path]:
    """The .json files below `folder`, never through a symbolic link: each link met is skipped by name."""
    found = []
    for path, link in entries(folder):
        if link:
            report.skipped.append((path, "a symbolic link, not followed"))
        elif path.name.endswith(".json") and not path.is_dir():
            found.append(path)
    return sorted(found)


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
        comparison = accepted(path, Comparison, report, "comparison", "not shown")
        if comparison is not None:
            found.append((path, comparison))
    return found
