"""Linear probes: read a categorical label (a digit, a token class) off hidden states.

The standard linear probe of the interpretability literature: multinomial logistic
regression on features standardised with the training fold's mean and standard
deviation, L2-regularised with the inverse strength C picked from a small grid by an
inner cross-validation on the training fold only, evaluated by an outer stratified
K-fold cross-validation. Every example is predicted exactly once, by the probe that
did not see it, so held-out accuracy and per-example correctness (for a bootstrap) come
out of one run.

Controls: `shuffled_labels` permutes the labels (a probe that still scores above chance
on them is memorising, not reading), `majority_rate` is the accuracy of always guessing
the most frequent label (the chance line for unbalanced labels).

Plain numpy and scikit-learn, deterministic for a seed; nothing here knows about models.
`cross_validate_many` fits many independent probes (layers x labels) in worker processes
when the work is large enough to pay for them: lbfgs on a few hundred examples is Python-
and latency-bound on one core, so processes, not BLAS threads, are what use a machine's
other cores, and each probe gives exactly what it gives alone.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import KFold, StratifiedKFold

C_GRID = (0.01, 0.1, 1.0, 10.0)


def _folds(y: np.ndarray, n_splits: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified folds when every label has at least n_splits examples, shuffled plain folds otherwise."""
    n_splits = min(n_splits, len(y))
    _, counts = np.unique(y, return_counts=True)
    if counts.min() >= n_splits:
        splitter = StratifiedKFold(n_splits, shuffle=True, random_state=seed)
    else:
        splitter = KFold(n_splits, shuffle=True, random_state=seed)
    return list(splitter.split(np.zeros(len(y)), y))


class Standardiser:
    """x -> (x - mean) / std with the statistics of the data it was fitted on; constant columns pass as 0."""

    def fit(self, X: np.ndarray) -> "Standardiser":
        X = np.asarray(X)
        self.mean_ = X.mean(0)
        std = X.std(0)
        self.scale_ = np.where(std > 1e-12, std, 1.0)
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        return (np.asarray(X) - self.mean_) / self.scale_


class LinearProbe:
    """Standardise, pick C by inner CV, fit multinomial logistic regression (scikit-learn style).

    Cs: the grid of inverse L2 strengths; the inner CV fits them in increasing order,
        each warm-started from the previous (the regularisation path), which is several
        times faster than independent fits.
    inner_folds: folds of the inner CV on the training data (stratified when possible).
    C: a fixed C, skipping the inner CV.

    Fitted attributes: classes_, C_ (chosen C), inner_scores_ ({C: mean inner accuracy}),
    standardiser_, model_ (the scikit-learn LogisticRegression on standardised features).
    """

    def __init__(
        self,
        Cs: Sequence[float] = C_GRID,
        inner_folds: int = 3,
        C: float | None = None,
        max_iter: int = 100,
        tol: float = 1e-4,
        seed: int = 0,
    ) -> None:
        self.Cs = tuple(sorted(Cs))
        self.inner_folds = inner_folds
        self.C = C
        self.max_iter = max_iter
        self.tol = tol
        self.seed = seed

    def _new(self, C: float) -> LogisticRegression:
        return LogisticRegression(C=C, max_iter=self.max_iter, tol=self.tol, warm_start=True)

    def _path(self, Z: np.ndarray, y: np.ndarray, Z_val: np.ndarray, y_val: np.ndarray) -> list[float]:
        """Validation accuracy of each C, fitting along the path with warm starts."""
        clf, scores = None, []
        for C in self.Cs:
            if clf is None:
                clf = self._new(C)
            clf.C = C
            clf.fit(Z, y)
            scores.append(float((clf.predict(Z_val) == y_val).mean()))
        return scores

    def fit(self, X: np.ndarray, y: np.ndarray) -> "LinearProbe":
        X = np.asarray(X, dtype=np.float32)
        y = np.asarray(y)
        self.classes_ = np.unique(y)
        self.standardiser_ = Standardiser().fit(X)
        Z = self.standardiser_.transform(X).astype(np.float32)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            warnings.simplefilter("ignore", UserWarning)  # a class too small for the stratified split
            if len(self.classes_) < 2:
                self.C_, self.inner_scores_, self.model_ = None, {}, None
                return self
            if self.C is not None:
                self.C_, self.inner_scores_ = float(self.C), {}
            else:
                totals = np.zeros(len(self.Cs))
                for train, val in _folds(y, self.inner_folds, self.seed):
                    if len(np.unique(y[train])) < 2:
                        continue
                    # Standardise on the inner training part too, so the inner CV sees what the outer one will.
                    inner = Standardiser().fit(X[train])
                    totals += self._path(
                        inner.transform(X[train]).astype(np.float32), y[train], inner.transform(X[val]).astype(np.float32), y[val]
                    )
                self.inner_scores_ = {C: float(s) for C, s in zip(self.Cs, totals / max(self.inner_folds, 1))}
                self.C_ = self.Cs[int(np.argmax(totals))]  # ties: the smallest C, i.e. the strongest regularisation
            self.model_ = self._new(self.C_).fit(Z, y)
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        if self.model_ is None:
            return np.full(len(X), self.classes_[0])
        return self.model_.predict(self.standardiser_.transform(np.asarray(X, dtype=np.float32)).astype(np.float32))

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """(n, n_classes) probabilities, columns in the order of classes_."""
        if self.model_ is None:
            return np.ones((len(X), 1))
        return self.model_.predict_proba(self.standardiser_.transform(np.asarray(X, dtype=np.float32)).astype(np.float32))

    def score(self, X: np.ndarray, y: np.ndarray) -> float:
        """Accuracy on (X, y)."""
        return float((self.predict(X) == np.asarray(y)).mean())


@dataclass
class ProbeCV:
    """Held-out result of an outer cross-validation: every example predicted by a probe that did not see it."""

    pred: np.ndarray  # (n,) held-out prediction per example
    correct: np.ndarray  # (n,) bool
    fold: np.ndarray  # (n,) outer fold of each example
    fold_accuracy: list[float]
    C: list[float | None] = field(default_factory=list)  # C chosen in each outer fold

    @property
    def accuracy(self) -> float:
        return float(self.correct.mean())


def cross_validate_probe(X: np.ndarray, y: np.ndarray, n_folds: int = 5, seed: int = 0, **probe_kwargs) -> ProbeCV:
    """Outer stratified K-fold CV of a LinearProbe (C chosen inside each training fold)."""
    X = np.asarray(X, dtype=np.float32)
    y = np.asarray(y)
    pred = np.empty_like(y)
    fold = np.empty(len(y), dtype=int)
    fold_acc, Cs = [], []
    for k, (train, test) in enumerate(_folds(y, n_folds, seed)):
        probe = LinearProbe(seed=seed, **probe_kwargs).fit(X[train], y[train])
        pred[test] = probe.predict(X[test])
        fold[test] = k
        fold_acc.append(float((pred[test] == y[test]).mean()))
        Cs.append(probe.C_)
    return ProbeCV(pred=pred, correct=pred == y, fold=fold, fold_accuracy=fold_acc, C=Cs)


def evaluate_layers(
    features: Mapping[int, np.ndarray] | Sequence[np.ndarray], y: np.ndarray, n_folds: int = 5, seed: int = 0, **probe_kwargs
) -> dict[int, ProbeCV]:
    """cross_validate_probe on each layer's features ({layer: (n, d)} or a list indexed by layer), same folds for all."""
    items = features.items() if isinstance(features, Mapping) else enumerate(features)
    return cross_validate_grid({int(L): X for L, X in items}, {"y": y}, n_folds, seed, **probe_kwargs)["y"]


def cross_validate_grid(
    features: Mapping[int, np.ndarray], labels: Mapping[str, np.ndarray], n_folds: int = 5, seed: int = 0, **probe_kwargs
) -> dict[str, dict[int, ProbeCV]]:
    """{label name: {layer: ProbeCV}}: every label set probed at every layer, a real probe and its
    controls alike (the same folds and settings for all), through `cross_validate_many`."""
    jobs = [(L, name) for L in features for name in labels]
    done = cross_validate_many([(features[L], labels[name]) for L, name in jobs], n_folds, seed, **probe_kwargs)
    fits: dict[str, dict[int, ProbeCV]] = {name: {} for name in labels}
    for (L, name), fit in zip(jobs, done):
        fits[name][L] = fit
    return fits


# Below this many feature values in all (sum of n x d), worker start-up (~1-2 s) outweighs the fits.
PARALLEL_MIN_VALUES = 1_000_000


def analysis_workers() -> int:
    """Worker processes for probe fitting: this process's cores, shared among the launcher's local ranks.

    HARNESS_ANALYSIS_WORKERS overrides (1: everything in this process).
    """
    if os.environ.get("HARNESS_ANALYSIS_WORKERS"):
        return max(1, int(os.environ["HARNESS_ANALYSIS_WORKERS"]))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))


def cross_validate_many(
    problems: Sequence[tuple[np.ndarray, np.ndarray]], n_folds: int = 5, seed: int = 0, n_jobs: int | None = None, **probe_kwargs
) -> list[ProbeCV]:
    """cross_validate_probe on each (X, y), in order; in parallel worker processes when the work is large.

    Every probe is fitted exactly as alone (same folds, same seed, one BLAS thread per worker),
    so the results do not depend on `n_jobs`. None: `analysis_workers()`.
    """
    n_jobs = analysis_workers() if n_jobs is None else n_jobs
    size = sum(np.asarray(X).size for X, _ in problems)
    if n_jobs <= 1 or len(problems) <= 1 or size < PARALLEL_MIN_VALUES:
        return [cross_validate_probe(X, y, n_folds, seed, **probe_kwargs) for X, y in problems]
    from sklearn.utils.parallel import Parallel, delayed  # joblib, as scikit-learn itself runs it

    run = Parallel(n_jobs=min(n_jobs, len(problems)), backend="loky", inner_max_num_threads=1)
    return run(delayed(cross_validate_probe)(X, y, n_folds, seed, **probe_kwargs) for X, y in problems)


def shuffled_labels(y: np.ndarray, rng: np.random.Generator | int) -> np.ndarray:
    """The labels in a random order: the same label counts with any link to the features broken."""
    rng = np.random.default_rng(rng) if not isinstance(rng, np.random.Generator) else rng
    return np.asarray(y)[rng.permutation(len(y))]


def majority_rate(y: np.ndarray) -> float:
    """Accuracy of always answering the most frequent label: chance for unbalanced labels."""
    _, counts = np.unique(np.asarray(y), return_counts=True)
    return float(counts.max() / counts.sum()) if len(counts) else float("nan")
