"""PS-Eval metrics: does a representation tell two senses of one word apart?

Minegishi et al. 2025, "Rethinking Evaluation of Sparse Autoencoders through the
Representation of Polysemous Words" (PS-Eval). Each pair is one word in two contexts,
labelled 1 when the word has the same sense in both and 0 when it does not. A
representation says "same" for a pair when the most active unit (an SAE latent, or a raw
dimension for the baselines) is the same in both contexts. With "same sense" as the
positive class:

    TP: label 1, said same      FN: label 1, said different
    FP: label 0, said same      TN: label 0, said different

    accuracy    = (TP + TN) / n
    precision   = TP / (TP + FP)
    recall      = TP / (TP + FN)         (same sense -> same top latent)
    specificity = TN / (TN + FP)         (different senses -> different top latents; the paper's focus)
    f1          = 2 TP / (2 TP + FP + FN)

A rate whose denominator is zero is None (undefined, not 0): a bootstrap resample with no
positive pairs has no recall. Accuracy, precision, recall and specificity are each a mean
over the pairs of their denominator (`rate_rows`), so an interval resamples those pairs'
units and its `n` counts them; F1 has no such form and is computed from all pairs.

A context whose vector is all zero has argmax 0, as in the authors' code, so a pair with
no active latent in either context is said "same" (k1 == k2 == 0): an SAE that never fires
says "same" everywhere and sits on the trivial line below, as it should. (The spec said
"different"; that rule hands an SAE of zeros a specificity of 1.) Such pairs are counted
(`n_all_zero`). A representation whose top unit never changes says "same"
for every pair (recall 1, specificity 0, accuracy 0.5 on balanced pairs); that is the
trivial line the raw residual stream, with its few huge outlier dimensions, tends to sit on.

Two learned baselines read the same pairs: `probe_baseline` (logistic regression on
[|h1 - h2|, h1 * h2]) and `cosine_baseline` (cos(h1, h2) above a threshold). Both are
cross-validated with folds grouped by target word, so no word is seen in training and
testing at once (otherwise a probe could memorise which words tend to be 'same' pairs),
and both return one out-of-fold prediction per pair.

Every function returns per-pair arrays, not only totals, so a caller can bootstrap any
rate over pairs: `pair_rows` and `rate_statistic` make the rows and the statistic.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Callable

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GroupKFold

from probes.linear import Standardiser

RATES = ("accuracy", "precision", "recall", "specificity", "f1")


def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None


@dataclass(frozen=True)
class Confusion:
    """Confusion counts with 'same sense' (label 1) as the positive class."""

    tp: int
    fp: int
    tn: int
    fn: int

    @property
    def n(self) -> int:
        return self.tp + self.fp + self.tn + self.fn

    @property
    def accuracy(self) -> float | None:
        return _ratio(self.tp + self.tn, self.n)

    @property
    def precision(self) -> float | None:
        return _ratio(self.tp, self.tp + self.fp)

    @property
    def recall(self) -> float | None:
        return _ratio(self.tp, self.tp + self.fn)

    @property
    def specificity(self) -> float | None:
        return _ratio(self.tn, self.tn + self.fp)

    @property
    def f1(self) -> float | None:
        return _ratio(2 * self.tp, 2 * self.tp + self.fp + self.fn)

    def rates(self) -> dict[str, float | None]:
        return {name: getattr(self, name) for name in RATES}


def confusion(labels: np.ndarray, same: np.ndarray) -> Confusion:
    """Counts from per-pair labels (1 = same sense) and verdicts (True = said same)."""
    labels, same = np.asarray(labels).astype(bool), np.asarray(same).astype(bool)
    if labels.shape != same.shape:
        raise ValueError(f"labels {labels.shape} and verdicts {same.shape} differ in shape")
    return Confusion(
        tp=int((labels & same).sum()),
        fp=int((~labels & same).sum()),
        tn=int((~labels & ~same).sum()),
        fn=int((labels & ~same).sum()),
    )


def pair_rows(labels: np.ndarray, same: np.ndarray) -> np.ndarray:
    """(n, 2) int rows (label, said same): the unit a bootstrap over pairs resamples."""
    return np.stack([np.asarray(labels).astype(int), np.asarray(same).astype(int)], axis=1)


def rate_statistic(name: str) -> Callable[[np.ndarray], float]:
    """A statistic on `pair_rows` rows giving one rate, NaN where it is undefined, for a
    bootstrap such as harness.results.stats.bootstrap_ci (which ignores NaN resamples)."""
    if name not in RATES:
        raise ValueError(f"unknown rate '{name}': use one of {', '.join(RATES)}")

    def statistic(rows: np.ndarray) -> float:
        value = getattr(confusion(rows[:, 0], rows[:, 1]), name)
        return float("nan") if value is None else value

    return statistic


def rate_rows(labels: np.ndarray, same: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(mask, values): `name` as the mean of `values[mask]`, mask the pairs of its denominator.

    accuracy: every pair, 1 when judged right; precision: pairs said same, 1 when truly same;
    recall: same-sense pairs, 1 when said same; specificity: different-sense pairs, 1 when
    said different. F1 is not a mean over pairs: a ValueError."""
    labels, same = np.asarray(labels).astype(bool), np.asarray(same).astype(bool)
    if name == "accuracy":
        return np.ones(len(labels), bool), (labels == same).astype(float)
    if name == "precision":
        return same, labels.astype(float)
    if name == "recall":
        return labels, same.astype(float)
    if name == "specificity":
        return ~labels, (~same).astype(float)
    raise ValueError(f"{name} is not a mean over pairs: use rate_statistic")


@dataclass(eq=False)  # array fields
class TopUnits:
    """Per pair: the most active unit in each context and the verdict 'same'."""

    k1: np.ndarray  # (n,) index of the top unit in context 1
    k2: np.ndarray
    v1: np.ndarray  # (n,) its value
    v2: np.ndarray
    all_zero: np.ndarray  # (n,) bool: a context had no active unit at all
    same: np.ndarray  # (n,) bool: k1 == k2 (an all-zero context's argmax is 0)

    @property
    def n_all_zero(self) -> int:
        return int(self.all_zero.sum())


def compare_top_units(z1: np.ndarray, z2: np.ndarray) -> TopUnits:
    """PS-Eval's verdict per pair from the two contexts' vectors z1, z2 (n, d): SAE latents,
    or raw site vectors for the `raw` baselines.

    A context whose vector is all zero has argmax 0, as in the authors' code: two all-zero
    contexts are "same", one all-zero context is "same" only when the other's top unit is
    0. Such pairs are flagged (`all_zero`)."""
    z1, z2 = np.asarray(z1), np.asarray(z2)
    if z1.shape != z2.shape or z1.ndim != 2:
        raise ValueError(f"need two (n_pairs, d) arrays of one shape, got {z1.shape} and {z2.shape}")
    rows = np.arange(len(z1))
    k1, k2 = z1.argmax(axis=1), z2.argmax(axis=1)
    all_zero = ~(z1 != 0).any(axis=1) | ~(z2 != 0).any(axis=1)
    return TopUnits(k1, k2, z1[rows, k1], z2[rows, k2], all_zero, k1 == k2)


def decoder_cosine(W_dec: np.ndarray, k1: np.ndarray, k2: np.ndarray) -> np.ndarray:
    """(n,) cosine between the decoder rows of each pair's two top latents (1 when they are
    the same latent): how far apart the SAE puts the two readings."""
    W = np.asarray(W_dec, dtype=float)
    a, b = W[np.asarray(k1)], W[np.asarray(k2)]
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return np.divide((a * b).sum(axis=1), norms, out=np.zeros(len(a)), where=norms > 0)


def balanced_indices(labels: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """Indices of equally many valid pairs per label: the first N of each in the given
    order (seed-free), N the smaller class's count. Sorted, so file order is kept."""
    labels = np.asarray(labels).astype(int)
    valid = np.ones(len(labels), bool) if valid is None else np.asarray(valid, bool)
    pos, neg = np.flatnonzero(valid & (labels == 1)), np.flatnonzero(valid & (labels == 0))
    n = min(len(pos), len(neg))
    return np.sort(np.concatenate([pos[:n], neg[:n]]))


@dataclass(eq=False)  # array fields
class PairPredictions:
    """Out-of-fold verdicts of a learned baseline, one per pair."""

    same: np.ndarray  # (n,) bool prediction 'same sense'
    score: np.ndarray  # (n,) the probe's probability of 'same', or the cosine
    fold: np.ndarray  # (n,) the fold that held the pair out

    def confusion(self, labels: np.ndarray) -> Confusion:
        return confusion(labels, self.same)


def grouped_folds(groups: np.ndarray, n_folds: int = 5) -> np.ndarray:
    """(n,) fold index per pair, folds grouped (one word's pairs share a fold) and
    deterministic; fewer folds when there are fewer distinct groups."""
    groups = np.asarray(groups)
    n_groups = len(np.unique(groups))
    if n_groups < 2:
        raise ValueError("grouped cross-validation needs at least 2 distinct target words")
    fold = np.empty(len(groups), int)
    for i, (_, test) in enumerate(GroupKFold(min(n_folds, n_groups)).split(groups, groups=groups)):
        fold[test] = i
    return fold


def pair_features(h1: np.ndarray, h2: np.ndarray) -> np.ndarray:
    """[|h1 - h2|, h1 * h2]: symmetric in the two contexts, as the pair's label is."""
    h1, h2 = np.asarray(h1, dtype=float), np.asarray(h2, dtype=float)
    return np.hstack([np.abs(h1 - h2), h1 * h2])


def probe_baseline(
    h1: np.ndarray, h2: np.ndarray, labels: np.ndarray, groups: np.ndarray, n_folds: int = 5, C: float = 1.0
) -> PairPredictions:
    """Logistic regression (L2, inverse strength C, standardised with the training fold's
    statistics) on pair_features, cross-validated with folds grouped by `groups` (the
    target word). A training fold holding one label only predicts that label."""
    X, y = pair_features(h1, h2), np.asarray(labels).astype(int)
    fold = grouped_folds(groups, n_folds)
    score = np.empty(len(y))
    for f in np.unique(fold):
        train, test = fold != f, fold == f
        if len(np.unique(y[train])) < 2:
            score[test] = float(y[train][0])
            continue
        scaler = Standardiser().fit(X[train])
        model = LogisticRegression(C=C, max_iter=2000)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(scaler.transform(X[train]), y[train])
        score[test] = model.predict_proba(scaler.transform(X[test]))[:, 1]
    return PairPredictions(score >= 0.5, score, fold)


def row_cosine(h1: np.ndarray, h2: np.ndarray) -> np.ndarray:
    """(n,) cosine of each pair's two vectors; 0 where either is the zero vector."""
    h1, h2 = np.asarray(h1, dtype=float), np.asarray(h2, dtype=float)
    norms = np.linalg.norm(h1, axis=1) * np.linalg.norm(h2, axis=1)
    return np.divide((h1 * h2).sum(axis=1), norms, out=np.zeros(len(h1)), where=norms > 0)


def best_threshold(values: np.ndarray, labels: np.ndarray) -> float:
    """The threshold t maximising the accuracy of 'same iff value >= t' on these pairs.

    Sort the values; cutting before sorted position i says 'different' for the i smallest
    and 'same' for the rest, so its accuracy is (negatives among the first i + positives
    among the rest) / n, for every i at once with two cumulative sums. Only cuts between
    distinct values count; t is the midpoint of the cut (-inf / +inf at the ends). Ties go
    to the lowest threshold."""
    values, labels = np.asarray(values, dtype=float), np.asarray(labels).astype(int)
    order = np.argsort(values, kind="stable")
    v, y = values[order], labels[order]
    neg_below = np.concatenate([[0], np.cumsum(1 - y)])  # (n+1,)
    pos_from = y.sum() - np.concatenate([[0], np.cumsum(y)])
    correct = neg_below + pos_from
    allowed = np.ones(len(v) + 1, bool)
    allowed[1:-1] = v[1:] > v[:-1]
    i = int(np.flatnonzero(allowed)[np.argmax(correct[allowed])])
    if i == 0:
        return -np.inf
    if i == len(v):
        return np.inf
    return float((v[i - 1] + v[i]) / 2)


def cosine_baseline(h1: np.ndarray, h2: np.ndarray, labels: np.ndarray, groups: np.ndarray, n_folds: int = 5) -> PairPredictions:
    """cos(h1, h2) >= t, with t chosen by best_threshold on the training folds (grouped by
    target word, as probe_baseline)."""
    cos, y = row_cosine(h1, h2), np.asarray(labels).astype(int)
    fold = grouped_folds(groups, n_folds)
    same = np.empty(len(y), bool)
    for f in np.unique(fold):
        train, test = fold != f, fold == f
        same[test] = cos[test] >= best_threshold(cos[train], y[train])
    return PairPredictions(same, cos, fold)
