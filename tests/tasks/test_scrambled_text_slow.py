"""scrambled_text on the two bundled models: small real runs (each test a few minutes at most on 2 CPU cores)."""

import time

import numpy as np
import pytest

from harness.api.context import RunContext
from harness.engine.models import load_model
from tasks.scrambled_text import ScrambledText

pytestmark = pytest.mark.slow
MODELS = ["smollm2-135m", pytest.param("gemma3-270m", marks=pytest.mark.extended)]


@pytest.fixture(scope="module", params=MODELS)
def model(request):
    return load_model(request.param)


def report(name, result, wall):
    print(f"\n{name}: {wall:.0f} s")
    for k, v in result.metrics.items():
        print(f"  {k} = {v.value:.3f} [{v.ci_low:.3f}, {v.ci_high:.3f}] n={v.n}")
    print("  notes:", result.notes)


@pytest.mark.slow
def test_recovery_qa_likelihood(model, tmp_path):
    ctx = RunContext(model=model, show_progress=False, artifacts_dir=tmp_path, log_samples=True)
    config = ScrambledText.Config(n_max=8, types=["random_100", "keepfirstlast"], subtasks=["rec", "qa", "likelihood"])
    start = time.time()
    result = ScrambledText().run(model, config, ctx)
    report(model.info.spec, result, time.time() - start)
    m = result.metrics
    for t in config.types:
        assert np.isfinite(m[f"recovery_rate_{t}"].value) and m[f"recovery_rate_{t}"].n == 8
        # A pretrained LM finds real English more probable than its letter-scrambled copy.
        assert m[f"prefer_original_{t}"].value >= 0.9 and m[f"ll_gap_per_char_{t}"].ci_low > 0
    assert m["qa_accuracy_original"].n == 8 and m["qa_accuracy_substituted"].n == 8
    assert "recovery_rate.png" in ctx.artifacts
    assert sum(s["subtask"] == "rec" for s in ctx.samples) == 16


@pytest.mark.slow
def test_restoration_probe(model, tmp_path):
    ctx = RunContext(model=model, show_progress=False, artifacts_dir=tmp_path)
    config = ScrambledText.Config(subtasks=["probe"], probe_words=20)
    start = time.time()
    result = ScrambledText().run(model, config, ctx)
    report(model.info.spec, result, time.time() - start)
    per_layer = result.details["probe"]["per_layer"]
    print("  restoration_cos_keepfirstlast by layer:", per_layer["restoration_cos_keepfirstlast"])
    print("  restoration_probe_acc_keepfirstlast by layer:", per_layer["restoration_probe_acc_keepfirstlast"])
    assert all(len(c) == model.n_layers for c in per_layer.values())
    # The probe reads word identity from held-out contexts of original words well above chance (1/20).
    assert result.metrics["probe_acc_original_at_best_keepfirstlast"].value > 0.5
    assert "restoration_layers.png" in ctx.artifacts
