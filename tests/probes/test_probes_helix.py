"""probes.helix on synthetic arrays where the true helix is known."""

from __future__ import annotations

import numpy as np
import pytest

from probes.helix import (
    BasisFit,
    PCAFit,
    basis_functions,
    circle_basis,
    cross_validate,
    helix_basis,
    kfold_indices,
    linear_basis,
    parse_periods,
    poly_basis,
    r2_from_rows,
    random_subspace_map,
    usable_columns,
)

A = np.arange(100)


def synthetic(basis: np.ndarray, seed: int = 0, d: int = 256, noise: float = 0.1) -> np.ndarray:
    """X = B(a) C + noise, Gaussian C, noise sigma = 0.1 * the signal's std."""
    rng = np.random.default_rng(seed)
    signal = basis @ rng.standard_normal((basis.shape[1], d))
    return signal + noise * signal.std() * rng.standard_normal(signal.shape)


def test_basis_shapes_and_usable_columns():
    B = helix_basis(A)
    assert B.shape == (100, 9)
    assert np.all(B[:, 2] == 0)  # sin(2 pi a / 2) = sin(pi a) is exactly 0 at integers
    assert B[:, 0].min() == 0 and B[:, 0].max() == 1  # a / 99
    np.testing.assert_allclose(B[:, 5], np.cos(2 * np.pi * A / 10), atol=1e-12)
    counts = {name: int(usable_columns(f(A)).sum()) for name, f in basis_functions().items()}
    assert counts == {"helix": 8, "circle": 7, "linear": 1, "poly": 9}
    assert circle_basis(A, (7,)).shape == (100, 2) and linear_basis(A).shape == (100, 1) and poly_basis(A, 3).shape == (100, 3)


def test_parse_periods():
    assert parse_periods("2, 5,10,100") == (2, 5, 10, 100)
    for bad in ("", "a,b", "0,10", "-3"):
        with pytest.raises(ValueError):
            parse_periods(bad)


def test_fit_survives_the_zero_column_and_reconstructs_exactly():
    X = synthetic(helix_basis(A), noise=0.0)
    fit = BasisFit(basis_functions()["helix"], pca_dim=100).fit(X, A)
    assert fit.C_.shape == (256, 8) and np.isfinite(fit.C_).all()
    np.testing.assert_allclose(fit.predict(A), X, atol=1e-8)
    assert fit.subspace().shape == (256, 8)
    np.testing.assert_allclose(fit.swap_delta(A, A), 0, atol=1e-12)
    # moving a to a' along the fit gives exactly the state of a' (noise-free data)
    np.testing.assert_allclose(X[A] + fit.swap_delta(A, A[::-1]), X[A[::-1]], atol=1e-8)
    coords = fit.coordinates(X)
    np.testing.assert_allclose(coords, helix_basis(A)[:, fit.columns_], atol=1e-8)


def test_synthetic_helix_is_recovered_held_out():
    X = synthetic(helix_basis(A))
    folds = kfold_indices(100, 5, 0)
    bases = basis_functions()
    r2 = {name: cross_validate(X, A, folds, f).r2 for name, f in bases.items()}
    shuffled = cross_validate(X, np.random.default_rng(1).permutation(A), folds, bases["helix"]).r2
    assert r2["helix"] > 0.9
    assert r2["helix"] - r2["linear"] > 0.2
    assert shuffled < 0.3
    assert r2["circle"] < r2["helix"]  # the linear term carries real signal
    assert cross_validate(X, A, folds, pca_k=9).r2 > 0.9  # the ceiling: 9-D data, 9 components


def test_linear_data_helix_matches_linear():
    X = synthetic(linear_basis(A), seed=3)
    folds = kfold_indices(100, 5, 0)
    bases = basis_functions()
    helix, linear = (cross_validate(X, A, folds, bases[k]).r2 for k in ("helix", "linear"))
    assert linear > 0.9 and abs(helix - linear) < 0.05
    assert cross_validate(X, A, folds, bases["circle"]).r2 < linear - 0.2


def test_periods_matter():
    """A helix with the wrong period (7 instead of 10) fits period-10 data much worse."""
    X = synthetic(helix_basis(A, (10,)), seed=5)
    folds = kfold_indices(100, 5, 0)
    right = cross_validate(X, A, folds, lambda a: helix_basis(a, (10,))).r2
    wrong = cross_validate(X, A, folds, lambda a: helix_basis(a, (7,))).r2
    assert right > 0.9 and wrong < right - 0.3


def test_pca_dim_restricts_the_fit():
    X = synthetic(helix_basis(A), noise=0.0)
    fit = BasisFit(basis_functions()["helix"], pca_dim=3).fit(X, A)
    assert fit.components_.shape == (3, 256)
    resid = ((fit.predict(A) - X) ** 2).sum() / ((X - X.mean(0)) ** 2).sum()
    assert 0.01 < resid < 1  # only 3 of the 8 signal directions are kept


def test_folds_are_seeded_partitions():
    folds = kfold_indices(100, 5, 7)
    assert sorted(np.concatenate(folds).tolist()) == list(range(100))
    assert [len(f) for f in folds] == [20] * 5
    assert all((f == g).all() for f, g in zip(folds, kfold_indices(100, 5, 7)))
    assert any((f != g).any() for f, g in zip(folds, kfold_indices(100, 5, 8)))
    with pytest.raises(ValueError):
        kfold_indices(100, 1)


def test_r2_rows_pool_and_held_out_rows():
    rows = np.array([[1.0, 4.0], [3.0, 4.0]])
    assert r2_from_rows(rows) == pytest.approx(0.5)
    assert np.isnan(r2_from_rows(np.zeros((3, 2))))
    X = synthetic(helix_basis(A), seed=2)
    held = cross_validate(X, A, kfold_indices(100, 5, 0), basis_functions()["helix"])
    assert held.rows().shape == (100, 2) and held.r2 == pytest.approx(r2_from_rows(held.rows()))
    test = kfold_indices(100, 5, 0)[0]  # the first fold's rows, recomputed by hand from a fit on the rest
    train = np.setdiff1d(A, test)
    pred = BasisFit(basis_functions()["helix"], 100).fit(X[train], A[train]).predict(A[test])
    np.testing.assert_allclose(held.sse[test], ((X[test] - pred) ** 2).sum(1))
    np.testing.assert_allclose(held.sst[test], ((X[test] - X[train].mean(0)) ** 2).sum(1))


def test_pca_fit_reconstruction():
    X = synthetic(helix_basis(A), noise=0.0)
    p = PCAFit(8).fit(X)
    np.testing.assert_allclose(p.reconstruct(X), X, atol=1e-8)
    assert ((PCAFit(2).fit(X).reconstruct(X) - X) ** 2).sum() > 1e-3


def test_swap_replaces_the_helix_component_where_add_keeps_its_residual():
    """A planted state: the fit's helix point, plus a residual inside the helix subspace, plus one outside it."""
    rng = np.random.default_rng(3)
    X = 5.0 + synthetic(helix_basis(A), seed=3, noise=0.0)  # exactly mean + C (B(a) - mean_B)
    fit = BasisFit(basis_functions()["helix"], None).fit(X, A)
    np.testing.assert_allclose(fit.predict(A), X, atol=1e-8)
    Q = fit.subspace()
    a, a_new = np.array([3, 57, 90]), np.array([40, 12, 91])
    inside = Q @ rng.standard_normal((Q.shape[1], 3))
    outside = rng.standard_normal((256, 3))
    outside -= Q @ (Q.T @ outside)
    H = X[a] + inside.T + outside.T
    np.testing.assert_allclose(fit.swap(H, a, a_new, op="replace"), X[a_new] + outside.T, atol=1e-8)
    np.testing.assert_allclose(fit.swap(H, a, a_new, op="add"), X[a_new] + inside.T + outside.T, atol=1e-8)
    np.testing.assert_allclose(fit.swap(H, a, a, op="add"), H, atol=1e-8)  # add to the same a: a no-op
    np.testing.assert_allclose(fit.swap(H, a, a, op="replace"), X[a] + outside.T, atol=1e-8)  # replace: residual gone
    with pytest.raises(ValueError, match="replace or add"):
        fit.swap(H, a, a_new, op="move")


def test_random_subspace_map_is_an_isometry_into_the_span():
    rng = np.random.default_rng(0)
    Q_from, _ = np.linalg.qr(rng.standard_normal((50, 4)))
    span, _ = np.linalg.qr(rng.standard_normal((50, 20)))
    M = random_subspace_map(Q_from, span, np.random.default_rng(1))
    v = Q_from @ rng.standard_normal((4, 10))
    w = M @ v
    np.testing.assert_allclose(np.linalg.norm(w, axis=0), np.linalg.norm(v, axis=0))
    np.testing.assert_allclose(span @ (span.T @ w), w, atol=1e-10)  # lands in the span
    assert np.abs(Q_from.T @ w).max() < np.linalg.norm(w, axis=0).max()  # not the helix subspace itself
    np.testing.assert_allclose(M, random_subspace_map(Q_from, span, np.random.default_rng(1)))
    with pytest.raises(ValueError):
        random_subspace_map(Q_from, span[:, :3], rng)


def test_many_label_sets_in_one_fit_equal_separate_fits():
    from probes.helix import cross_validate_many

    rng = np.random.default_rng(0)
    a = np.arange(100)
    X = rng.standard_normal((100, 30)) + np.outer(np.cos(2 * np.pi * a / 10), rng.standard_normal(30))
    folds = kfold_indices(100, 5, 0)
    sets = np.stack([a, rng.permutation(a), (a * 7) % 100])
    basis = basis_functions()["helix"]
    sse, sst = cross_validate_many(X, sets, folds, basis, pca_dim=20)
    for k, labels in enumerate(sets):
        single = cross_validate(X, labels, folds, basis, pca_dim=20)
        np.testing.assert_allclose(sse[k], single.sse, rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(sst, single.sst, rtol=1e-12)
