"""The verdict rule, the findings matrix and the per-layer curves read from results' details."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from harness.report.build import build
from harness.report.charts import ChartLine, choose_keys, clean_curves, extract_curves, label, layer_chart
from harness.report.findings import (
    FAILS,
    HOLDS,
    MIN_UNITS,
    MISSING,
    NOT_DECLARED,
    NOT_RUN,
    TOO_FEW,
    FindingSpec,
    matrix,
    parse_finding,
    verdict,
)
from harness.results import Curve, Metric, write_results
from tests.report.test_leaderboard import fake_results


def m(value: float, low: float, high: float, higher: bool | None = True) -> Metric:
    return Metric(value=value, ci_low=low, ci_high=high, n=50, higher_is_better=higher)


def finding(control="control", effect="effect") -> FindingSpec:
    return FindingSpec(effect=effect, control=control, claim="effect beats control", paper_verdict="holds on Mistral 7B")


@pytest.mark.parametrize(
    "effect, control, expected",
    [
        (m(0.9, 0.8, 1.0), m(0.5, 0.4, 0.6), HOLDS),
        (m(0.9, 0.6, 1.0), m(0.5, 0.4, 0.6), FAILS),  # touches the control's far end: includes it
        (m(0.9, 0.59, 1.0), m(0.5, 0.4, 0.6), FAILS),  # overlaps it, though above its point value
        (m(0.9, 0.61, 1.0), m(0.5, 0.4, 0.6), HOLDS),
        (m(0.2, 0.1, 0.3), m(0.5, 0.4, 0.6, higher=False), FAILS),  # the effect's direction decides, not the control's
        (m(0.2, 0.1, 0.3, higher=False), m(0.5, 0.4, 0.6), HOLDS),  # lower is better: wholly below the control
        (m(0.2, 0.1, 0.4, higher=False), m(0.5, 0.4, 0.6), FAILS),  # touches the control's lower end
        (m(0.2, 0.1, 0.3, higher=None), m(0.5, 0.4, 0.6), HOLDS),  # no direction: clear of it on either side
        (m(0.5, 0.45, 0.55, higher=None), m(0.5, 0.4, 0.6), FAILS),
    ],
)
def test_verdict_against_a_control_metric_uses_the_control_interval_far_end(effect, control, expected):
    result = verdict(finding(), {"effect": effect, "control": control})
    assert result.verdict == expected
    assert result.effect == effect and result.control == control


@pytest.mark.parametrize(
    "effect, control, expected",
    [
        (m(0.3, 0.01, 0.5), 0.0, HOLDS),
        (m(0.3, 0.0, 0.5), 0.0, FAILS),  # touches zero: includes it
        (m(0.3, -0.1, 0.5), 0.0, FAILS),
        (m(-0.3, -0.5, -0.2), 0.0, FAILS),  # wholly on the worse side
        (m(0.05, 0.02, 0.09, higher=False), 0.1, HOLDS),  # lower is better, below chance
        (m(0.05, 0.02, 0.1, higher=False), 0.1, FAILS),
        (m(-0.3, -0.5, -0.2, higher=None), 0.0, HOLDS),
    ],
)
def test_verdict_against_a_number(effect, control, expected):
    result = verdict(finding(control=control), {"effect": effect})
    assert result.verdict == expected and result.control == control


def test_not_run_not_declared_and_missing_metrics():
    good = {"effect": m(0.9, 0.8, 1.0), "control": m(0.1, 0.0, 0.2)}
    assert verdict(finding(), None).verdict == NOT_RUN
    assert verdict(None, None).verdict == NOT_RUN
    assert verdict(None, good).verdict == NOT_DECLARED
    missing_effect = verdict(finding(effect="gone"), good)
    assert missing_effect.verdict == MISSING and "gone" in missing_effect.reason
    missing_control = verdict(finding(control="gone"), good)
    assert missing_control.verdict == MISSING and "gone" in missing_control.reason and missing_control.effect == good["effect"]
    assert verdict(finding(), good).verdict == HOLDS


def test_reason_names_the_comparison():
    result = verdict(finding(), {"effect": m(0.9, 0.55, 1.0), "control": m(0.5, 0.4, 0.6)})
    assert result.reason == "lower end 0.55 not above control's upper end 0.6"
    assert verdict(finding(control=0.25), {"effect": m(0.9, 0.5, 1.0)}).reason == "lower end 0.5 above 0.25"


def faceted(*facets) -> FindingSpec:
    return FindingSpec.model_validate(
        {
            "claim": "three parts",
            "facets": [{"kind": kind, "effect": effect, "control": control} for kind, effect, control in facets],
        }
    )


CIRCLE_FACETS = (("behaviour", "accuracy", 1 / 7), ("representation", "r2_gap", 0.0), ("causal", "patch_gap", 0.0))


@pytest.mark.parametrize(
    "accuracy, r2_gap, patch_gap, expected",
    [
        (m(0.9, 0.8, 1.0), m(0.3, 0.1, 0.5), m(0.4, 0.2, 0.6), HOLDS),
        (m(0.16, 0.10, 0.22), m(0.3, 0.1, 0.5), m(0.01, -0.02, 0.04), "representation only"),  # a model at chance
        (m(0.9, 0.8, 1.0), m(0.3, 0.1, 0.5), m(0.01, -0.02, 0.04), "behaviour and representation only"),
        (m(0.9, 0.8, 1.0), m(0.0, -0.1, 0.1), m(0.4, 0.2, 0.6), "behaviour and causal only"),
        (m(0.1, 0.05, 0.2), m(0.0, -0.1, 0.1), m(0.0, -0.1, 0.1), FAILS),
    ],
)
def test_a_finding_holds_only_when_every_facet_does_and_else_names_the_parts_that_hold(accuracy, r2_gap, patch_gap, expected):
    result = verdict(faceted(*CIRCLE_FACETS), {"accuracy": accuracy, "r2_gap": r2_gap, "patch_gap": patch_gap})
    assert result.verdict == expected
    assert [f.kind for f in result.facets] == ["behaviour", "representation", "causal"]
    assert all(k in result.reason for k in ("behaviour (accuracy)", "representation (r2_gap)", "causal (patch_gap)"))
    cell = result.as_json()
    assert [f["verdict"] for f in cell["facets"]] == [f.verdict for f in result.facets]
    assert cell["effect"]["value"] == accuracy.value  # the first facet's, for readers of one effect


def test_too_few_units_is_its_own_verdict_and_a_missing_facet_is_named():
    few = Metric(value=0.9, ci_low=0.9, ci_high=0.9, n=MIN_UNITS - 1)
    assert verdict(finding(control=0.0), {"effect": few}).verdict == TOO_FEW  # a zero-width interval on n = 1 is no evidence
    enough = Metric(value=0.9, ci_low=0.8, ci_high=1.0, n=MIN_UNITS)
    assert verdict(finding(control=0.0), {"effect": enough}).verdict == HOLDS
    assert verdict(finding(), {"effect": enough, "control": Metric(value=0.1, ci_low=0.0, ci_high=0.2, n=3)}).verdict == TOO_FEW
    metrics = {"accuracy": m(0.1, 0.05, 0.2), "r2_gap": few, "patch_gap": m(0.0, -0.1, 0.1)}
    assert verdict(faceted(*CIRCLE_FACETS), metrics).verdict == TOO_FEW
    assert verdict(faceted(*CIRCLE_FACETS), {"accuracy": m(0.1, 0.05, 0.2)}).verdict == MISSING


def test_a_metric_with_no_unit_to_measure_reads_too_few_units_not_missing():
    """A null model answers no problem, so a causal test has nothing to intervene on: n = 0, not a lost metric."""
    metrics = {"accuracy": m(0.1, 0.05, 0.2), "r2_gap": m(0.0, -0.1, 0.1)}
    why = {"patch_gap": "no problem the model answers"}
    cell = verdict(faceted(*CIRCLE_FACETS), metrics, why)
    causal = next(f for f in cell.facets if f.kind == "causal")
    assert causal.verdict == TOO_FEW and causal.reason == "n = 0 units: no problem the model answers"
    assert cell.verdict == TOO_FEW
    assert verdict(faceted(*CIRCLE_FACETS), metrics).verdict == MISSING  # without the reason: a lost metric
    control = verdict(finding(), {"effect": m(0.9, 0.8, 1.0)}, {"control": "nothing to compare"})
    assert control.verdict == TOO_FEW and "control" in control.reason


@pytest.mark.parametrize(
    "raw, ok",
    [
        ({"facets": [{"kind": "causal", "effect": "a", "control": 0}]}, True),
        ({"facets": [{"kind": "vibes", "effect": "a", "control": 0}]}, False),
        ({"facets": [{"kind": "causal", "effect": "a", "control": float("nan")}]}, False),
        ({"facets": [{"kind": "causal", "effect": "a"}]}, False),
        ({"facets": [{"kind": "causal", "effect": "a", "control": 0}] * 100}, False),
    ],
)
def test_parse_finding_checks_each_facet(raw, ok):
    assert (parse_finding(raw) is not None) == ok


def test_the_api_finding_records_its_facets_and_a_headline_effect():
    from dataclasses import asdict

    from harness import Facet, Finding

    declared = Finding(claim="c", facets=(Facet("behaviour", "accuracy", 0.5), Facet("causal", "gap", 0.0)))
    assert (declared.effect, declared.control) == ("accuracy", 0.5)
    spec = parse_finding(asdict(declared))
    assert [f.kind for f in spec.facet_list()] == ["behaviour", "causal"]
    with pytest.raises(ValueError, match="kind"):
        Facet("vibes", "accuracy", 0.5)
    with pytest.raises(ValueError, match="facets"):
        Finding(claim="nothing to test")


@pytest.mark.parametrize(
    "raw, ok",
    [
        ({"effect": "a", "control": "b", "claim": "c", "paper_verdict": "d"}, True),
        ({"effect": "a", "control": 0, "claim": "c"}, True),
        ({"effect": "a", "control": float("nan"), "claim": "c"}, False),
        ({"effect": "a", "control": float("inf")}, False),
        ({"effect": "", "control": "b"}, False),
        ({"effect": "a"}, False),
        ({"effect": ["a"], "control": "b"}, False),
        ({"effect": "a", "control": "b", "claim": "x" * 10_000}, False),
        ("holds", False),
        (None, False),
    ],
)
def test_parse_finding_refuses_what_no_verdict_can_come_from(raw, ok):
    parsed = parse_finding(raw)
    assert (parsed is not None) == ok
    if ok:
        assert parsed.effect == "a" and parsed.control == raw["control"]


def test_numeric_control_stays_a_number_and_a_key_stays_a_key():
    assert parse_finding({"effect": "a", "control": "0.5"}).control == "0.5"  # a metric named "0.5", not a number
    assert parse_finding({"effect": "a", "control": 0.5}).control == 0.5
    assert parse_finding({"effect": "a", "control": 0}).control == 0
    assert parse_finding({"effect": "a", "control": 10**400}) is None
    assert parse_finding({"effect": "a", "control": True}) is None


def curves_run(n_layers, curves):
    """A results file of a model `n_layers` deep with these curves."""
    results = fake_results("org/a", 0.5)
    results.model.n_layers = n_layers
    results.curves = list(curves)
    return results


CIRCLE_CURVES = (
    5,
    Curve.each({"probe_r2": [0.1, 0.5, 0.9, 0.8, 0.7], "probe_r2_scrambled_order": [0.0, 0.1, float("nan"), 0.2, 0.1]}, range(5)),
)
HELIX_CURVES = (3, Curve.each({"helix_r2_heldout": [0.2, 0.6, 0.4], "linear_r2_heldout": [0.1, 0.3, None]}, range(3)))
CIRCLE = curves_run(*CIRCLE_CURVES)
HELIX = curves_run(*HELIX_CURVES)


def test_curves_are_read_by_relative_depth():
    assert extract_curves(CIRCLE) == {
        "probe_r2": [[0.0, 0.1], [0.25, 0.5], [0.5, 0.9], [0.75, 0.8], [1.0, 0.7]],
        "probe_r2_scrambled_order": [[0.0, 0.0], [0.25, 0.1], [0.75, 0.2], [1.0, 0.1]],  # NaN skipped
    }
    assert extract_curves(HELIX) == {
        "helix_r2_heldout": [[0.0, 0.2], [0.5, 0.6], [1.0, 0.4]],
        "linear_r2_heldout": [[0.0, 0.1], [0.5, 0.3]],  # a layer without a number skipped
    }
    probed = curves_run(9, Curve.each({"probe_last_digit_acc": [0.1, 0.5, 0.9]}, [0, 4, 8]))  # some layers probed
    assert extract_curves(probed) == {"probe_last_digit_acc": [[0.0, 0.1], [0.5, 0.5], [1.0, 0.9]]}
    some = curves_run(4, Curve.each({"restoration_probe_acc_random_100": [0.3, 0.6]}, [1, 3]))
    assert extract_curves(some) == {"restoration_probe_acc_random_100": [[round(1 / 3, 6), 0.3], [1.0, 0.6]]}


@pytest.mark.parametrize(
    "n_layers, curves, expected",
    [
        (5, [], {}),
        (None, Curve.each({"a": [1, 2]}, [0, 1]), {}),  # no depth recorded: no curve
        (2, Curve.each({"a": [1, 2, 3]}, [0, 1, 2]), {}),  # more values than layers
        (4, Curve.each({"a": [1, 2]}, [0, 9]), {"a": [[0.0, 1.0]]}),  # layer 9 is past the depth
        (1, Curve.each({"a": [0.5], "b": [None]}, [0]), {"a": [[0.0, 0.5]]}),  # one layer sits at depth 0; b has no number
        (3, [Curve(metric="a", layers=[0], values=[0.1]), Curve(metric="a", layers=[1], values=[0.2])], {"a": [[0.0, 0.1]]}),
    ],
)
def test_curves_tolerate_missing_depth_and_bad_layers(n_layers, curves, expected):
    assert extract_curves(curves_run(n_layers, curves)) == expected


def test_a_curve_has_one_value_per_layer():
    with pytest.raises(ValidationError, match="2 layers for 1 values"):
        Curve(metric="a", layers=[0, 1], values=[0.5])


def test_clean_curves_keeps_only_finite_points_in_depth_range():
    assert clean_curves({"a": [[0.0, 1.0], [1.0, 2.0]], "b": [[1.5, 1.0]], "c": [[0.0, float("nan")]], "d": "x", 5: []}) == {
        "a": [[0.0, 1.0], [1.0, 2.0]]
    }
    assert clean_curves(["a"]) == {}


def test_chart_draws_effect_and_control_or_first_headline_curve():
    lines = [ChartLine("a", extract_curves(CIRCLE)), ChartLine("b", extract_curves(HELIX))]
    assert choose_keys(lines, "probe_r2", "probe_r2_scrambled_order", []) == ("probe_r2", "probe_r2_scrambled_order")
    assert choose_keys(lines, "probe_r2", 0.5, []) == ("probe_r2", 0.5)
    assert choose_keys(lines, "probe_r2_minus_shuffled", 0.0, ["accuracy", "helix_r2_heldout"]) == ("helix_r2_heldout", None)
    assert choose_keys(lines, None, None, ["accuracy"]) == (None, None)
    assert layer_chart("weekday_circle", lines, "probe_r2", "probe_r2_scrambled_order").startswith(b"\x89PNG")


def test_chart_labels_are_never_mathtext():
    assert label("$\\frac{1}{0}$") == "\\$\\\\frac{1}{0}\\$"
    hostile = [
        ChartLine("$\\undefinedcommand{x}$ <b>", extract_curves(CIRCLE)),
        ChartLine("y" * 500, extract_curves(CIRCLE)),
    ]
    assert layer_chart("$t$", hostile, "probe_r2", 0.0).startswith(b"\x89PNG")


FINDING = {
    "effect": "probe_r2",
    "control": "probe_r2_scrambled_order",
    "claim": "days lie on a circle",
    "paper_verdict": "holds on Mistral 7B and Llama 3 8B",
}


def with_finding(
    model: str,
    r2: tuple[float, float, float],
    control: tuple[float, float, float],
    *,
    finding=FINDING,
    curves=CIRCLE_CURVES,
    task="weekday_circle",
    **kwargs,
):
    results = fake_results(model, 0.5, task=task, **kwargs)
    results.metrics["probe_r2"] = m(*r2)
    results.metrics["probe_r2_scrambled_order"] = m(*control)
    results.task.finding = finding
    results.model.n_layers, results.curves = curves[0], list(curves[1])
    return results


def test_build_writes_findings_json_and_charts(tmp_path):
    results = tmp_path / "results"
    write_results(results / "a" / "weekday_circle.json", with_finding("org/a", (0.9, 0.85, 0.95), (0.3, 0.2, 0.4)))
    write_results(results / "b" / "weekday_circle.json", with_finding("org/b", (0.5, 0.3, 0.7), (0.3, 0.2, 0.4)))
    write_results(
        results / "b" / "month_circle.json",
        with_finding("org/b", (0.9, 0.8, 1.0), (0.1, 0.0, 0.2), task="month_circle", finding=None, curves=(5, [])),
    )
    write_results(
        results / "c" / "number_helix.json",
        with_finding(
            "org/c",
            (0.9, 0.8, 1.0),
            (0.1, 0.0, 0.2),
            task="number_helix",
            finding={"effect": "helix_r2_heldout", "control": 0.5, "claim": "x"},
        ),
    )
    out = tmp_path / "lb"
    build(results, out)
    findings = json.loads((out / "findings.json").read_text())
    assert findings["models"] == ["org/a", "org/b", "org/c"]
    assert [t["task"] for t in findings["tasks"]] == ["month_circle", "number_helix", "weekday_circle"]
    verdicts = {t["task"]: [c["verdict"] for c in t["cells"]] for t in findings["tasks"]}
    assert verdicts == {
        "weekday_circle": [HOLDS, FAILS, NOT_RUN],
        "month_circle": [NOT_RUN, NOT_DECLARED, NOT_RUN],
        "number_helix": [NOT_RUN, NOT_RUN, MISSING],
    }
    weekday = findings["tasks"][2]
    assert weekday["paper_verdict"] == FINDING["paper_verdict"] and weekday["finding"]["claim"] == FINDING["claim"]
    cell = weekday["cells"][0]
    assert cell["effect"]["ci_low"] == 0.85 and cell["control"] == {
        "metric": "probe_r2_scrambled_order",
        "value": 0.3,
        "ci_low": 0.2,
        "ci_high": 0.4,
        "n": 50,
    }
    assert [f["kind"] for f in cell["facets"]] == ["finding"] and cell["facets"][0]["verdict"] == HOLDS
    assert cell["board"]["config_hash"] and cell["row"]["dtype"] == "float32"
    index = json.loads((out / "index.json").read_text())
    charts = {t["task"]: t.get("chart") for t in index["tasks"]}
    assert [(t.get("chart_solid"), t.get("chart_dashed")) for t in index["tasks"]] == [
        (None, None),
        ("probe_r2", None),
        ("probe_r2", "probe_r2_scrambled_order"),
    ]
    assert charts["weekday_circle"] == "assets/charts/weekday_circle-layers.png"
    assert charts["month_circle"] is None  # no run stored a per-layer curve
    assert charts["number_helix"] == "assets/charts/number_helix-layers.png"  # the first headline metric with a curve
    assert (out / charts["weekday_circle"]).read_bytes().startswith(b"\x89PNG")
    board = json.loads((out / "weekday_circle.json").read_text())["boards"][0]
    assert board["finding"] == FINDING and board["rows"][0]["curves"]["probe_r2"][2] == [0.5, 0.9]


def test_rebuild_keeps_findings_and_curves_and_refuses_a_malformed_finding(tmp_path):
    results = tmp_path / "results"
    write_results(results / "a" / "weekday_circle.json", with_finding("org/a", (0.9, 0.85, 0.95), (0.3, 0.2, 0.4)))
    out = tmp_path / "lb"
    build(results, out)
    other = tmp_path / "other"
    write_results(
        other / "b" / "weekday_circle.json",
        with_finding("org/b", (0.9, 0.85, 0.95), (0.3, 0.2, 0.4), finding={"effect": "probe_r2", "control": float("nan")}),
    )
    report = build(other, out)
    assert any("finding is malformed" in reason for _, reason in report.skipped)
    findings = json.loads((out / "findings.json").read_text())
    [task] = findings["tasks"]
    assert [c["verdict"] for c in task["cells"]] == [HOLDS, HOLDS]  # the board keeps the finding a malformed one cannot replace
    board = json.loads((out / "weekday_circle.json").read_text())["boards"][0]
    assert {r["model"]: bool(r["curves"]) for r in board["rows"]} == {"org/a": True, "org/b": True}


def test_matrix_reads_the_first_board_and_says_which():
    from harness.report.build import Board, Row, TaskBoards

    def row(model, value):
        return Row(
            model=model,
            dtype="float32",
            metrics={"e": m(value, value - 0.1, value + 0.1)},
            config_hash="h",
            task_version="1",
            seed=0,
        )

    spec = {"effect": "e", "control": 0.5, "claim": "c"}
    new = Board(task_version="2", config_hash="new", config={}, headline_metrics=["e"], finding=spec, rows=[row("x", 0.9)])
    old = Board(
        task_version="1", config_hash="old", config={}, headline_metrics=["e"], finding=spec, rows=[row("x", 0.1), row("y", 0.9)]
    )
    result = matrix([TaskBoards(task="t", boards=[new, old])])
    cells = {c["model"]: c for c in result["tasks"][0]["cells"]}
    assert cells["x"]["verdict"] == HOLDS and cells["x"]["board"] == {"task_version": "2", "config_hash": "new"}
    assert cells["y"]["verdict"] == HOLDS and cells["y"]["board"]["config_hash"] == "old"


def test_a_model_on_several_boards_is_judged_by_its_newest_run_that_declares_a_finding(tmp_path):
    from harness.report.build import build

    results = tmp_path / "results"
    old = fake_results("org/a", 0.5, config={"template": "code"}, created="2026-11-21T10:00:00+00:00")  # no finding
    write_results(results / "a" / "old.json", old)
    write_results(
        results / "a" / "new.json", with_finding("org/a", (0.9, 0.85, 0.95), (0.3, 0.2, 0.4), created="2026-11-20T10:00:00+00:00")
    )
    build(results, tmp_path / "out")
    findings = json.loads((tmp_path / "out" / "findings.json").read_text())
    (cell,) = [c for t in findings["tasks"] for c in t["cells"] if c["model"] == "org/a"]
    assert cell["verdict"] == "holds"  # the judged run, although a run without a finding is newer
