"""language_neurons on the two bundled models, small sizes (slow: a few minutes each on two cores)."""

from __future__ import annotations

import numpy as np
import pytest

from harness.api.context import RunContext
from harness.engine.models import load_model
from tasks.language_neurons import LANGS, LanguageNeurons

# Every neuron is scored on the whole shipped split; the intervention is cut to two languages,
# three conditions, four unconditional texts and four translation sources per cell (--limit 4).
SMALL = dict(
    n_samples=4,
    max_new_tokens=24,
    n_random=1,
    translation_max_new_tokens=32,
    conditions=["none", "random", "both"],
    languages=["de", "zh"],
)


def run_small(spec, tmp_path):
    model = load_model(spec)
    # 200 resamples: the re-selecting bootstrap of edge share and overlap is the slow part on two cores.
    ctx = RunContext(model=model, limit=4, artifacts_dir=tmp_path, show_progress=False, log_samples=True, bootstrap=200)
    return model, ctx, LanguageNeurons().run(model, LanguageNeurons.Config(**SMALL), ctx)


def check_structure(model, ctx, result):
    m, d = result.metrics, result.details
    n_units = sum(d["d_mlp"])
    assert len(d["d_mlp"]) == model.n_layers and d["k"] == round(0.005 * n_units)
    for L in LANGS:
        # a real model's neurons tell its languages apart, also on sentences not used to pick them
        assert m[f"heldout_ap_top.{L}"].ci_low > d["chance_ap"][L] + 0.2, L
        assert m[f"heldout_ap_bottom.{L}"].ci_high < d["chance_ap"][L], L
        assert sum(d["layer_hist"][L]["top"]) == pytest.approx(1.0, abs=1e-4)  # shares are rounded to 6 decimals
    assert m["neuron_share"].value == pytest.approx(2 * d["k"] / n_units)
    assert m["mean_ap_top.de"].n == 80 and m["heldout_ap_top.de"].n == 20  # parallel rows, not neurons
    for L in ("de", "zh"):
        for cond in ("none", "random", "both"):
            assert m[f"success.{cond}.uncond.{L}"].n == 4 and m[f"success.{cond}.translate.{L}"].n == 4
    assert {"layer_hist.png", "success.png"} <= set(ctx.artifacts)
    assert len(ctx.samples) == 5 * 4 + 5 * 4
    assert np.isfinite([v.value for v in m.values()]).all()


@pytest.mark.slow
def test_language_neurons_on_gemma3(tmp_path):
    model, ctx, result = run_small("gemma3-270m", tmp_path)
    check_structure(model, ctx, result)
    m = result.metrics
    # the multilingual model: forcing 1% of its MLP neurons makes it write German or Chinese
    # from a bare BOS far more often than forcing as many random neurons
    assert m["lift_vs_random.uncond.mean"].ci_low > 0
    assert m["success.both.uncond.de"].value > m["success.none.uncond.de"].value


@pytest.mark.slow
@pytest.mark.extended  # structure only, which the gemma3 run checks too
def test_language_neurons_on_smollm2(tmp_path):
    model, ctx, result = run_small("smollm2-135m", tmp_path)
    check_structure(model, ctx, result)
