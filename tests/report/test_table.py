"""Results as a table: `harness.read_results` and `harness leaderboard export`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import harness
from harness.errors import UsageError
from harness.report.table import COLUMNS, export, read_results
from harness.results import write_results
from tests.report.test_leaderboard import fake_results
from tests.test_docs import code_blocks

ROOT = Path(__file__).parents[2]


def test_a_results_folder_gives_one_row_per_model_task_and_metric(tmp_path, capsys):
    write_results(tmp_path / "org__a" / "weekday_circle.json", fake_results("org/a", 0.5))
    write_results(tmp_path / "org__b" / "weekday_circle.json", fake_results("org/b", 0.7, limit=10))
    write_results(tmp_path / "org__b" / ".weekday_circle.partial-1" / "x.json", fake_results("org/c", 0.1))  # staging
    (tmp_path / "broken.json").write_text("{")
    table = harness.read_results(tmp_path)
    assert list(table.columns) == list(COLUMNS)
    assert sorted(table.model.unique()) == ["org/a", "org/b"] and len(table) == 4  # two metrics each
    row = table[(table.model == "org/b") & (table.metric == "accuracy")].iloc[0]
    assert [row[c] for c in ("value", "n", "limit", "task", "seed", "dtype")] == [0.7, 49, 10, "weekday_circle", 0, "float32"]
    assert row.ci_low == pytest.approx(0.6) and row.ci_high == pytest.approx(0.8)
    assert row.source == "org__b/weekday_circle.json"
    assert "broken.json" in capsys.readouterr().err  # left out, and said so
    one = read_results(tmp_path / "org__a" / "weekday_circle.json")
    assert one.metric.tolist() == ["accuracy", "probe_r2"] and set(one.source) == {"weekday_circle.json"}


def test_the_repository_leaderboards_read_as_a_table():
    folder = ROOT / "leaderboards"
    expected = []
    for path in sorted(folder.glob("*.json")):
        if path.name in ("index.json", "findings.json"):
            continue
        data = json.loads(path.read_text())
        for board in data["boards"]:
            for row in board["rows"]:
                expected += [(data["task"], row["model"], key, m["value"]) for key, m in row["metrics"].items()]
    table = read_results(folder)
    assert expected and len(table) == len(expected)
    assert sorted(zip(table.task, table.model, table.metric, table.value)) == sorted(expected)
    assert table.limit.isna().all() and table.config_hash.str.len().eq(16).all()


@pytest.mark.parametrize("suffix", ["csv", "parquet"])
def test_export_writes_the_same_table(tmp_path, suffix):
    out = tmp_path / "deep" / f"table.{suffix}"
    n = export(ROOT / "leaderboards", out)
    back = pd.read_csv(out) if suffix == "csv" else pd.read_parquet(out)
    table = read_results(ROOT / "leaderboards")
    assert n == len(back) == len(table) and list(back.columns) == list(COLUMNS)
    assert back.value.tolist() == pytest.approx(table.value.tolist())
    assert back.model.tolist() == table.model.tolist()
    assert [p.name for p in out.parent.iterdir()] == [out.name]  # no temporary file left


def test_bad_input_gets_one_line_and_exit_2(tmp_path):
    with pytest.raises(UsageError, match="name it .csv or .parquet"):
        export(ROOT / "leaderboards", tmp_path / "table.txt")
    (tmp_path / "bad.json").write_text('{"schema_version": 1}')
    with pytest.raises(UsageError, match="harness validate"):
        read_results(tmp_path / "bad.json")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "harness", "leaderboard", "export", "--dir", str(tmp_path / "none"), "--out", str(tmp_path / "t.csv")],
        capture_output=True, text=True, env=env,
    )  # fmt: skip
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1 and "no results file or folder" in done.stderr
    assert not (tmp_path / "t.csv").exists()
    done = subprocess.run(
        [sys.executable, "-m", "harness", "leaderboard", "export", "--dir", str(ROOT / "leaderboards"), "--out", str(tmp_path / "t.csv")],
        capture_output=True, text=True, env=env,
    )  # fmt: skip
    assert done.returncode == 0 and "rows" in done.stdout and len(pd.read_csv(tmp_path / "t.csv")) > 0


def test_the_readme_notebook_example_runs_as_written(monkeypatch):
    [block] = [b for b in code_blocks("python") if "read_results" in b]
    monkeypatch.chdir(ROOT)
    namespace: dict = {}
    exec(block, namespace)
    assert len(namespace["table"]) > 0
