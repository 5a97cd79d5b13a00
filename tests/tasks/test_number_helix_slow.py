"""number_helix on the two bundled models, small sizes (slow: about a minute each on two cores)."""

from __future__ import annotations

import numpy as np
import pytest

from harness.api.context import RunContext
from harness.engine.models import load_model
from tasks.number_helix.task import PATCH_METHODS, NumberHelix

SMALL = dict(n_problems=60, n_pairs=4, correct_only=False, max_new_tokens=3)


@pytest.mark.slow
@pytest.mark.parametrize("spec", ["smollm2-135m", pytest.param("gemma3-270m", marks=pytest.mark.extended)])
def test_number_helix_on_bundled_model(spec, tmp_path):
    model = load_model(spec)
    ctx = RunContext(model=model, artifacts_dir=tmp_path, show_progress=False)
    result = NumberHelix().run(model, NumberHelix.Config(**SMALL), ctx)
    m, d = result.metrics, result.details
    assert d["digits_split"]  # both bundled tokenizers split numbers into digits
    assert m["accuracy"].n == 60
    # a real model's a-token state is structured in a: the helix beats permuted labels and a bare line,
    # each baseline at its own best layer
    assert m["helix_minus_shuffled"].ci_low > 0.3
    assert m["helix_minus_linear"].ci_low > 0
    assert m["helix_shuffled_r2_heldout"].value < 0.1
    assert d["best_fit_layers"]["linear"] == int(np.argmax(d["per_layer_r2_heldout"]["linear"]))
    per_layer = d["per_layer_patch_ld"]
    assert all(len(per_layer[k]) == model.n_layers for k in PATCH_METHODS)
    assert per_layer["layer_patch"][-1] == pytest.approx(0, abs=1e-4)  # the last block's a-token output never reaches the logits
    assert m["patch_ld_layer_patch"].value > 0  # putting the clean state back helps the clean answer somewhere
    assert m["swap_success"].n == 4 and d["swap_layer"] < max(1, model.n_layers // 3) and d["swap_op"] == "replace"
    assert {"helix.png", "helix_layers.png"} <= set(ctx.artifacts)
    assert np.isfinite([v.value for v in m.values()]).all()
