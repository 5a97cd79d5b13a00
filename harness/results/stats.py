"""Error bars: 95% percentile-bootstrap intervals, resampling the unit the rows belong to.

Every interval in a results file is computed here, nowhere else. Rows that share a unit (the
six alpha' runs of one weekday problem, the tokens of one word, the sentences behind one
neuron's AP) are not independent: resampling rows would make the interval too narrow, so
`units` names each row's unit and whole units are resampled (a cluster bootstrap), with `n`
the number of units. The interval is reported as computed, never clamped to contain the
value: for a skewed statistic the value can lie outside its percentile interval, and hiding
that would hide the skew.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from harness.results import Metric

N_BOOTSTRAP = 1000


def _groups(units: Sequence | np.ndarray) -> list[np.ndarray]:
    """Row indices of each unit, units in order of first appearance."""
    units = np.asarray(units)
    _, first, inverse = np.unique(units, return_index=True, return_inverse=True)
    order = np.argsort(first)
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    labels = rank[inverse.reshape(-1)]
    return [np.flatnonzero(labels == g) for g in range(len(order))]


def bootstrap_ci(
    values: np.ndarray,
    statistic: Callable[[np.ndarray], float] = np.mean,
    seed: int = 0,
    n_boot: int = N_BOOTSTRAP,
    alpha: float = 0.05,
    units: Sequence | np.ndarray | None = None,
) -> tuple[float, float, float]:
    """(value, ci_low, ci_high) of `statistic` over rows of `values`.

    `values` may be 1-D (one number per row) or 2-D (a record per row, for statistics such
    as R^2 that need several columns). Without `units` rows are resampled with replacement;
    with `units` (one label per row) whole units are, keeping each unit's rows together.
    """
    values = np.asarray(values)
    value = float(statistic(values))
    rng = np.random.default_rng(seed)
    if units is None:
        n = len(values)
        if n < 2:
            return value, value, value
        idx = rng.integers(0, n, size=(n_boot, n))
        stats = np.array([statistic(values[i]) for i in idx], dtype=float)
    else:
        if len(units) != len(values):
            raise ValueError(f"{len(units)} unit labels for {len(values)} rows")
        groups = _groups(units)
        if len(groups) < 2:
            return value, value, value
        draws = rng.integers(0, len(groups), size=(n_boot, len(groups)))
        stats = np.array([statistic(values[np.concatenate([groups[g] for g in d])]) for d in draws], dtype=float)
    lo, hi = np.nanquantile(stats, [alpha / 2, 1 - alpha / 2])
    return value, float(lo), float(hi)


def n_units(values: np.ndarray, units: Sequence | np.ndarray | None) -> int:
    """What `n` means for a metric: the number of independent units behind it."""
    return len(np.asarray(values)) if units is None else len(np.unique(np.asarray(units)))


def metric(
    values: np.ndarray,
    higher_is_better: bool | None = True,
    statistic: Callable[[np.ndarray], float] = np.mean,
    seed: int = 0,
    units: Sequence | np.ndarray | None = None,
    n_boot: int = N_BOOTSTRAP,
) -> Metric:
    """A Metric with its 95% bootstrap interval; `values` holds one entry (or row) per example.

    units: the unit each row belongs to (a problem, a sentence, a word), when rows are not
    independent; whole units are resampled and `n` counts units.
    """
    value, lo, hi = bootstrap_ci(values, statistic, seed=seed, n_boot=n_boot, units=units)
    return Metric(value=value, ci_low=lo, ci_high=hi, n=n_units(values, units), higher_is_better=higher_is_better)
