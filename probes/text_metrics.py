"""Text and representation metrics for scrambled-text experiments (Cao et al. 2023, Scrambled Bench).

- `edit_distance`: character Levenshtein distance (unit insert, delete, substitute), case-sensitive.
- `recovery_rates`: per-item Recovery Rate RR_i = (ED(orig, scr) - ED(orig, rec)) / ED(orig, scr),
  items with ED(orig, scr) = 0 skipped and counted; `pooled_recovery` is the ratio of sums.
- `relative_performance_gain`: RPG = (Acc_scr - Acc_sub) / (Acc_orig - Acc_sub), None when the
  denominator is too small to be stable.
- `row_cosine`, `restoration_cosine`: cosine of a scrambled word's state with its original's,
  minus the same with a different word (the baseline).
- `probe_transfer`: a word-identity probe trained on original-word states, tested on
  scrambled-word states of contexts it never saw.

numpy and scikit-learn only; nothing here knows about models.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance between two strings, one row of the table at a time (vectorised).

    Row recurrence: d[j] = min(prev[j] + 1, prev[j-1] + cost_j, d[j-1] + 1). The first two
    terms are vectorised; the insertion chain d[j] = min_k (t[k] + j - k) is a running minimum.
    """
    if a == b:
        return 0
    if not a or not b:
        return max(len(a), len(b))
    if len(a) < len(b):
        a, b = b, a
    bb = np.frombuffer(b.encode("utf-32-le"), dtype=np.uint32)
    j = np.arange(len(bb) + 1)
    prev = j.copy()
    for i, ch in enumerate(np.frombuffer(a.encode("utf-32-le"), dtype=np.uint32), start=1):
        t = np.empty_like(prev)
        t[0] = i
        t[1:] = np.minimum(prev[1:] + 1, prev[:-1] + (bb != ch))
        prev = np.minimum.accumulate(t - j) + j
    return int(prev[-1])


@dataclass
class Recovery:
    """Per-item edit distances and recovery rates; `kept` indexes the items with ED(orig, scr) > 0."""

    ed_scrambled: np.ndarray  # ED(orig, scr) of every item
    ed_recovered: np.ndarray  # ED(orig, rec) of every item
    kept: np.ndarray  # indices of items with ED(orig, scr) > 0
    rr: np.ndarray  # RR_i of the kept items, fractions (1 = perfect)

    @property
    def n_skipped(self) -> int:
        return len(self.ed_scrambled) - len(self.kept)


def recovery_rates(original: Sequence[str], scrambled: Sequence[str], recovered: Sequence[str]) -> Recovery:
    """Edit distances on stripped strings and RR_i = (ED_s - ED_r) / ED_s per item (ED_s = 0 skipped)."""
    ed_s = np.array([edit_distance(o.strip(), s.strip()) for o, s in zip(original, scrambled)], dtype=float)
    ed_r = np.array([edit_distance(o.strip(), r.strip()) for o, r in zip(original, recovered)], dtype=float)
    kept = np.flatnonzero(ed_s > 0)
    rr = (ed_s[kept] - ed_r[kept]) / ed_s[kept]
    return Recovery(ed_s, ed_r, kept, rr)


def pooled_recovery(rows: np.ndarray) -> float:
    """100 * sum(ED_s - ED_r) / sum(ED_s) over rows [ED_s, ED_r] (a bootstrap statistic)."""
    rows = np.asarray(rows, dtype=float)
    total = rows[:, 0].sum()
    return float(100.0 * (total - rows[:, 1].sum()) / total) if total > 0 else float("nan")


def relative_performance_gain(acc_scr: float, acc_sub: float, acc_orig: float, min_gap: float = 0.05) -> float | None:
    """(Acc_scr - Acc_sub) / (Acc_orig - Acc_sub); None when Acc_orig - Acc_sub < min_gap (unstable)."""
    gap = acc_orig - acc_sub
    if gap < min_gap:
        return None
    return float((acc_scr - acc_sub) / gap)


def rpg_rows(rows: np.ndarray, min_gap: float = 0.05) -> float:
    """RPG over rows [correct_orig, correct_sub, correct_scr] (a bootstrap statistic; NaN when unstable)."""
    rows = np.asarray(rows, dtype=float)
    value = relative_performance_gain(rows[:, 2].mean(), rows[:, 1].mean(), rows[:, 0].mean(), min_gap)
    return float("nan") if value is None else value


def row_cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of matching rows of a and b, in [-1, 1] (0 for a zero row)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    num = (a * b).sum(-1)
    den = np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1)
    return np.clip(np.divide(num, den, out=np.zeros_like(num), where=den > 0), -1.0, 1.0)


def restoration_cosine(scrambled: np.ndarray, original: np.ndarray, other: np.ndarray) -> np.ndarray:
    """Per pair: cos(scrambled, original) - cos(scrambled, other word), the baseline-corrected similarity."""
    return row_cosine(scrambled, original) - row_cosine(scrambled, other)


@dataclass
class Transfer:
    """Held-out word-identity probe: trained on original states, tested on originals and on scrambled states."""

    correct_scrambled: dict[str, np.ndarray]  # per set, (n,) bool, each predicted by a probe that never saw its context
    correct_original: np.ndarray  # (n,) bool, same folds: the ceiling


def probe_transfer(
    X_orig: np.ndarray,
    y: np.ndarray,
    groups: np.ndarray,
    scrambled: Mapping[str, np.ndarray],
    n_folds: int = 5,
    C: float = 0.1,
    max_iter: int = 100,
) -> Transfer:
    """Logistic-regression word probe, held out by context group.

    Row i of every array in `scrambled` is the scrambled counterpart of X_orig[i] (same
    label y[i], same context groups[i]). Folds split the context groups; the probe of a fold
    is fit on standardised original states of the training groups and predicts the original
    and the scrambled states of the held-out groups, so every test row is predicted once.
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    X_orig = np.asarray(X_orig, dtype=np.float32)
    y, groups = np.asarray(y), np.asarray(groups)
    unique = np.unique(groups)
    folds = np.array_split(unique, min(n_folds, len(unique)))
    correct = {name: np.zeros(len(X_orig), dtype=bool) for name in scrambled}
    correct_orig = np.zeros(len(X_orig), dtype=bool)
    for held in folds:
        test = np.isin(groups, held)
        train = ~test
        mean = X_orig[train].mean(0)
        std = X_orig[train].std(0)
        std = np.where(std > 1e-8, std, 1.0)
        if len(np.unique(y[train])) < 2:
            predict = lambda X: np.full(len(X), y[train][0])  # noqa: E731
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                clf = LogisticRegression(C=C, max_iter=max_iter).fit((X_orig[train] - mean) / std, y[train])
            predict = lambda X: clf.predict((np.asarray(X, dtype=np.float32) - mean) / std)  # noqa: E731
        correct_orig[test] = predict(X_orig[test]) == y[test]
        for name, X in scrambled.items():
            correct[name][test] = predict(np.asarray(X)[test]) == y[test]
    return Transfer(correct, correct_orig)
