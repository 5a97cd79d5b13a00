"""Helix probes: numbers as a line plus circles in the residual stream.

The method of Kantamneni & Tegmark 2025, "Language Models Use Trigonometry to Do
Addition" (arXiv 2502.00873), section "Fitting a helix": the hidden state of the token
of a number a is modelled as h(a) ~ mean + C B(a) with the basis

    B(a) = [a, cos(2 pi a / T), sin(2 pi a / T) for T in periods]

(periods 2, 5, 10, 100 by default: 2k+1 = 9 functions). Per layer the states are
projected to their top PCA components (100 in the paper), C is fitted by least squares
in that space and mapped back to model space. Baselines of comparable dimension are
functions of a as well: `linear` (a alone), `circle` (the trig columns alone), `poly`
(a polynomial of degree 2k+1) and the same helix fitted to permuted labels; `pca_k`
projects held-out states onto the training top-k PCA basis (a ceiling for any k-D
subspace, not a predictor from a).

Everything here is numpy on float64 arrays and deterministic: randomness (folds,
permutations, random subspaces) comes from the seed or Generator passed in.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

DEFAULT_PERIODS: tuple[float, ...] = (2, 5, 10, 100)
A_SCALE = 99.0  # the linear column is a / 99, so every column is O(1)

Basis = Callable[[np.ndarray], np.ndarray]


def parse_periods(text: str) -> tuple[float, ...]:
    """'2,5,10,100' -> (2.0, 5.0, 10.0, 100.0); every period must be positive."""
    try:
        periods = tuple(float(p) for p in text.split(",") if p.strip())
    except ValueError:
        raise ValueError(f"periods '{text}': expected comma-separated numbers such as 2,5,10,100") from None
    if not periods or any(p <= 0 for p in periods):
        raise ValueError(f"periods '{text}': expected one or more positive numbers such as 2,5,10,100")
    return periods


def circle_basis(a: np.ndarray, periods: Sequence[float] = DEFAULT_PERIODS) -> np.ndarray:
    """(n, 2k) columns cos(2 pi a / T), sin(2 pi a / T) for each period T, in that order."""
    a = np.asarray(a, dtype=float)
    cols = []
    for T in periods:
        theta = 2 * np.pi * np.mod(a, T) / T
        cols += [np.cos(theta), np.sin(theta)]
    B = np.stack(cols, axis=-1)
    return np.where(np.abs(B) < 1e-12, 0.0, B)  # sin(pi a) is 0, not 1e-16: the column is exactly zero


def linear_basis(a: np.ndarray, scale: float = A_SCALE) -> np.ndarray:
    """(n, 1): a / scale."""
    return (np.asarray(a, dtype=float) / scale)[:, None]


def helix_basis(a: np.ndarray, periods: Sequence[float] = DEFAULT_PERIODS, scale: float = A_SCALE) -> np.ndarray:
    """(n, 2k+1): [a / scale, cos, sin for each period]. With T = 2 the sine column is identically 0."""
    return np.hstack([linear_basis(a, scale), circle_basis(a, periods)])


def poly_basis(a: np.ndarray, degree: int = 9, scale: float = A_SCALE) -> np.ndarray:
    """(n, degree): Legendre polynomials 1..degree of 2a/scale - 1, the span of a, a^2, ..., a^degree
    (with the intercept the fit adds) but well conditioned."""
    x = 2 * np.asarray(a, dtype=float) / scale - 1
    return np.polynomial.legendre.legvander(x, degree)[:, 1:]


def basis_functions(periods: Sequence[float] = DEFAULT_PERIODS) -> dict[str, Basis]:
    """The task's fits, all functions of a alone: helix (2k+1), linear (1), circle (2k), poly (degree 2k+1)."""
    periods = tuple(periods)
    return {
        "helix": lambda a: helix_basis(a, periods),
        "linear": linear_basis,
        "circle": lambda a: circle_basis(a, periods),
        "poly": lambda a: poly_basis(a, 2 * len(periods) + 1),
    }


def usable_columns(B: np.ndarray, tol: float = 1e-9) -> np.ndarray:
    """Mask of the columns that are not all zero (sin(2 pi a / 2) vanishes at every integer a)."""
    return np.abs(np.asarray(B)).max(axis=0) > tol


class BasisFit:
    """h ~ mean + (B(a) - mean_B) W V: least squares on the top `pca_dim` PCA components.

    basis: a function a -> (n, p) design matrix. pca_dim: None fits in the full space;
    otherwise the centred states are first projected on their top `pca_dim` principal
    directions (fitted on the training rows only), as the paper does with 100.

    Fitted attributes: mean_ (d,), basis_mean_ (p_used,), columns_ (mask of used basis
    columns), components_ (r, d) orthonormal PCA rows, coef_ (p_used, r), and
    C_ = (coef_ @ components_).T, the (d, p_used) matrix of the paper.
    """

    def __init__(self, basis: Basis, pca_dim: int | None = 100) -> None:
        self.basis = basis
        self.pca_dim = pca_dim

    def design(self, a: np.ndarray) -> np.ndarray:
        return self.basis(np.asarray(a))[:, self.columns_] - self.basis_mean_

    def fit(self, X: np.ndarray, a: np.ndarray) -> "BasisFit":
        X = np.asarray(X, dtype=np.float64)
        B = self.basis(np.asarray(a))
        self.columns_ = usable_columns(B)
        B = B[:, self.columns_]
        self.mean_ = X.mean(0)
        self.basis_mean_ = B.mean(0)
        Xc = X - self.mean_
        _, s, vt = np.linalg.svd(Xc, full_matrices=False)
        rank = int((s > s[0] * 1e-10).sum()) if s.size and s[0] > 0 else 0
        r = rank if self.pca_dim is None else min(self.pca_dim, rank)
        self.components_ = vt[:r]
        Z = Xc @ self.components_.T
        self.coef_, *_ = np.linalg.lstsq(B - self.basis_mean_, Z, rcond=None)
        self.C_ = (self.coef_ @ self.components_).T
        return self

    def predict(self, a: np.ndarray) -> np.ndarray:
        """The fit's hidden state for each a: mean + C (B(a) - mean_B)."""
        return self.mean_ + self.design(a) @ self.C_.T

    def coordinates(self, X: np.ndarray) -> np.ndarray:
        """Least-squares basis coordinates of states (the inverse map, for plots): pinv(C) (h - mean)."""
        return (np.asarray(X, dtype=np.float64) - self.mean_) @ np.linalg.pinv(self.C_).T + self.basis_mean_

    def subspace(self, tol: float = 1e-8) -> np.ndarray:
        """(d, r) orthonormal basis of the span of C's columns."""
        u, s, _ = np.linalg.svd(self.C_, full_matrices=False)
        keep = s > (s[0] * tol if s.size and s[0] > 0 else np.inf)
        return u[:, keep]

    def swap_delta(self, a: np.ndarray, a_new: np.ndarray) -> np.ndarray:
        """C (B(a_new) - B(a)): added to the state of a, it moves the fitted helix part to a_new and keeps the rest."""
        return (self.design(a_new) - self.design(a)) @ self.C_.T

    def swap(self, X: np.ndarray, a: np.ndarray, a_new: np.ndarray, op: str = "replace") -> np.ndarray:
        """States X (n, d) of numbers a with their helix part moved to a_new.

        replace (the paper's swap): the component of X - mean in span(C) is replaced by
        C (B(a_new) - mean_B), i.e. X + P (predict(a_new) - X) with P the orthogonal projector
        on span(C); everything outside span(C) is kept, and the part of X inside span(C) that
        the fit does not explain is dropped. `a` is not needed for it.
        add: X + C (B(a_new) - B(a)), which keeps that unexplained in-subspace part too; with
        a_new = a it returns X unchanged, where replace returns X with its in-subspace
        residual removed.
        """
        X = np.asarray(X, dtype=np.float64)
        if op == "add":
            return X + self.swap_delta(a, a_new)
        if op == "replace":
            Q = self.subspace()
            return X + ((self.predict(a_new) - X) @ Q) @ Q.T
        raise ValueError(f"swap op {op!r}: expected replace or add")


class PCAFit:
    """Projection on the top-k principal directions: the `pca_k` ceiling and the paper's PCA-9 patch."""

    def __init__(self, k: int) -> None:
        self.k = k

    def fit(self, X: np.ndarray, a: np.ndarray | None = None) -> "PCAFit":
        X = np.asarray(X, dtype=np.float64)
        self.mean_ = X.mean(0)
        _, _, vt = np.linalg.svd(X - self.mean_, full_matrices=False)
        self.components_ = vt[: self.k]
        return self

    def reconstruct(self, X: np.ndarray) -> np.ndarray:
        Xc = np.asarray(X, dtype=np.float64) - self.mean_
        return self.mean_ + (Xc @ self.components_.T) @ self.components_


def kfold_indices(n: int, n_folds: int, seed: int | np.random.Generator = 0) -> list[np.ndarray]:
    """A seeded permutation of 0..n-1 cut into n_folds test folds (80/20 for 5 folds)."""
    if not 2 <= n_folds <= n:
        raise ValueError(f"n_folds must be between 2 and {n}")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    return [np.sort(f) for f in np.array_split(rng.permutation(n), n_folds)]


@dataclass
class HeldOut:
    """Held-out errors per row: each row is predicted by the fold that left it out."""

    sse: np.ndarray  # (n,) squared error of the prediction, summed over dimensions
    sst: np.ndarray  # (n,) squared distance from the training mean, summed over dimensions

    @property
    def r2(self) -> float:
        return r2_from_rows(np.stack([self.sse, self.sst], 1))

    def rows(self) -> np.ndarray:
        """(n, 2) [sse, sst], for a bootstrap over rows with `r2_from_rows`."""
        return np.stack([self.sse, self.sst], 1)


def r2_from_rows(rows: np.ndarray) -> float:
    """1 - sum(sse) / sum(sst) over rows [sse, sst]: R^2 in the full space, pooled over rows."""
    rows = np.asarray(rows, dtype=float)
    sst = rows[:, 1].sum()
    return float(1 - rows[:, 0].sum() / sst) if sst > 0 else float("nan")


def cross_validate(
    X: np.ndarray,
    a: np.ndarray,
    folds: list[np.ndarray],
    basis: Basis | None = None,
    pca_dim: int | None = 100,
    pca_k: int | None = None,
) -> HeldOut:
    """Held-out fit quality of `basis` (a predictor from a) or, with pca_k, of the top-k PCA projection.

    r2 = 1 - ||X_test - X_hat||^2 / ||X_test - mean_train||^2 pooled over the folds, in the
    full space of X. Everything (PCA included) is fitted on the training folds only.
    """
    X = np.asarray(X, dtype=np.float64)
    a = np.asarray(a)
    sse = np.empty(len(X))
    sst = np.empty(len(X))
    for test in folds:
        train = np.setdiff1d(np.arange(len(X)), test)
        if pca_k is not None:
            pred = PCAFit(pca_k).fit(X[train]).reconstruct(X[test])
        else:
            pred = BasisFit(basis, pca_dim).fit(X[train], a[train]).predict(a[test])
        sse[test] = ((X[test] - pred) ** 2).sum(1)
        sst[test] = ((X[test] - X[train].mean(0)) ** 2).sum(1)
    return HeldOut(sse=sse, sst=sst)


def cross_validate_many(
    X: np.ndarray,
    label_sets: np.ndarray,
    folds: list[np.ndarray],
    basis: Basis,
    pca_dim: int | None = 100,
) -> tuple[np.ndarray, np.ndarray]:
    """(sse (K, n), sst (n,)): `cross_validate` of `basis` for each of K label vectors at once.

    The PCA of each training fold depends on X alone, so it is computed once per fold and
    only the small least-squares problem (p basis columns) is solved per label vector: a
    null distribution over many relabellings costs about one fit.
    """
    X = np.asarray(X, dtype=np.float64)
    label_sets = np.atleast_2d(np.asarray(label_sets))
    K, n = label_sets.shape
    sse, sst = np.empty((K, n)), np.empty(n)
    for test in folds:
        train = np.setdiff1d(np.arange(n), test)
        template = BasisFit(basis, pca_dim).fit(X[train], label_sets[0][train])  # its PCA serves every label set
        V, mean = template.components_, template.mean_
        Z = (X[train] - mean) @ V.T
        Zt = (X[test] - mean) @ V.T
        # The part of a held-out state outside the training PCA basis is never predicted: its error is shared.
        outside = ((X[test] - mean) ** 2).sum(1) - (Zt**2).sum(1)
        sst[test] = ((X[test] - X[train].mean(0)) ** 2).sum(1)
        for k, a in enumerate(label_sets):
            B = basis(np.asarray(a))
            cols = usable_columns(B[train])
            B = B[:, cols]
            mean_B = B[train].mean(0)
            coef, *_ = np.linalg.lstsq(B[train] - mean_B, Z, rcond=None)
            sse[k, test] = (((B[test] - mean_B) @ coef - Zt) ** 2).sum(1) + outside
    return sse, sst


def random_subspace_map(Q_from: np.ndarray, span: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(d, d) map sending span(Q_from) isometrically onto a random subspace of the same rank inside span(span).

    A displacement delta in the helix subspace becomes M delta: the same length and
    variance, in random directions of the data's own (PCA) space. Q_from (d, r) and span
    (d, m) have orthonormal columns, m >= r.
    """
    r = Q_from.shape[1]
    if span.shape[1] < r:
        raise ValueError(f"a {r}-D random subspace needs a span of at least {r} dimensions")
    g = rng.standard_normal((span.shape[1], r))
    q, _ = np.linalg.qr(g)
    Q_to = span @ q
    return Q_to @ Q_from.T
