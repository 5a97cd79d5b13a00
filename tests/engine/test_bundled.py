"""Real runs of the bundled models (slow): the CLI end to end, the GGUF cache, the circle tasks."""

from __future__ import annotations

import json
import time

import jsonschema
import pytest

from harness.engine.models import load_model
from harness.results import SCHEMA_PATH
from harness.run.cli import main

pytestmark = pytest.mark.slow
SCHEMA = json.loads(SCHEMA_PATH.read_text())


@pytest.mark.parametrize("alias", ["gemma3-270m", "smollm2-135m"])
def test_bundled_model_loads_from_the_safetensors_cache(alias):
    load_model(alias)  # converts once if this machine has not yet
    start = time.perf_counter()
    model = load_model(alias)
    seconds = time.perf_counter() - start
    assert model.info.source == "bundled" and model.info.revision.startswith("sha256:")
    assert model.info.dtype == "float32" and model.n_layers in (18, 30)
    assert seconds < 30, f"second load took {seconds:.0f} s: the GGUF conversion was not cached"


@pytest.mark.parametrize("alias", [pytest.param("gemma3-270m", marks=pytest.mark.extended), "smollm2-135m"])
def test_circle_tasks_on_bundled_model(alias, tmp_path, capsys):
    argv = ["run", "--model", alias, "--task", "weekday_circle", "--output-dir", str(tmp_path), "--no-progress"]
    assert main(argv) == 0
    # months: the first 36 problems (3 start months x 12 durations) keep CI short; probes use all 144
    assert (
        main(["run", "--model", alias, "--task", "month_circle", "--limit", "36", "--output-dir", str(tmp_path), "--no-progress"])
        == 0
    )
    files = sorted((tmp_path / alias).glob("*.json"))
    assert [f.name.split("-")[0].removesuffix(".json") for f in files] == ["month_circle", "weekday_circle"]
    for f in files:
        data = json.loads(f.read_text())
        jsonschema.validate(data, SCHEMA)
        metrics, details = data["metrics"], data["details"]
        m = 7 if data["task"]["name"] == "weekday_circle" else 12
        # a problem with its m - 1 alpha' runs is one unit of the intervention intervals
        assert metrics["intervention_success"]["n"] == (49 if m == 7 else 36) == metrics["accuracy"]["n"]
        assert metrics["probe_r2"]["n"] == m * m
        # The days and months are decodable on a circle far above shuffled labels, each at its own best layer.
        assert metrics["probe_r2_minus_shuffled"]["ci_low"] > 0.3
        for method in ("shuffled", "random_plane", "scrambled_order"):
            per_layer = details["per_layer"][f"probe_r2_{method}"]
            assert details["best_layers"][method] == per_layer.index(max(per_layer))
        assert data["reference"]["metrics"]["mistralai/Mistral-7B-v0.1"]["accuracy"] > 0
        for artifact in data["artifacts"]:
            assert (f.parent / artifact).stat().st_size > 0
    capsys.readouterr()
    assert main(argv) == 0
    assert "reused" in capsys.readouterr().out
