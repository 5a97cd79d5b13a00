"""Pure tests of probes.circle on synthetic data with a planted circle (spec acceptance 3)."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from probes.circle import (
    CircleFit,
    CircularProbe,
    angle_of,
    circle_targets,
    circular_error_deg,
    cross_validate_circle,
    r2_score_xy,
    shuffled_labels,
)


def planted_circle(period=7, d=64, radius=5.0, sigma=0.5, seed=0):
    """All (alpha, beta) pairs as in the task: a circle of `radius` in a random 2-plane of
    d dimensions, a random offset, plus Gaussian noise `sigma`. Returns X, alpha, beta."""
    rng = np.random.default_rng(seed)
    alpha, beta = np.meshgrid(np.arange(period), np.arange(1, period + 1), indexing="ij")
    alpha, beta = alpha.ravel(), beta.ravel()
    plane, _ = np.linalg.qr(rng.standard_normal((d, 2)))
    X = radius * circle_targets(alpha, period) @ plane.T + rng.standard_normal(d)
    return X + sigma * rng.standard_normal(X.shape), alpha, beta


# --- helpers -------------------------------------------------------------------------


def test_circle_targets_and_angle_of():
    xy = circle_targets(np.arange(7), 7)
    assert xy.shape == (7, 2)
    np.testing.assert_allclose(np.linalg.norm(xy, axis=1), 1)
    np.testing.assert_allclose(angle_of(xy), 2 * np.pi * np.arange(7) / 7, atol=1e-12)
    assert angle_of(np.array([[1.0, -1e-17]]))[0] == 0.0  # [0, 2pi), never 2pi


def test_circular_error_wraps():
    err = circular_error_deg(np.radians([350.0, 10.0, 180.0]), np.array([0, 0, 0]), 12)
    np.testing.assert_allclose(err, [10, 10, 180])


@given(st.floats(-100, 100), st.integers(0, 11), st.integers(-3, 3))
def test_circular_error_bounded_and_periodic(angle, label, turns):
    err = circular_error_deg(np.array([angle]), np.array([label]), 12)
    # the angle between the two unit vectors, computed another way
    expected = np.degrees(np.arccos(np.clip(np.cos(angle - 2 * np.pi * label / 12), -1, 1)))
    np.testing.assert_allclose(err, expected, atol=1e-4)
    np.testing.assert_allclose(circular_error_deg(np.array([angle]), np.array([label + 12 * turns]), 12), err, atol=1e-6)


def test_r2_score_xy():
    y = circle_targets(np.arange(7), 7)
    assert r2_score_xy(y, y) == 1.0
    assert abs(r2_score_xy(np.broadcast_to(y.mean(0), y.shape), y)) < 1e-12


def test_pca_matches_sklearn():
    from sklearn.decomposition import PCA

    X, alpha, _ = planted_circle()
    probe = CircularProbe(7).fit(X, alpha)
    ref = PCA(5).fit(X)
    np.testing.assert_allclose(np.abs(probe.components_), np.abs(ref.components_), atol=1e-8)


# --- acceptance 3: held-out probe on a planted circle ----------------------------------


def test_planted_circle_held_out():
    X, alpha, beta = planted_circle()
    fit = cross_validate_circle(X, alpha, beta, period=7)
    assert isinstance(fit, CircleFit)
    assert fit.pred_xy.shape == (49, 2) and fit.angle_error_deg.shape == (49,) and fit.correct.dtype == bool
    assert fit.r2 > 0.9
    assert fit.mean_angle_error_deg < 10
    assert fit.class_accuracy > 0.9


def test_planted_circle_months():
    X, alpha, beta = planted_circle(period=12)
    fit = cross_validate_circle(X, alpha, beta, period=12)
    assert fit.r2 > 0.9 and fit.mean_angle_error_deg < 10


def test_shuffled_labels_control():
    X, alpha, beta = planted_circle()
    shuffled = shuffled_labels(alpha, np.random.default_rng(0))
    assert sorted(shuffled) == sorted(alpha)  # a permutation of prompts, same label counts
    fit = cross_validate_circle(X, shuffled, beta, period=7)
    assert fit.r2 < 0.2
    assert fit.mean_angle_error_deg > 60


def test_random_plane_control_is_worse():
    X, alpha, beta = planted_circle()
    fitted = cross_validate_circle(X, alpha, beta, period=7)
    for seed in range(5):
        control = cross_validate_circle(X, alpha, beta, period=7, random_plane=seed)
        assert control.r2 < fitted.r2
        assert control.mean_angle_error_deg > fitted.mean_angle_error_deg


def test_random_plane_probe_lives_in_a_plane_of_the_pca_space():
    X, alpha, _ = planted_circle()
    probe = CircularProbe(7, random_plane=0).fit(X, alpha)
    assert probe.coef_.shape == (2, 5)
    assert np.linalg.matrix_rank(probe.coef_) == 2
    # training fit can only be worse than the free least-squares map on the same PCA space
    assert probe.score(X, alpha) < CircularProbe(7).fit(X, alpha).score(X, alpha)


# --- held-out scheme does not leak -----------------------------------------------------


def test_pure_noise_cv_is_not_in_sample():
    rng = np.random.default_rng(0)
    _, alpha, beta = planted_circle()
    X = rng.standard_normal((49, 64))
    in_sample = CircularProbe(7).fit(X, alpha).score(X, alpha)
    held_out = cross_validate_circle(X, alpha, beta, period=7)
    assert in_sample > 0.02  # 5 free directions always fit some noise in sample ...
    assert held_out.r2 < 0.0 < in_sample  # ... which does not carry over to held-out rows
    assert held_out.mean_angle_error_deg > 60


def test_each_fold_fits_on_training_rows_only(monkeypatch):
    X, alpha, beta = planted_circle()
    seen = []
    fit = CircularProbe.fit

    def spy(self, X_train, labels):
        seen.append({tuple(row) for row in X_train})
        return fit(self, X_train, labels)

    monkeypatch.setattr(CircularProbe, "fit", spy)
    cross_validate_circle(X, alpha, beta, period=7)
    assert len(seen) == 7
    for g, rows in zip(np.unique(beta), seen):
        assert rows == {tuple(row) for row in X[beta != g]}


def test_held_out_prediction_comes_from_its_own_fold():
    X, alpha, beta = planted_circle()
    fit = cross_validate_circle(X, alpha, beta, period=7)
    for g in np.unique(beta):
        probe = CircularProbe(7).fit(X[beta != g], alpha[beta != g])
        np.testing.assert_allclose(fit.pred_xy[beta == g], probe.predict_xy(X[beta == g]))


# --- interventions ---------------------------------------------------------------------


def test_hidden_state_for_reads_back_exactly():
    X, alpha, _ = planted_circle()
    probe = CircularProbe(7).fit(X, alpha)
    xy = circle_targets(np.arange(7), 7) * np.linspace(0.5, 2, 7)[:, None]
    h = probe.hidden_state_for(xy)  # base = fitted mean
    assert h.shape == (7, 64)
    np.testing.assert_allclose(probe.predict_xy(h), xy, atol=1e-5)
    h = probe.hidden_state_for(xy, base=X[:7])  # (n, d) base
    np.testing.assert_allclose(probe.predict_xy(h), xy, atol=1e-5)
    # the edit stays in the probe subspace: the part orthogonal to it is the base's
    off = np.eye(64) - probe.weight_pinv_ @ probe.weight_
    np.testing.assert_allclose((h - X[:7]) @ off.T, 0, atol=1e-8)
    np.testing.assert_allclose(probe.hidden_state_for(xy, base=X[0]), probe.hidden_state_for(xy, base=np.tile(X[0], (7, 1))))


def test_rotate_zero_is_identity():
    X, alpha, _ = planted_circle()
    probe = CircularProbe(7).fit(X, alpha)
    np.testing.assert_allclose(probe.rotate(X, np.zeros(len(X))), X, atol=1e-6)


@pytest.mark.parametrize("period", [7, 12])
def test_rotate_moves_class_by_k(period):
    X, alpha, _ = planted_circle(period=period, sigma=0.0)
    probe = CircularProbe(period).fit(X, alpha)
    assert np.array_equal(probe.predict(X), alpha)
    for k in range(period):
        moved = probe.rotate(X, np.full(len(X), 2 * np.pi * k / period))
        assert np.array_equal(probe.predict(moved), (alpha + k) % period)
    # per-row angles: send every prompt to class 0
    to_zero = probe.rotate(X, -2 * np.pi * alpha / period)
    assert np.array_equal(probe.predict(to_zero), np.zeros_like(alpha))


# --- determinism -----------------------------------------------------------------------


def test_deterministic():
    X, alpha, beta = planted_circle()
    a, b = CircularProbe(7).fit(X, alpha), CircularProbe(7).fit(X.copy(), alpha.copy())
    for name in ["mean_", "components_", "coef_", "intercept_"]:
        assert np.array_equal(getattr(a, name), getattr(b, name))
    for kwargs in [{}, {"random_plane": 3}]:
        f1 = cross_validate_circle(X, alpha, beta, 7, **kwargs)
        f2 = cross_validate_circle(X, alpha, beta, 7, **kwargs)
        assert np.array_equal(f1.pred_xy, f2.pred_xy) and f1.r2 == f2.r2
    assert np.array_equal(shuffled_labels(alpha, np.random.default_rng(5)), shuffled_labels(alpha, np.random.default_rng(5)))


def test_many_label_sets_in_one_fit_equal_separate_fits():
    from probes.circle import cross_validate_circle, cross_validate_circle_many, r2_many

    rng = np.random.default_rng(0)
    alpha = np.repeat(np.arange(7), 7)
    beta = np.tile(np.arange(7), 7)
    X = rng.standard_normal((49, 20)) + 3 * np.eye(20)[alpha]
    sets = np.stack([rng.permutation(7)[alpha] for _ in range(4)])
    pred = cross_validate_circle_many(X, sets, beta, 7, n_components=5)
    r2 = r2_many(pred, circle_targets(sets, 7))
    for k, labels in enumerate(sets):
        single = cross_validate_circle(X, labels, beta, 7, n_components=5)
        np.testing.assert_allclose(pred[k], single.pred_xy, atol=1e-10)
        assert r2[k] == pytest.approx(single.r2, abs=1e-10)
