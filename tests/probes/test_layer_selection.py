"""Controls get the same layer selection as the real probe: on pure noise the gap is no gap.

Twenty layers of noise carry no circle and no helix. The real probe's best layer is a
maximum over twenty noisy scores; a control read at that same layer (the old protocol) is
one draw, so the real-minus-control gap comes out positive although nothing is there. With
each method at its own best layer (`probes.selection.best_layers`, used by the tasks'
`probe_metrics` and `fit_metrics`) the gap's paired interval contains 0.
"""

from __future__ import annotations

import numpy as np
import pytest

from harness.api.context import RunContext
from probes.circle import circle_targets, cross_validate_circle, shuffled_labels
from probes.helix import basis_functions, cross_validate, kfold_indices
from tasks.circles.task import _r2_gap_rows, probe_metrics
from tasks.number_helix.task import fit_metrics

N_LAYERS = 20
N_DATASETS = 12
ALPHA = np.repeat(np.arange(7), 7)  # the weekday task's 49 prompts: alpha x beta
BETA = np.tile(np.arange(1, 8), 7)


def noise_circle_fits(seed: int) -> tuple[dict, dict]:
    """Held-out circular-probe fits of the real and shuffled labels at 20 layers of Gaussian noise."""
    rng = np.random.default_rng(seed)
    X = {L: rng.standard_normal((len(ALPHA), 8)) for L in range(N_LAYERS)}
    shuffled = shuffled_labels(ALPHA, rng)
    fits = {
        "probe": {L: cross_validate_circle(X[L], ALPHA, BETA, 7) for L in X},
        "shuffled": {L: cross_validate_circle(X[L], shuffled, BETA, 7) for L in X},
    }
    return fits, {"probe": circle_targets(ALPHA, 7), "shuffled": circle_targets(shuffled, 7)}


def test_circle_gap_on_noise_contains_zero_only_when_the_control_gets_its_own_layer():
    ctx = RunContext(model=None, bootstrap=300)
    new, old = [], []
    for seed in range(N_DATASETS):
        fits, targets = noise_circle_fits(seed)
        metrics, best = probe_metrics(ctx, fits, targets)
        assert set(best) == {"probe", "shuffled"}
        assert metrics["probe_r2_shuffled"].value == max(f.r2 for f in fits["shuffled"].values())
        new.append(metrics["probe_r2_minus_shuffled"])
        L = best["probe"]  # the old protocol: the control read at the real probe's best layer
        rows = np.hstack([fits["probe"][L].pred_xy, targets["probe"], fits["shuffled"][L].pred_xy, targets["shuffled"]])
        old.append(ctx.metric(rows, statistic=_r2_gap_rows))
    # New protocol: every interval contains 0, and the gaps average about 0.
    assert all(g.ci_low <= 0 <= g.ci_high for g in new), [(g.ci_low, g.ci_high) for g in new]
    assert abs(np.mean([g.value for g in new])) < 0.05
    # Old protocol: the same noise looks like a positive gap, often "significantly".
    assert np.mean([g.value for g in old]) > 0.1
    assert sum(g.ci_low > 0 for g in old) >= N_DATASETS // 3


def test_helix_gap_on_noise_contains_zero_only_when_the_control_gets_its_own_layer():
    ctx = RunContext(model=None, bootstrap=300)
    helix = basis_functions()["helix"]
    new, old = [], []
    for seed in range(6):
        rng = np.random.default_rng(100 + seed)
        a, shuffled = np.arange(100), rng.permutation(100)
        folds = kfold_indices(100, 5, rng)
        X = {L: rng.standard_normal((100, 12)) for L in range(N_LAYERS)}
        held = {
            "helix": {L: cross_validate(X[L], a, folds, helix, None) for L in X},
            "helix_shuffled": {L: cross_validate(X[L], shuffled, folds, helix, None) for L in X},
        }
        metrics, best = fit_metrics(ctx, held)
        new.append(metrics["helix_minus_shuffled"])
        L = best["helix"]
        old_gap = held["helix"][L].r2 - held["helix_shuffled"][L].r2
        old.append(old_gap)
    assert all(g.ci_low <= 0 <= g.ci_high for g in new), [(g.ci_low, g.ci_high) for g in new]
    assert np.mean(old) > np.mean([g.value for g in new]) + 0.01
    assert all(g > 0 for g in old)


@pytest.mark.parametrize(
    "scores, expected",
    [
        ({0: float("nan"), 1: 0.5}, 1),  # max() over (nan, 0.5) keeps the first: the NaN layer
        ({0: 0.5, 1: float("nan"), 2: 0.7}, 2),
        ({0: 0.5, 1: 0.5}, 0),  # ties go to the earliest
        ({3: float("nan"), 5: float("nan")}, 3),
    ],
)
def test_best_layer_never_picks_a_nan_score(scores, expected):
    from probes.selection import best_layer

    assert best_layer(scores) == expected
