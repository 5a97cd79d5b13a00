"""Circular probes: read a cyclic variable (weekday, month) off hidden states.

The method of Engels et al. 2024, "Not All Language Model Features Are Linear"
(section "Circle intervention"): project hidden states onto their top-k PCA
components, fit a least-squares map P (2 x k) to circle(label) = (cos, sin) of
2*pi*label/period, and read the label off the angle of the prediction. The same fitted
map gives the intervention: write a chosen point of the circle into a hidden state.

Everything here is plain numpy on float64 arrays and deterministic: the only
randomness (shuffled labels, random planes) comes from a seed or Generator you pass.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def circle_targets(labels: np.ndarray, period: int) -> np.ndarray:
    """(n, 2) points (cos, sin) of 2*pi*label/period: the probe's regression targets."""
    theta = 2 * np.pi * np.asarray(labels, dtype=float) / period
    return np.stack([np.cos(theta), np.sin(theta)], axis=-1)


def angle_of(xy: np.ndarray) -> np.ndarray:
    """Angle of each 2-D point, atan2(y, x), in [0, 2*pi)."""
    xy = np.asarray(xy, dtype=float)
    angle = np.mod(np.arctan2(xy[..., 1], xy[..., 0]), 2 * np.pi)
    return np.where(angle >= 2 * np.pi, 0.0, angle)  # np.mod(-1e-17, 2pi) rounds to 2pi


def circular_error_deg(pred_angle: np.ndarray, labels: np.ndarray, period: int) -> np.ndarray:
    """Per-example absolute circular difference, in degrees (0..180), between the
    predicted angle and 2*pi*label/period. Random guessing averages about 90 degrees."""
    diff = np.mod(np.asarray(pred_angle, dtype=float) - 2 * np.pi * np.asarray(labels) / period, 2 * np.pi)
    return np.degrees(np.minimum(diff, 2 * np.pi - diff))


def r2_score_xy(pred_xy: np.ndarray, target_xy: np.ndarray) -> float:
    """Mean over the two columns (cos, sin) of 1 - SSE/SST.

    A pure function of the rows, so a bootstrap can call it on resampled rows. NaN if a
    resample makes a target column constant (SST = 0)."""
    pred_xy, target_xy = np.asarray(pred_xy, dtype=float), np.asarray(target_xy, dtype=float)
    sse = ((target_xy - pred_xy) ** 2).sum(axis=0)
    sst = ((target_xy - target_xy.mean(axis=0)) ** 2).sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        r2 = 1 - sse / sst
    return float(np.mean(np.where(sst > 0, r2, np.nan)))


def nearest_class(angle: np.ndarray, period: int) -> np.ndarray:
    """Index of the nearest of the `period` equally spaced points on the circle."""
    return np.rint(np.asarray(angle) * period / (2 * np.pi)).astype(int) % period


class CircularProbe:
    """PCA(k) then least-squares map to (cos, sin): the probe of Engels et al.,
    section "Circle intervention".

    PCA first because the number of prompts (49 or 144) is far below d_model: a direct
    regression on d dimensions would fit anything. The cyclic variable is expected to
    dominate the task's variance, so it lives in the top few components.

    random_plane: None (default) fits the 2 x k map freely. Otherwise it is the seed or
        Generator of control (b): the map is restricted to a random 2-plane of the same
        k-D PCA space (an orthonormal (k, 2) basis Q drawn per fit), followed by a
        least-squares 2 x 2 map to (cos, sin), so coef_ = (Q @ M).T still has shape (2, k)
        and every method below (scoring, patching, rotating) works on the control too.
        A Generator is advanced by each fit, so a cross-validation passing one Generator
        draws a fresh plane per fold, reproducibly for the Generator's seed.

    Fitted attributes: mean_ (d,), components_ (k, d), coef_ (2, k), intercept_ (2,),
    weight_ (2, d) = coef_ @ components_ (the whole probe as one linear map on hidden
    states), weight_pinv_ (d, 2).
    """

    def __init__(self, period: int, n_components: int = 5, random_plane: int | np.random.Generator | None = None):
        if n_components < 2:
            raise ValueError(f"n_components={n_components}: a circle needs at least 2 PCA components")
        self.period = period
        self.n_components = n_components
        self.random_plane = random_plane

    def fit(self, X: np.ndarray, labels: np.ndarray) -> CircularProbe:
        X = np.asarray(X, dtype=float)
        self.mean_ = X.mean(axis=0)
        k = min(self.n_components, *X.shape)
        _, _, vt = np.linalg.svd(X - self.mean_, full_matrices=False)
        # SVD signs are arbitrary; fix them as scikit-learn's svd_flip does (largest loading
        # positive) so that the PCA basis is a function of the data alone.
        sign = np.sign(vt[np.arange(k), np.abs(vt[:k]).argmax(axis=1)])
        self.components_ = vt[:k] * sign[:, None]

        Z, Y = self.transform_pca(X), circle_targets(labels, self.period)
        self.intercept_ = Y.mean(axis=0)  # Z is centred, so the OLS intercept is the target mean
        if self.random_plane is None:
            basis = np.eye(k)
        else:
            basis, _ = np.linalg.qr(np.random.default_rng(self.random_plane).standard_normal((k, 2)))
        M = np.linalg.lstsq(Z @ basis, Y - self.intercept_, rcond=None)[0]
        self.coef_ = (basis @ M).T
        self.weight_ = self.coef_ @ self.components_
        self.weight_pinv_ = np.linalg.pinv(self.weight_)
        return self

    def transform_pca(self, X: np.ndarray) -> np.ndarray:
        """(n, k) coordinates in the fitted PCA basis."""
        return (np.asarray(X, dtype=float) - self.mean_) @ self.components_.T

    def predict_xy(self, X: np.ndarray) -> np.ndarray:
        """(n, 2) predicted (cos, sin)."""
        return self.transform_pca(X) @ self.coef_.T + self.intercept_

    def predict_angle(self, X: np.ndarray) -> np.ndarray:
        return angle_of(self.predict_xy(X))

    def predict(self, X: np.ndarray) -> np.ndarray:
        """(n,) class: the nearest of the `period` points on the circle to the predicted angle."""
        return nearest_class(self.predict_angle(X), self.period)

    def score(self, X: np.ndarray, labels: np.ndarray) -> float:
        """R^2 of the (cos, sin) predictions; see r2_score_xy."""
        return r2_score_xy(self.predict_xy(X), circle_targets(labels, self.period))

    def hidden_state_for(self, xy: np.ndarray, base: np.ndarray | None = None) -> np.ndarray:
        """Hidden states (n, d) that the probe reads as `xy` (n, 2): the paper's circle patch.

        Start from `base`, (d,) or (n, d); the default is the fitted mean, so everything
        outside the circle is mean-ablated as in the paper. Then replace its component in
        the probe subspace (the row space of W = coef_ @ components_, a 2-plane inside the
        PCA space):

            h' = base + W^+ (xy - predict_xy(base)),   W^+ the Moore-Penrose pseudo-inverse.

        Since W W^+ = I when W has rank 2, predict_xy(h') == xy exactly, and W^+ makes this
        the smallest edit (in Euclidean norm) that does so: nothing orthogonal to the probe
        subspace changes. Returns float64; cast to the model's dtype before patching.
        """
        base = self.mean_ if base is None else np.asarray(base, dtype=float)
        xy = np.atleast_2d(np.asarray(xy, dtype=float))
        return base + (xy - self.predict_xy(np.atleast_2d(base))) @ self.weight_pinv_.T

    def rotate(self, X: np.ndarray, delta_angle: np.ndarray | float) -> np.ndarray:
        """Keep each hidden state but rotate its 2-D probe reading by `delta_angle` radians
        (scalar or (n,)), about the centre of the target circle: the spec's `rotate` mode.

        A smaller departure from the data than hidden_state_for with the mean as base: the
        radius and everything outside the probe subspace are kept. delta = 2*pi*k/period
        moves the read-out label by k; delta = 0 returns X unchanged.
        """
        X = np.atleast_2d(np.asarray(X, dtype=float))
        xy = self.predict_xy(X)
        c, s = np.cos(delta_angle), np.sin(delta_angle)
        rotated = np.stack([c * xy[:, 0] - s * xy[:, 1], s * xy[:, 0] + c * xy[:, 1]], axis=1)
        return self.hidden_state_for(rotated, base=X)


@dataclass(eq=False)  # array fields: compare fields explicitly
class CircleFit:
    """Held-out result of a circular probe: per-example arrays (for bootstraps) and summaries."""

    pred_xy: np.ndarray  # (n, 2) held-out predictions
    angle_error_deg: np.ndarray  # (n,)
    correct: np.ndarray  # (n,) bool, nearest class == label
    r2: float
    mean_angle_error_deg: float
    class_accuracy: float

    @classmethod
    def from_predictions(cls, pred_xy: np.ndarray, labels: np.ndarray, period: int) -> CircleFit:
        angle = angle_of(pred_xy)
        err = circular_error_deg(angle, labels, period)
        correct = nearest_class(angle, period) == np.asarray(labels)
        r2 = r2_score_xy(pred_xy, circle_targets(labels, period))
        return cls(pred_xy, err, correct, r2, float(err.mean()), float(correct.mean()))


def cross_validate_circle(
    X: np.ndarray,
    labels: np.ndarray,
    groups: np.ndarray,
    period: int,
    n_components: int = 5,
    random_plane: int | np.random.Generator | None = None,
) -> CircleFit:
    """Leave-one-group-out evaluation of CircularProbe (groups = the duration beta in
    the circle tasks, so every label is seen in training).

    PCA and the map are both fitted on the training rows of each fold only: a PCA fitted
    on all rows would already have seen the held-out prompts. Each row's prediction comes
    from the one fold that held it out. `random_plane` gives control (b), a fresh random
    2-plane of each fold's PCA space (see CircularProbe).
    """
    X, labels, groups = np.asarray(X, dtype=float), np.asarray(labels), np.asarray(groups)
    if len(np.unique(groups)) < 2:
        raise ValueError("cross_validate_circle needs at least 2 distinct groups to hold one out")
    rng = None if random_plane is None else np.random.default_rng(random_plane)
    pred_xy = np.empty((len(X), 2))
    for g in np.unique(groups):
        test = groups == g
        probe = CircularProbe(period, n_components, random_plane=rng).fit(X[~test], labels[~test])
        pred_xy[test] = probe.predict_xy(X[test])
    return CircleFit.from_predictions(pred_xy, labels, period)


def cross_validate_circle_many(
    X: np.ndarray,
    label_sets: np.ndarray,
    groups: np.ndarray,
    period: int,
    n_components: int = 5,
) -> np.ndarray:
    """(K, n, 2) held-out predictions of the free circular probe for each of K label vectors.

    The same leave-one-group-out folds as `cross_validate_circle`. PCA depends on X alone
    and least squares is linear in its targets, so each fold fits its PCA once and solves
    for all K target sets in one call: a null distribution over many label arrangements
    (the scrambled orders) costs about one fit.
    """
    X, groups = np.asarray(X, dtype=float), np.asarray(groups)
    label_sets = np.atleast_2d(np.asarray(label_sets))
    K, n = label_sets.shape
    targets = circle_targets(label_sets, period)  # (K, n, 2)
    pred = np.empty((K, n, 2))
    for g in np.unique(groups):
        test = groups == g
        probe = CircularProbe(period, n_components).fit(X[~test], label_sets[0][~test])
        Z_train, Z_test = probe.transform_pca(X[~test]), probe.transform_pca(X[test])
        Y = targets[:, ~test].transpose(1, 0, 2).reshape(int((~test).sum()), 2 * K)
        intercept = Y.mean(axis=0)
        coef = np.linalg.lstsq(Z_train, Y - intercept, rcond=None)[0]
        pred[:, test] = (Z_test @ coef + intercept).reshape(int(test.sum()), K, 2).transpose(1, 0, 2)
    return pred


def r2_many(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """(K,) r2_score_xy of each of K prediction sets (K, n, 2) against its targets (K, n, 2)."""
    sse = ((target - pred) ** 2).sum(axis=1)
    sst = ((target - target.mean(axis=1, keepdims=True)) ** 2).sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        r2 = 1 - sse / sst
    return np.where(sst > 0, r2, np.nan).mean(axis=1)


def shuffled_labels(labels: np.ndarray, rng: int | np.random.Generator) -> np.ndarray:
    """Control (a): the label vector permuted across prompts.

    A permutation of prompts, not a relabelling of the classes: a relabelling can be a
    rotation or reflection of the circle, which a probe would still fit perfectly.
    """
    return np.random.default_rng(rng).permutation(np.asarray(labels))
