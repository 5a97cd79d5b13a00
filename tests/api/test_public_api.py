"""The public API is the one the built-in tasks use, and it documents itself."""

from __future__ import annotations

import ast
import dataclasses
import json
import re
import sys
from pathlib import Path

import pytest

import harness
from harness.api.registry import all_tasks
from harness.api.task import describe_options
from harness.run.cli import describe_task, main

ROOT = Path(__file__).parents[2]
NUMERIC = {"numpy", "torch", "scipy", "sklearn", "probes", "__future__"}


def imports(path: Path) -> list[tuple[str, list[str], int]]:
    """(module, imported names, line) of every import in a file."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            out += [(alias.name, [], node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            out.append((node.module or "", [a.name for a in node.names], node.lineno))
    return out


def test_tasks_import_only_what_a_plugin_can_import():
    bad = []
    for path in sorted((ROOT / "tasks").rglob("*.py")):
        for module, names, line in imports(path):
            if module.startswith("harness."):
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
            elif module == "harness":
                bad += [
                    f"{path.relative_to(ROOT)}:{line} imports harness.{n} (not public)" for n in names if n not in harness.__all__
                ]
    assert not bad, "\n".join(bad)


def test_probes_import_only_numeric_libraries_and_the_standard_library():
    bad = []
    for path in sorted((ROOT / "probes").rglob("*.py")):
        for module, _, line in imports(path):
            root = module.split(".")[0]
            if root not in NUMERIC and root not in sys.stdlib_module_names:
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    assert not bad, "\n".join(bad)


def test_no_task_runs_the_model_itself():
    """Forward passes, hooks, batch sizers and generation loops live in the engine, behind the context."""
    forbidden = re.compile(r"register_forward|BatchSizer|make_batches|StopForward|\.hf\(|\.hf\.generate|\.hf\.forward")
    hits = [
        f"{p.relative_to(ROOT)}:{i}: {line.strip()}"
        for p in sorted((ROOT / "tasks").rglob("*.py"))
        for i, line in enumerate(p.read_text().splitlines(), 1)
        if forbidden.search(line)
    ]
    assert not hits, "\n".join(hits)


def test_every_public_name_has_a_docstring():
    undocumented = [
        name
        for name in harness.__all__
        if not name.startswith("__") and callable(getattr(harness, name)) and not (getattr(harness, name).__doc__ or "").strip()
    ]
    assert not undocumented


@pytest.mark.parametrize("name", sorted(n for n, t in all_tasks().items() if t.__module__.startswith("tasks.")))
def test_every_option_of_every_task_is_described(name):
    task = all_tasks()[name]
    rows = describe_options(task)
    assert rows, f"{name} has no options"
    missing = [r.name for r in rows if not r.help]
    assert not missing, f"{name}: options without a description: {missing}"
    text = describe_task(task)
    for field in dataclasses.fields(task.Config):
        assert f"  {field.name}  (" in text
    assert task.metric_descriptions, f"{name} describes none of its metrics"
    assert "metrics (each with" in text


def test_list_task_prints_options_types_and_defaults(capsys):
    assert main(["list", "multiplication_digits"]) == 0
    out = capsys.readouterr().out
    assert "cells  (list of str, default 2x2,3x3,4x4,5x5)" in out
    assert "probe_layers  (all or list of int, default all)" in out
    assert "digit lengths n x m of a and b" in out
    assert main(["list", "no_such_task"]) == 2


def valid_results() -> dict:
    from harness.results import Environment, Metric, ModelRecord, Results, TaskRecord, Timing

    return json.loads(
        Results(
            harness_version="0",
            task=TaskRecord(name="t", version="1", config={}, config_hash="h"),
            model=ModelRecord(spec="m", source="memory", architecture="A", n_params=1, dtype="float32", device="cpu"),
            metrics={"acc": Metric(value=0.5, ci_low=0.4, ci_high=0.6, n=10)},
            environment=Environment(python="3", torch="2", transformers="5", platform="p", device_name="cpu"),
            timing=Timing(seconds_total=1.0, tokens_processed=1),
            created_at="now",
            seed=0,
        ).model_dump_json()
    )


def test_validate_says_what_is_wrong_one_line_per_problem(tmp_path, capsys):
    good = tmp_path / "good.json"
    good.write_text(json.dumps(valid_results()))
    broken = valid_results()
    del broken["seed"]
    broken["metrics"]["acc"]["n"] = -1
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(broken))
    nan = tmp_path / "nan.json"
    nan.write_text(json.dumps(valid_results()).replace('"value": 0.5', '"value": NaN'))
    junk = tmp_path / "junk.json"
    junk.write_text("{not json")

    assert main(["validate", str(good)]) == 0
    assert capsys.readouterr().out.strip() == f"{good}: ok"
    assert main(["validate", str(good), str(bad), str(nan), str(junk)]) == 1
    lines = capsys.readouterr().out.strip().splitlines()
    assert any(line.startswith(f"{bad}: seed:") for line in lines)
    assert any(line.startswith(f"{bad}: metrics.acc.n:") for line in lines)
    assert f"{nan}: metrics.acc.value: nan is not a finite number within ±1e+12" in lines
    assert any(line.startswith(f"{junk}: not JSON") for line in lines)


def test_summary_shows_the_headline_metrics():
    from harness.results import Results
    from harness.run.runner import summary

    data = valid_results()
    data["metrics"] = {
        k: {"value": v, "ci_low": v, "ci_high": v, "n": 3, "higher_is_better": True}
        for k, v in (("first", 0.1), ("second", 0.2), ("headline", 0.9))
    }
    data["task"]["headline_metrics"] = ["headline", "missing"]
    assert summary(Results.model_validate(data)).startswith("headline 0.900")
    data["task"]["headline_metrics"] = None
    assert summary(Results.model_validate(data)).startswith("first 0.100")


def test_names_plugins_already_import_stay_importable():
    """The flat layout's paths (as the README's examples wrote them) import the moved modules themselves."""
    import harness.engine.models
    import harness.engine.sites
    from harness.errors import UsageError  # noqa: F401
    from harness.intervene import Edit, intervene  # noqa: F401
    from harness.models import load_model
    from harness.scoring import generate, score  # noqa: F401
    from harness.sites import collect
    from harness.stats import bootstrap_ci, metric  # noqa: F401
    from harness.task import Task

    assert load_model is harness.engine.models.load_model and collect is harness.engine.sites.collect
    assert Task is harness.Task
    assert sys.modules["harness.models"] is harness.engine.models
