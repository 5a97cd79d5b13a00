"""A third-party task package, installed for real, shows up in `harness list` and runs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.tiny_models import save_tiny_model

PLUGIN = Path(__file__).parents[1] / "plugin_example"


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """pip-install the example plugin into a private folder, as a user would into their environment."""
    target = tmp_path_factory.mktemp("site")
    source = tmp_path_factory.mktemp("src") / "plugin"
    shutil.copytree(PLUGIN, source)  # setuptools writes build/ and egg-info/ beside the sources
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            str(source),
        ],
        check=True,
        cwd=source,
        env={**os.environ, "PIP_NO_INDEX": "1"},
    )
    return target


def harness(site: Path, *argv: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(PLUGIN.parent.parent)])}
    return subprocess.run([sys.executable, "-m", "harness.run.cli", *argv], capture_output=True, text=True, env=env, timeout=300)


def test_plugin_is_listed_and_runs(installed, tmp_path):
    listed = harness(installed, "list")
    assert listed.returncode == 0, listed.stderr
    line = next(l for l in listed.stdout.splitlines() if l.startswith("opposite_words"))
    assert "harness-opposites" in line
    assert "weekday_circle" in listed.stdout

    model = tmp_path / "tiny"
    save_tiny_model("gpt2", model)
    ran = harness(
        installed,
        "run",
        "--model",
        str(model),
        "--task",
        "opposite_words",
        "--task-arg",
        "n_pairs=3",
        "--output-dir",
        str(tmp_path / "out"),
    )
    assert ran.returncode == 0, ran.stderr
    files = [p for p in (tmp_path / "out").rglob("opposite_words*.json") if p.is_file()]
    assert len(files) == 1
    data = json.loads(files[0].read_text())
    assert data["task"]["name"] == "opposite_words" and data["metrics"]["accuracy"]["n"] == 3

    bad = harness(installed, "run", "--model", str(model), "--task", "opposite_words", "--task-arg", "n_pair=3")
    assert bad.returncode == 2 and "did you mean n_pairs" in bad.stderr


def test_probe_and_patch_plugin_runs_and_documents_itself(installed, tmp_path):
    listed = harness(installed, "list", "opposite_direction")
    assert listed.returncode == 0, listed.stderr
    assert "layer  (int, default 1)" in listed.stdout and "resid_post layer to probe and steer" in listed.stdout

    model = tmp_path / "tiny"
    save_tiny_model("llama", model)
    ran = harness(
        installed,
        "run",
        "--model",
        str(model),
        "--task",
        "opposite_direction",
        "--task-arg",
        "layer=2",
        "--output-dir",
        str(tmp_path / "out"),
        "--no-progress",
    )
    assert ran.returncode == 0, ran.stderr
    files = [p for p in (tmp_path / "out").rglob("opposite_direction*.json") if p.is_file()]
    assert len(files) == 1
    data = json.loads(files[0].read_text())
    metrics = data["metrics"]
    assert metrics["probe_acc"]["n"] == 10 and metrics["steer_logprob_gain"]["n"] == 10  # words, not prompts
    assert metrics["probe_acc"]["ci_low"] <= metrics["probe_acc"]["ci_high"]
    assert metrics["steer_logprob_gain"]["value"] != 0  # the edit changed the computation
    assert data["task"]["headline_metrics"] == ["probe_acc", "probe_acc_shuffled", "steer_logprob_gain"]
    assert "probe_acc" in ran.stdout  # the terminal summary shows the headline metrics
