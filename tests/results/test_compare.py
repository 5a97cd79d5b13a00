"""Comparisons across models: the item-table contract, paired intervals, the file and its schema, the runner hook."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from harness import Finding, Task, TaskResult, option, register_task
from harness.results import Curve, Metric, config_hash
from harness.results.compare import (
    SCHEMA_PATH,
    Comparison,
    ItemTableError,
    compare,
    item_columns,
    item_units,
    json_schema,
    paired_difference,
    read_comparison,
    write_comparison,
)
from harness.results.validate import validate_file
from harness.run.runner import Outcome, RunSpec, run
from tests.report.test_leaderboard import fake_results
from tests.tiny_models import save_tiny_model


def test_shipped_schema_equals_the_models_schema():
    assert json.loads(SCHEMA_PATH.read_text()) == json_schema(), (
        "regenerate: python -m harness.results.compare > harness/results/schema/comparison.v1.schema.json"
    )


def with_items(model: str, correct: dict[str, list[int]], ids: list[str] | None = None, curves: list | None = None):
    """A results file whose details carry per-item tables (one table per metric key 'x_acc')."""
    results = fake_results(model, 0.5, task="toy", headline=["all_acc", "a_acc"])
    tables = {}
    for key, values in correct.items():
        rows = ids or [f"i{k}" for k in range(len(values))]
        tables[key.removesuffix("_acc")] = {"id": rows, key: values}
        results.metrics[key] = Metric(value=float(np.mean(values)), ci_low=0.0, ci_high=1.0, n=len(values))
    results.metrics["all_acc"] = Metric(value=0.5, ci_low=0.0, ci_high=1.0, n=1)
    results.details = {"items": tables, "pooled": {"all_acc": list(correct)}}
    results.model.n_layers, results.curves = 2, list(curves or [])
    return results


def outcome(results, tmp_path: Path) -> Outcome:
    path = tmp_path / results.model.spec.replace("/", "__") / "toy.json"
    return Outcome(results.model.spec, "toy", path, False, results)


def test_item_columns_pool_and_refuse_malformed_tables():
    cols = item_columns(with_items("m", {"a_acc": [1, 0, 1], "b_acc": [0, 0]}).details)
    assert cols["a_acc"] == {("a", "i0"): 1.0, ("a", "i1"): 0.0, ("a", "i2"): 1.0}
    assert len(cols["all_acc"]) == 5 and sum(cols["all_acc"].values()) == 2
    for details in (
        {},
        {"items": {"a": {"id": ["x", "x"], "a_acc": [1, 0]}}},
        {"items": {"a": {"id": ["x"], "a_acc": [1, 0]}}},
        {"items": {"a": {"id": ["x"], "a_acc": [float("nan")]}}},
        {"items": {"a": {"id": ["x"], "a_acc": [1]}}, "pooled": {"p": ["missing"]}},
    ):
        with pytest.raises(ItemTableError):
            item_columns(details)


def test_paired_interval_is_narrower_than_unpaired_when_models_agree_on_hard_items():
    """Two models that fail the same hard items: the paired difference is exact, the unpaired intervals overlap."""
    rng = np.random.default_rng(0)
    easy = rng.random(200) < 0.5
    a = {k: float(e) for k, e in enumerate(easy)}
    b = {k: float(e and k % 10 != 0) for k, e in enumerate(easy)}  # b also misses every tenth easy item
    value, lo, hi, n = paired_difference(a, b, seed=0, n_boot=1000)
    assert n == 200 and value == pytest.approx(np.mean([a[k] - b[k] for k in a]))
    assert 0 < lo <= value <= hi and hi - lo < 0.06  # unpaired 95% intervals of two 0.5 rates at n=200 are ~0.14 wide each
    with pytest.raises(ItemTableError):
        paired_difference({"x": 1.0}, {"y": 0.0}, seed=0, n_boot=100)


def test_items_of_one_unit_are_resampled_together_and_n_counts_units():
    """Ten stories of ten questions each, where a model gets a whole story right or wrong: resampling questions
    would treat 100 correlated answers as independent and make the interval about three times too narrow."""
    ids = [f"q{k}" for k in range(100)]
    stories = [f"story{k // 10}" for k in range(100)]
    a = with_items("org/a", {"a_acc": [float((k // 10) % 2) for k in range(100)]}, ids=ids)
    b = with_items("org/b", {"a_acc": [0.0] * 100}, ids=ids)
    for results in (a, b):
        results.details["item_units"] = {"a": stories}
    assert item_units(a.details)[("a", "q13")] == "story1"
    keys, shown, diffs, notes = compare([outcome(a, Path("/x")), outcome(b, Path("/x"))], seed=0, n_boot=500, headline=["a_acc"])
    clustered = next(d for d in diffs if d.metric == "a_acc")
    value, lo, hi, n = paired_difference(item_columns(a.details)["a_acc"], item_columns(b.details)["a_acc"], seed=0, n_boot=500)
    assert clustered.n == 10 and n == 100 and clustered.value == value == 0.5
    assert clustered.ci_high - clustered.ci_low > 2 * (hi - lo)
    pooled = next(d for d in diffs if d.metric == "all_acc") if any(d.metric == "all_acc" for d in diffs) else None
    assert pooled is None or pooled.n == 10
    for bad in ({"a": stories[:5]}, {"a": [1] * 100}, ["story"]):
        with pytest.raises(ItemTableError):
            item_units({**a.details, "item_units": bad})


def test_pairs_are_matched_by_item_id_not_by_position():
    a = with_items("org/a", {"a_acc": [1, 1, 0, 0]}, ids=["p", "q", "r", "s"])
    b = with_items("org/b", {"a_acc": [0, 0, 1, 1]}, ids=["r", "s", "p", "q"])  # the same answers, rows in another order
    keys, shown, diffs, notes = compare([outcome(a, Path("/x")), outcome(b, Path("/x"))], seed=0, n_boot=200, headline=["a_acc"])
    d = next(d for d in diffs if d.metric == "a_acc")
    assert (d.value, d.ci_low, d.ci_high, d.n) == (0.0, 0.0, 0.0, 4) and shown == ["a_acc"] and not notes


def test_write_comparison_json_markdown_plot_and_validation(tmp_path):
    curve = [Curve(metric="c_acc", plot="c", label="probe", layers=[0, 1], values=[0.4, 0.9], ylabel="acc")]
    runs = [
        outcome(with_items(f"org/{m}", {"a_acc": v, "b_acc": [1, 0, 1]}, curves=curve), tmp_path)
        for m, v in (("a", [1, 1, 1, 0]), ("b", [0, 1, 0, 0]), ("c", [0, 0, 0, 0]))
    ]
    spec = RunSpec(models=[r.model for r in runs], tasks=["toy"], output_dir=tmp_path, bootstrap=200)

    @dataclass
    class Cfg:
        template: str = "paper"

    class Toy(Task):
        name, version, headline_metrics = "toy", "1.0", ["all_acc", "a_acc"]

    path = write_comparison(Toy, Cfg(), runs, spec)
    assert path.parent == tmp_path / "_compare" and path.name.startswith("toy-")
    comparison = read_comparison(path)
    assert validate_file(path) == []
    assert [m.spec for m in comparison.models] == ["org/a", "org/b", "org/c"] and comparison.columns == ["all_acc", "a_acc"]
    pairs = {(d.model_a, d.model_b) for d in comparison.differences}
    assert pairs == {("org/a", "org/b"), ("org/a", "org/c"), ("org/b", "org/c")}
    ab = next(d for d in comparison.differences if (d.model_a, d.model_b, d.metric) == ("org/a", "org/b", "a_acc"))
    assert ab.value == pytest.approx(0.5) and ab.n == 4
    md = path.with_suffix(".md").read_text()
    rows = [line for line in md.splitlines() if line.startswith("| org/")]
    assert len([r for r in rows if "−" not in r]) == 3 and len([r for r in rows if "−" in r]) == 3
    assert "| org/a − org/b |" in md and "+0.500 [" in md
    assert len(comparison.plots["c"]) == 3 and comparison.artifacts == [f"{path.stem}/plot0.png"]
    assert (path.parent / comparison.artifacts[0]).read_bytes().startswith(b"\x89PNG")
    broken = json.loads(path.read_text())
    broken["differences"][0]["ci_low"] = "low"
    del broken["models"][1:]
    path.write_text(json.dumps(broken))
    problems = validate_file(path)
    assert any(p.startswith("models") for p in problems) and any(p.startswith("differences.0.ci_low") for p in problems)


def test_runs_of_different_configs_are_not_compared(tmp_path):
    a = with_items("org/a", {"a_acc": [1]})
    b = with_items("org/b", {"a_acc": [1]})
    b.task.config_hash = config_hash({"template": "code"})
    spec = RunSpec(models=["org/a", "org/b"], tasks=["toy"], output_dir=tmp_path)
    with pytest.raises(ValueError, match="share task version, config"):
        write_comparison(type("T", (Task,), {"name": "toy"}), None, [outcome(a, tmp_path), outcome(b, tmp_path)], spec)


# Any task can be comparative: a toy task through the real runner, with a reused result -------------------


@dataclass
class ToyConfig:
    n: int = option(12, "prompts", ge=2)


@register_task
class ToyComparative(Task):
    """Scores the log-likelihood of ' b' after 'a'; per-item correctness is 'the model prefers b to c'."""

    name = "toy_comparative"
    Config = ToyConfig
    comparative = True
    headline_metrics = ["prefers_b"]
    finding = Finding(effect="prefers_b", control=0.5, claim="prefers b")

    def run(self, model, config, ctx) -> TaskResult:
        prompts = [f"a {k}" for k in range(config.n)]
        ll = ctx.loglikelihood([p for p in prompts for _ in range(2)], [" b", " c"] * config.n).logprob.reshape(-1, 2)
        correct = (ll[:, 0] > ll[:, 1]).astype(int)
        return TaskResult(
            metrics={"prefers_b": ctx.metric(correct.astype(float))},
            details={"items": {"all": {"id": prompts, "prefers_b": correct.tolist()}}},
        )


def test_runner_writes_one_comparison_also_from_reused_results(tmp_path):
    a, b = save_tiny_model("llama", tmp_path / "m-a", seed=1), save_tiny_model("llama", tmp_path / "m-b", seed=2)
    spec = RunSpec(
        models=[str(a), str(b)], tasks=["toy_comparative"], output_dir=tmp_path / "out", bootstrap=200, show_progress=False
    )
    reports: list[str] = []
    first = run(spec, reports.append)
    made = list((tmp_path / "out" / "_compare").glob("toy_comparative-*.json"))
    assert len(first) == 2 and len(made) == 1 and any("comparison of 2 models" in r for r in reports)
    before = read_comparison(made[0])
    second = run(spec, reports.append)  # both results reused: the comparison is rebuilt from the files alone
    assert all(o.reused for o in second)
    after = read_comparison(made[0])
    assert [m.reused for m in after.models] == [True, True]
    assert after.differences == before.differences and after.models[0].metrics == before.models[0].metrics
    assert isinstance(after, Comparison) and after.task.name == "toy_comparative"


# The leaderboard shows comparisons; a comparison file is untrusted input -------------------------------


def comparison_folder(tmp_path: Path) -> tuple[Path, Path]:
    """results/ with two models' results files and one comparison of them (with a plot)."""
    from harness.results import write_results

    results = tmp_path / "results"
    curve = [Curve(metric="c_acc", plot="c", label="probe", layers=[0, 1], values=[0.4, 0.9])]
    runs = []
    for m, v in (("a", [1, 1, 1, 0]), ("b", [0, 1, 0, 0])):
        r = with_items(f"org/{m}", {"a_acc": v, "b_acc": [1, 0, 1]}, curves=curve)
        path = results / f"org__{m}" / "toy.json"
        write_results(path, r)
        runs.append(Outcome(r.model.spec, "toy", path, False, r))
    spec = RunSpec(models=[r.model for r in runs], tasks=["toy"], output_dir=results, bootstrap=200)
    path = write_comparison(type("Toy", (Task,), {"name": "toy", "headline_metrics": ["all_acc", "a_acc"]}), None, runs, spec)
    return results, path


def test_leaderboard_shows_the_comparison_beside_the_boards(tmp_path):
    from harness.report.build import build

    results, path = comparison_folder(tmp_path)
    out = tmp_path / "lb"
    report = build(results, out)
    assert path in report.used and not any(p == path for p, _ in report.skipped)
    board = json.loads((out / "toy.json").read_text())
    assert len(board["boards"][0]["rows"]) == 2 and len(board["comparisons"]) == 1
    view = board["comparisons"][0]
    assert view["models"] == ["org/a", "org/b"] and view["columns"] == ["all_acc", "a_acc"]
    assert {d["metric"] for d in view["differences"]} == {"all_acc", "a_acc", "b_acc"}
    assert len(view["artifacts"]) == 1 and (out / view["artifacts"][0]).read_bytes().startswith(b"\x89PNG")
    page = (out / "index.html").read_text()
    assert "renderComparison" in page and "org/a" in page
    build(results, out)  # rebuilding keeps one comparison of these models, not two
    assert len(json.loads((out / "toy.json").read_text())["comparisons"]) == 1


def test_hostile_comparison_files_are_skipped_and_never_lead_outside(tmp_path):
    from harness.report.build import build

    results, path = comparison_folder(tmp_path)
    good = json.loads(path.read_text())
    outside = tmp_path / "secret.png"
    outside.write_bytes(b"\x89PNG\r\n\x1a\nsecret")
    hostile = dict(
        good,
        artifacts=["../../secret.png", f"{path.stem}/../../../secret.png", "/etc/passwd.png"],
        created_at="2099-01-01T00:00:00+00:00",
    )
    (results / "_compare" / "hostile.json").write_text(json.dumps(hostile))
    nan = json.loads(path.read_text().replace('"value": 0.5', '"value": 1e300', 1))
    nan["task"]["config_hash"] = "other"
    (results / "_compare" / "huge.json").write_text(json.dumps(nan))
    (results / "_compare" / "task.json").write_text(json.dumps(dict(good, task=dict(good["task"], name="../../x"))))
    (results / "_compare" / "link.json").symlink_to(path)
    (results / "_compare" / "junk.json").write_text("{}")
    out = tmp_path / "lb"
    report = build(results, out)
    reasons = {p.name: r for p, r in report.skipped}
    assert "not a plain relative path inside the file's folder" in reasons["hostile.json"]
    assert "is not a finite number within" in reasons["huge.json"]
    assert (
        "cannot name" in reasons["task.json"]
        and "symbolic link" in reasons["link.json"]
        and "not a valid comparison" in reasons["junk.json"]
    )
    for name in ("hostile.json", "huge.json", "task.json", "junk.json"):  # build refuses each for the reason validate gives
        assert validate_file(results / "_compare" / name)[0] in reasons[name]
    views = json.loads((out / "toy.json").read_text())["comparisons"]
    assert (
        len(views) == 1 and len(views[0]["artifacts"]) == len(good["artifacts"]) == 1
    )  # the hostile one (newer) was refused whole
    copied = [p for p in out.rglob("*") if p.is_file() and p.read_bytes().endswith(b"secret")]
    assert copied == [] and not (tmp_path / "x.json").exists()
