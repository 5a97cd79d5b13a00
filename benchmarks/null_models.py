"""Null models: does any finding "hold" on a model that learnt nothing?

    python -m benchmarks.null_models [--models smollm2-135m gemma3-270m] [--tasks all] [--preset quick] [--out null-models]

For each bundled model, a copy with the same architecture and tokenizer and random weights
(`benchmarks/random_model.py`, seed 0) runs every task through the CLI, and each task's
finding is judged by the leaderboard's own rule (`harness.report.findings.verdict`). The
Markdown table it prints (task x null model: the headline verdict, then each facet's) is the
one in the README. Random weights know no calendar, arithmetic or language, so a facet that
"holds" here would mean the task's effect or its control is wrong; the behaviour facet may
only read "does not hold" or "too few units" too, since chance is what such a model scores.

It runs the tasks in full (the quick preset: about 15 minutes per model on two CPU cores);
tests/tasks/test_circles.py, tests/tasks/test_number_helix.py and tests/tasks/test_polysemy_sae.py run the
fast versions on tiny random models.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from benchmarks.random_model import build


def random_copy(alias: str, out: Path) -> Path:
    """The bundled model's architecture and tokenizer with random weights, in `out/<alias>-random`."""
    from harness.engine.bundled import BUNDLED
    from harness.engine.gguf_cache import gguf_to_folder

    folder, _ = gguf_to_folder(BUNDLED[alias]())
    target = out / f"{alias}-random"
    return target if (target / "config.json").is_file() else build(folder, target, seed=0)


def verdicts(results_dir: Path) -> dict[str, dict[str, str]]:
    """{task: {"headline": verdict, facet kind: verdict, ...}} of every results file under `results_dir`."""
    from harness.report.findings import parse_finding, verdict
    from harness.results.records import read_results

    out: dict[str, dict[str, str]] = {}
    for path in sorted(results_dir.rglob("*.json")):
        try:
            results = read_results(path)
        except Exception:  # noqa: BLE001 - samples, comparisons and other files beside the results
            continue
        cell = verdict(parse_finding(results.task.finding), results.metrics, results.unmeasured)
        row = {"headline": cell.verdict}
        for facet in cell.facets:
            row[facet.kind] = facet.verdict if facet.kind not in row else f"{row[facet.kind]}; {facet.verdict}"
        out[results.task.name] = row
    return out


def table(rows: dict[str, dict[str, dict[str, str]]]) -> str:
    """Markdown: one row per task, one column per null model, each cell the headline and its facets."""
    models = list(rows)
    tasks = sorted({t for per_model in rows.values() for t in per_model})
    lines = ["| task | " + " | ".join(f"{m} (random weights)" for m in models) + " |", "|---|" + "---|" * len(models)]
    for task in tasks:
        cells = []
        for m in models:
            row = rows[m].get(task)
            if row is None:
                cells.append("not run")
                continue
            facets = ", ".join(f"{k}: {v}" for k, v in row.items() if k != "headline")
            cells.append(f"**{row['headline']}** ({facets})")
        lines.append(f"| {task} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["smollm2-135m", "gemma3-270m"])
    parser.add_argument("--tasks", nargs="+", default=["all"], help="task names, or all")
    parser.add_argument("--preset", default="quick")
    parser.add_argument("--out", type=Path, default=Path("null-models"))
    args = parser.parse_args()
    rows = {}
    for alias in args.models:
        folder = random_copy(alias, args.out)
        results = args.out / "results" / alias
        tasks = [arg for name in args.tasks for arg in ("--task", name)]
        subprocess.run(
            [
                sys.executable,
                "-m",
                "harness",
                "run",
                "--model",
                str(folder),
                *tasks,
                "--preset",
                args.preset,
                "--output-dir",
                str(results),
                "--no-progress",
            ],
            check=True,
        )
        rows[alias] = verdicts(results)
    print(table(rows))


if __name__ == "__main__":
    main()
