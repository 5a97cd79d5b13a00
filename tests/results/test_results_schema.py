"""The shipped JSON Schema is generated from the pydantic models and rejects malformed files."""

from __future__ import annotations

import json

import jsonschema
import pytest

from harness.results import SCHEMA_PATH, Metric, json_schema, write_atomic
from harness.results.stats import bootstrap_ci, metric


def test_shipped_schema_matches_the_code():
    assert json.loads(SCHEMA_PATH.read_text()) == json_schema(), (
        "regenerate: python -m harness.results.records > harness/results/schema/results.v1.schema.json"
    )


def test_schema_rejects_a_metric_without_interval():
    schema = json.loads(SCHEMA_PATH.read_text())
    bad = schema["$defs"]["Metric"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"value": 0.5, "n": 3}, {**bad, "$defs": schema["$defs"]})


def test_bootstrap_interval_brackets_the_mean_and_narrows_with_n():
    import numpy as np

    rng = np.random.default_rng(0)
    small = metric(rng.random(20) < 0.5)
    large = metric(rng.random(2000) < 0.5)
    assert small.ci_low <= small.value <= small.ci_high and small.n == 20
    assert (large.ci_high - large.ci_low) < (small.ci_high - small.ci_low) / 3
    assert bootstrap_ci(np.ones(10)) == (1.0, 1.0, 1.0)
    assert metric(np.arange(10.0), seed=3) == metric(np.arange(10.0), seed=3)
    assert isinstance(small, Metric)


def test_atomic_write_leaves_old_file_on_failure(tmp_path):
    path = tmp_path / "r.json"
    write_atomic(path, "old")

    with pytest.raises(TypeError):
        write_atomic(path, 123)  # type: ignore[arg-type]
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_atomic_write_gives_ordinary_permissions(tmp_path):
    import os
    import stat

    write_atomic(tmp_path / "r.json", "{}")
    mode = stat.S_IMODE((tmp_path / "r.json").stat().st_mode)
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o666 & ~umask
