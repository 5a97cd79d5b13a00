"""code_vs_language on both bundled models in one invocation (acceptance criterion 9): two results files, one comparison.

Runs through `harness.run.cli.main` in-process, so the task is registered by importing it (its
entry point lives in pyproject.toml). No accuracy threshold: at this size both models are
near chance; the test checks that the run finishes on CPU within the spec's 10 minutes and
that the comparison pairs the two models on the same items.
"""

from __future__ import annotations

import time

import pytest

import tasks.code_vs_language  # noqa: F401  registers the task in this process
from harness.results import read_results
from harness.results.compare import read_comparison
from harness.results.validate import validate_file
from harness.run.cli import main

pytestmark = pytest.mark.slow


def test_both_bundled_models_fld_gen_and_babi_gen_1_in_one_invocation(tmp_path, capsys):
    start = time.perf_counter()
    code = main(
        [
            "run",
            "--model",
            "smollm2-135m",
            "--model",
            "gemma3-270m",
            "--task",
            "code_vs_language",
            "--task-arg",
            "subtasks=fld_gen,babi_gen_1",
            "--task-arg",
            "n_items=9",
            "--output-dir",
            str(tmp_path),
            "--no-progress",
        ]
    )
    seconds = time.perf_counter() - start
    assert code == 0, capsys.readouterr().err
    files = sorted(p for p in tmp_path.rglob("*.json") if "_compare" not in p.parts and p.parent.name != p.stem)
    results = [read_results(p) for p in files]
    assert sorted(r.model.spec for r in results) == ["gemma3-270m", "smollm2-135m"]
    for r in results:
        assert {"fld_acc", "babi_acc", "format_rate", "fld_gen_acc", "babi_gen_1_acc"} <= set(r.metrics)
        assert r.metrics["fld_gen_acc"].n == r.task.config["n_items"]
    comparisons = list((tmp_path / "_compare").glob("code_vs_language-*.json"))
    assert len(comparisons) == 1 and validate_file(comparisons[0]) == []
    comparison = read_comparison(comparisons[0])
    assert [m.spec for m in comparison.models] == ["smollm2-135m", "gemma3-270m"]
    assert {d.metric for d in comparison.differences} >= {"fld_acc", "babi_acc", "format_rate"}
    print(comparisons[0].with_suffix(".md").read_text())
    print(f"wall time {seconds:.0f} s")
    assert seconds < 600
