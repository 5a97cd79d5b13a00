"""Leaderboards: only valid, comparable, complete results are ranked; show and publish work."""

from __future__ import annotations

import json
import struct
import subprocess
import zlib
from pathlib import Path

import pytest

from harness.report.build import build, format_table
from harness.report.publish import publish
from harness.results import Environment, Metric, ModelRecord, Reference, Results, TaskRecord, Timing, config_hash, write_results
from harness.run.cli import main

HOSTILE = "<img src=x onerror=\"document.title='pwned'\">&amp;"


def tiny_png(width: int = 4, height: int = 3) -> bytes:
    """A real PNG (grey pixels), so a browser can decode the thumbnails the page shows."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    pixels = b"".join(b"\0" + bytes([128]) * width for _ in range(height))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(pixels)) + chunk(b"IEND", b"")


PNG = tiny_png()
PAPER = "Engels et al. 2024, Not All Language Model Features Are Linear"


def fake_results(
    model: str,
    accuracy: float,
    *,
    task="weekday_circle",
    version="1.0",
    config=None,
    created="2026-11-20T10:00:00+00:00",
    limit=None,
    artifacts=(),
    headline=None,
) -> Results:
    config = config or {"template": "paper"}
    return Results(
        harness_version="0.1.0",
        task=TaskRecord(
            name=task,
            version=version,
            config=config,
            config_hash=config_hash(config),
            description=f"the {task} task",
            paper=PAPER,
            headline_metrics=headline,
        ),
        model=ModelRecord(spec=model, source="hub", architecture="LlamaForCausalLM", n_params=1, dtype="float32", device="cpu"),
        metrics={
            "accuracy": Metric(value=accuracy, ci_low=accuracy - 0.1, ci_high=accuracy + 0.1, n=49),
            "probe_r2": Metric(value=0.5, ci_low=0.4, ci_high=0.6, n=49),
        },
        reference=Reference(source="the paper", metrics={"mistralai/Mistral-7B-v0.1": {"accuracy": 0.633}}),
        environment=Environment(python="3.11", torch="2", transformers="5", platform="linux", device_name="cpu"),
        timing=Timing(seconds_total=1.0, tokens_processed=10),
        created_at=created,
        seed=0,
        limit=limit,
        artifacts=list(artifacts),
    )


@pytest.fixture
def results_dir(tmp_path) -> Path:
    root = tmp_path / "results"
    write_results(root / "model-a" / "weekday_circle.json", fake_results("org/model-a", 0.30))
    write_results(root / "model-b" / "weekday_circle.json", fake_results("org/model-b", 0.60))
    (root / "model-b" / "weekday_circle").mkdir()
    (root / "model-b" / "weekday_circle" / "circle.png").write_bytes(PNG)
    (root / "model-b" / "weekday_circle" / "per_layer.json").write_text("[1, 2]")  # an artifact, not a results file
    write_results(
        root / "model-b" / "weekday_circle.json", fake_results("org/model-b", 0.60, artifacts=["weekday_circle/circle.png"])
    )
    # an older run of the same model and config: the newer one wins
    write_results(root / "old" / "weekday_circle.json", fake_results("org/model-b", 0.10, created="2026-01-01T00:00:00+00:00"))
    # other version, other config: separate boards
    write_results(root / "model-a" / "weekday_circle-v2.json", fake_results("org/model-a", 0.9, version="2.0"))
    write_results(root / "model-a" / "weekday_circle-code.json", fake_results("org/model-a", 0.8, config={"template": "code"}))
    write_results(root / "hostile" / "weekday_circle.json", fake_results(HOSTILE, 0.45))
    write_results(root / "model-a" / "weekday_circle-limit.json", fake_results("org/model-a", 1.0, limit=5))
    (root / "broken.json").write_text("{not json")
    (root / "foreign.json").write_text(json.dumps({"some": "other tool's file"}))
    (root / "model-a" / ".weekday_circle.partial").mkdir()
    (root / "model-a" / ".weekday_circle.partial" / "x.json").write_text("{}")
    return root


def test_build_ranks_only_comparable_valid_results(results_dir, tmp_path):
    out = tmp_path / "leaderboards"
    report = build(results_dir, out)
    skipped = {p.name: reason for p, reason in report.skipped}
    assert set(skipped) == {"broken.json", "foreign.json", "weekday_circle-limit.json"}
    assert "partial run" in skipped["weekday_circle-limit.json"]
    data = json.loads((out / "weekday_circle.json").read_text())
    boards = {(b["task_version"], b["config"]["template"]): b for b in data["boards"]}
    assert set(boards) == {("1.0", "paper"), ("2.0", "paper"), ("1.0", "code")}
    main_board = boards[("1.0", "paper")]
    assert [r["model"] for r in main_board["rows"]] == ["org/model-b", HOSTILE, "org/model-a"]  # by accuracy
    assert main_board["rows"][0]["metrics"]["accuracy"]["value"] == 0.60  # the newest run of model-b
    [plot] = main_board["rows"][0]["artifacts"]
    assert plot.startswith("assets/weekday_circle/") and plot.endswith("/circle.png")
    assert (out / plot).read_bytes() == PNG
    for key in ("config_hash", "task_version", "harness_version", "date"):
        assert key in main_board["rows"][0]
    index = json.loads((out / "index.json").read_text())
    assert index["tasks"][0]["task"] == "weekday_circle" and "Engels" in index["tasks"][0]["paper"]
    html = (out / "index.html").read_text()
    assert "<img" not in html and "org/model-a" in html


def test_cli_build_show_and_errors(results_dir, tmp_path, capsys):
    out = tmp_path / "lb"
    assert main(["leaderboard", "build", "--results", str(results_dir), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "skipped" in captured.err and "broken.json" in captured.err and "foreign.json" in captured.err
    assert main(["leaderboard", "show", "--task", "weekday_circle", "--dir", str(out)]) == 0
    shown = capsys.readouterr().out
    assert "org/model-b" in shown and "0.600 [0.500, 0.700]" in shown and "paper: mistralai/Mistral-7B-v0.1" in shown
    assert main(["leaderboard", "show", "--task", "nope", "--dir", str(out)]) == 2
    assert "no leaderboard for nope" in capsys.readouterr().err
    assert main(["leaderboard", "show", "--task", "findings", "--dir", str(out)]) == 2  # findings.json is not a board
    assert "no leaderboard for findings" in capsys.readouterr().err
    assert main(["leaderboard", "build", "--results", str(tmp_path / "missing")]) == 2


def test_format_table_lists_models_then_paper():
    board = {
        "headline_metrics": ["accuracy"],
        "rows": [{"model": "m", "metrics": {"accuracy": {"value": 0.5, "ci_low": 0.4, "ci_high": 0.6}}}],
        "reference": {"metrics": {"paper-model": {"accuracy": 0.7}, "other": {"x": 1.0}}},
    }
    lines = format_table(board).splitlines()
    assert lines[2].startswith("m ") and lines[3].startswith("paper: paper-model") and len(lines) == 4


def test_publish_to_folder_and_git_work_tree(results_dir, tmp_path):
    out = tmp_path / "lb"
    build(results_dir, out)
    plain = tmp_path / "site"
    sent = publish(out, str(plain))
    assert "index.html" in sent and (plain / "index.html").read_text() == (out / "index.html").read_text()
    repo = tmp_path / "repo"
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run(["git", "-C", str(repo), "config", "user.email", "t@example.com"], check=True)
    subprocess.run(["git", "-C", str(repo), "config", "user.name", "t"], check=True)
    publish(out, str(repo))
    log = subprocess.run(["git", "-C", str(repo), "log", "--oneline"], capture_output=True, text=True).stdout
    assert "Update leaderboards" in log
    publish(out, str(repo))  # nothing changed: no empty commit
    assert subprocess.run(["git", "-C", str(repo), "log", "--oneline"], capture_output=True, text=True).stdout == log


class FakeHub:
    def __init__(self):
        self.calls = []

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", repo_id, kwargs))

    def upload_folder(self, **kwargs):
        self.calls.append(("upload_folder", kwargs))


def test_publish_to_hub_dataset(results_dir, tmp_path, monkeypatch, capsys):
    out = tmp_path / "lb"
    build(results_dir, out)
    assert main(["leaderboard", "publish", "--to", "hf://datasets/org/boards", "--dir", str(out), "--dry-run"]) == 0
    listed = capsys.readouterr().out
    assert "would send" in listed and "index.html" in listed and "weekday_circle.json" in listed
    monkeypatch.delenv("HF_TOKEN", raising=False)
    assert main(["leaderboard", "publish", "--to", "hf://datasets/org/boards", "--dir", str(out)]) == 2
    assert "HF_TOKEN" in capsys.readouterr().err
    assert main(["leaderboard", "publish", "--to", "hf://models/org/x", "--dir", str(out)]) == 2
    hub = FakeHub()
    sent = publish(out, "hf://datasets/org/boards", api=hub)
    (_, repo, create), (_, upload) = hub.calls
    assert repo == "org/boards" and create["repo_type"] == "dataset"
    assert upload["repo_id"] == "org/boards" and upload["repo_type"] == "dataset"
    assert upload["allow_patterns"] == sent and Path(upload["folder_path"]) == out


def test_build_merges_findings_into_a_copy_of_the_repository_leaderboards(tmp_path):
    """Existing boards keep their rows and their models' verdicts; a new run adds its own verdict and a chart."""
    import shutil

    from tests.report.test_findings import with_finding

    repo = Path(__file__).resolve().parents[2] / "leaderboards"
    if not (repo / "index.json").is_file():
        pytest.skip("the repository has no leaderboards/ to merge into")
    out = tmp_path / "leaderboards"
    shutil.copytree(repo, out)
    before = {t["task"]: t["models"] for t in json.loads((out / "index.json").read_text())["tasks"]}
    old = json.loads((repo / "findings.json").read_text()) if (repo / "findings.json").is_file() else {"tasks": []}
    old_verdicts = {c["model"]: c["verdict"] for t in old["tasks"] if t["task"] == "weekday_circle" for c in t["cells"]}
    results = tmp_path / "results"
    write_results(results / "new" / "weekday_circle.json", with_finding("org/new", (0.9, 0.85, 0.95), (0.3, 0.2, 0.4)))
    build(results, out)
    after = {t["task"]: t["models"] for t in json.loads((out / "index.json").read_text())["tasks"]}
    assert set(after) == set(before) and all(set(before[t]) <= set(after[t]) for t in before)
    findings = json.loads((out / "findings.json").read_text())
    assert [t["task"] for t in findings["tasks"]] == sorted(before)
    weekday = next(t for t in findings["tasks"] if t["task"] == "weekday_circle")
    verdicts = {c["model"]: c["verdict"] for c in weekday["cells"]}
    assert verdicts.pop("org/new") == "holds"
    old_models = set(before["weekday_circle"])
    assert {m: v for m, v in verdicts.items() if m in old_models} == {m: old_verdicts.get(m, "not declared") for m in old_models}
    assert (out / "assets" / "charts" / "weekday_circle-layers.png").is_file()
    old_month = json.loads((repo / "month_circle.json").read_text())["boards"]
    new_month = json.loads((out / "month_circle.json").read_text())["boards"]
    assert [[r["metrics"] for r in b["rows"]] for b in new_month] == [[r["metrics"] for r in b["rows"]] for b in old_month]


def test_configs_show_the_options_that_differ_from_the_defaults():
    from harness.report.page import differing_options

    defaults = {"n": 200, "cells": ["2x2", "5x5"], "probe": True}
    quick = {"n": 30, "cells": ["2x2", "5x5"], "probe": True}
    assert differing_options([{"config": quick, "default_config": defaults}]) == [[["n", 30]]]
    assert differing_options([{"config": defaults, "default_config": defaults}]) == [[]]
    # Boards from results that predate the recorded defaults compare with each other instead.
    assert differing_options([{"config": quick}, {"config": defaults}]) == [[["n", 30]], [["n", 200]]]
    assert differing_options([{"config": quick}]) == [None]


def test_json_artifacts_beside_a_versioned_results_file_are_not_read_as_results(tmp_path):
    """A run's folder is named like its file, `task-v1.0-<hash>`; the dots of the version are not a suffix."""
    from harness.report.build import BuildReport, load_results

    results = tmp_path / "results" / "m"
    (results / "multiplication_digits-v1.0-02ba4cdf").mkdir(parents=True)
    (results / "multiplication_digits-v1.0-02ba4cdf.json").write_text("{}")
    (results / "multiplication_digits-v1.0-02ba4cdf" / "probe_layers.json").write_text("{}")
    report = BuildReport()
    load_results(tmp_path / "results", report)
    assert [p.name for p, _ in report.skipped] == ["multiplication_digits-v1.0-02ba4cdf.json"]


def test_a_replaced_row_takes_its_old_plots_with_it(tmp_path):
    """A newer run of the same key replaces the row; the plot only the old row linked is removed, not left to pile up."""
    out, first, second = tmp_path / "leaderboards", tmp_path / "first", tmp_path / "second"
    for root, picture in ((first, PNG), (second, PNG + b"another picture")):
        (root / "m" / "weekday_circle").mkdir(parents=True)
        (root / "m" / "weekday_circle" / "circle.png").write_bytes(picture)
    write_results(
        first / "m" / "weekday_circle.json",
        fake_results("org/m", 0.5, artifacts=["weekday_circle/circle.png"], created="2026-01-01T00:00:00+00:00"),
    )
    write_results(second / "m" / "weekday_circle.json", fake_results("org/m", 0.6, artifacts=["weekday_circle/circle.png"]))
    build(first, out)
    [old] = json.loads((out / "weekday_circle.json").read_text())["boards"][0]["rows"][0]["artifacts"]
    build(second, out)
    [new] = json.loads((out / "weekday_circle.json").read_text())["boards"][0]["rows"][0]["artifacts"]
    assert new != old and (out / new).is_file()
    assert not (out / old).exists() and not (out / old).parent.exists()  # links: tests/report/test_leaderboard_links.py
