"""Error bars: 95% percentile-bootstrap intervals over examples.

Every metric a task reports goes through `metric()` so that each number carries its
interval and its n, computed the same way everywhere.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from harness.results import Metric

N_BOOTSTRAP = 1000


def bootstrap_ci(
    values: np.ndarray,
    statistic: Callable[[np.ndarray], float] = np.mean,
    seed: int = 0,
    n_boot: int = N_BOOTSTRAP,
    alpha: float = 0.05,
) -> tuple[float, float, float]:
    """(value, ci_low, ci_high) of `statistic` over rows of `values`, resampling rows with replacement.

    `values` may be 1-D (one number per example) or 2-D (a record per example, for
    statistics such as R^2 that need several columns).
    """
    values = np.asarray(values)
    n = len(values)
    value = float(statistic(values))
    if n < 2:
        return value, value, value
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_boot, n))
    stats = np.array([statistic(values[i]) for i in idx], dtype=float)
    lo, hi = np.nanquantile(stats, [alpha / 2, 1 - alpha / 2])
    return value, float(lo), float(hi)


def metric(
    values: np.ndarray,
    higher_is_better: bool | None = True,
    statistic: Callable[[np.ndarray], float] = np.mean,
    seed: int = 0,
) -> Metric:
    """A Metric with a 95% bootstrap interval; `values` holds one entry (or row) per example."""
    value, lo, hi = bootstrap_ci(values, statistic, seed=seed)
    return Metric(value=value, ci_low=lo, ci_high=hi, n=len(values), higher_is_better=higher_is_better)
