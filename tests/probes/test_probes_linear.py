"""probes.linear on synthetic data where the right answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from probes.linear import C_GRID, LinearProbe, Standardiser, cross_validate_probe, evaluate_layers, majority_rate, shuffled_labels


def digits_one_hot(n: int = 300, d: int = 30, seed: int = 0, scale: float = 5.0) -> tuple[np.ndarray, np.ndarray]:
    """A digit as a one-hot pattern over ten features plus noise: linearly decodable for a multinomial probe."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 10, n)
    X = rng.normal(size=(n, d))
    X[:, :10] += scale * np.eye(10)[y]
    return X, y


def test_recovers_a_digit_written_in_one_feature():
    X, y = digits_one_hot()
    cv = cross_validate_probe(X, y, n_folds=5, seed=0)
    assert cv.accuracy >= 0.95
    assert len(cv.fold_accuracy) == 5 and all(C in C_GRID for C in cv.C)


def test_recovers_a_binary_label_in_the_sign_of_one_feature_among_many():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 300)
    X = rng.normal(size=(300, 50))
    X[:, 17] = (2 * y - 1) * (1 + rng.random(300))
    assert cross_validate_probe(X, y, seed=0).accuracy >= 0.95


def test_shuffled_labels_stay_near_chance():
    X, y = digits_one_hot(n=400)
    y_shuffled = shuffled_labels(y, 1)
    assert sorted(y_shuffled) == sorted(y) and not np.array_equal(y_shuffled, y)
    cv = cross_validate_probe(X, y_shuffled, seed=0)
    assert cv.accuracy <= majority_rate(y_shuffled) + 0.1


def test_noise_features_give_chance_and_a_nonlinear_label_is_not_read():
    rng = np.random.default_rng(4)
    X = rng.normal(size=(400, 10))
    assert cross_validate_probe(X, rng.integers(0, 10, 400), seed=0).accuracy <= 0.2
    parity = (X[:, 0] > 0) ^ (X[:, 1] > 0)  # XOR of two signs: no linear boundary separates it
    assert cross_validate_probe(X, parity.astype(int), seed=0).accuracy < 0.65


def test_every_example_is_predicted_once_by_a_probe_that_did_not_see_it():
    X, y = digits_one_hot(n=200)
    cv = cross_validate_probe(X, y, n_folds=5, seed=3)
    assert cv.pred.shape == y.shape and sorted(np.bincount(cv.fold)) == [40] * 5
    for k in range(5):  # stratified: each fold's label counts are within one of the proportional share
        counts = np.bincount(y[cv.fold == k], minlength=10)
        assert np.all(np.abs(counts - np.bincount(y, minlength=10) / 5) <= 1)
    np.testing.assert_array_equal(cv.correct, cv.pred == y)
    assert cv.accuracy == pytest.approx(np.mean(cv.fold_accuracy))


def test_standardisation_uses_the_training_data_only_and_makes_scale_irrelevant():
    X, y = digits_one_hot(n=200)
    probe = LinearProbe(C=1.0).fit(X[:150], y[:150])
    np.testing.assert_allclose(probe.standardiser_.mean_, X[:150].mean(0), rtol=1e-5, atol=1e-6)
    scaled = X * np.r_[1e4, np.ones(X.shape[1] - 1)]  # one feature in huge units
    probe_scaled = LinearProbe(C=1.0).fit(scaled[:150], y[:150])
    assert np.mean(probe.predict(X[150:]) == probe_scaled.predict(scaled[150:])) >= 0.97
    z = Standardiser().fit(np.c_[np.ones(5), np.arange(5.0)]).transform(np.c_[np.ones(5), np.arange(5.0)])
    assert np.all(z[:, 0] == 0) and abs(z[:, 1].std() - 1) < 1e-9


def test_inner_cv_picks_the_best_scoring_C():
    rng = np.random.default_rng(0)
    n, d = 120, 200
    y = rng.integers(0, 2, n)
    X = rng.normal(size=(n, d))
    X[:, 0] += 1.5 * (2 * y - 1)
    probe = LinearProbe(seed=0).fit(X, y)
    assert probe.C_ in C_GRID and set(probe.inner_scores_) == set(C_GRID)
    best = max(probe.inner_scores_.values())
    assert probe.inner_scores_[probe.C_] == best and probe.C_ == min(C for C, v in probe.inner_scores_.items() if v == best)
    fixed = LinearProbe(C=0.01).fit(X, y)
    assert fixed.C_ == 0.01 and fixed.inner_scores_ == {}
    assert probe.score(X, y) == pytest.approx(np.mean(probe.predict(X) == y))
    assert probe.predict_proba(X).shape == (n, 2)


def test_deterministic_for_a_seed():
    X, y = digits_one_hot(n=150, scale=1.0)
    a, b = cross_validate_probe(X, y, seed=7), cross_validate_probe(X, y, seed=7)
    np.testing.assert_array_equal(a.pred, b.pred)
    assert a.C == b.C


def test_evaluate_layers_finds_the_layer_that_carries_the_label():
    X, y = digits_one_hot(n=200)
    noise = np.random.default_rng(1).normal(size=X.shape)
    fits = evaluate_layers([noise, X, noise], y, seed=0)
    assert list(fits) == [0, 1, 2]
    assert fits[1].accuracy >= 0.95 and max(fits[0].accuracy, fits[2].accuracy) <= 0.25
    assert list(evaluate_layers({4: X, 9: noise}, y)) == [4, 9]


def test_rare_and_single_labels_do_not_crash():
    X, y = digits_one_hot(n=60)
    y = y.copy()
    y[0] = 11  # a label seen once
    cv = cross_validate_probe(X, y, seed=0)
    assert cv.pred.shape == (60,)
    constant = LinearProbe().fit(X, np.zeros(60, dtype=int))
    assert np.all(constant.predict(X) == 0) and constant.score(X, np.zeros(60)) == 1.0


def test_majority_rate():
    assert majority_rate(np.array([0, 0, 0, 5, 2])) == pytest.approx(0.6)
    assert majority_rate(np.arange(10)) == pytest.approx(0.1)


def test_probes_fitted_in_worker_processes_equal_the_same_probes_fitted_here(monkeypatch):
    """cross_validate_many spreads independent fits over processes; every result is the one-at-a-time result."""
    import probes.linear as linear

    rng = np.random.default_rng(0)
    problems = []
    for j in range(3):
        y = rng.integers(0, 4, 120)
        X = rng.normal(size=(120, 16)) + 0.8 * np.eye(16)[y * (j + 1) % 16]
        problems.append((X.astype(np.float32), y))
    monkeypatch.setattr(linear, "PARALLEL_MIN_VALUES", 0)
    parallel = linear.cross_validate_many(problems, n_folds=3, seed=5, n_jobs=2)
    for (X, y), got in zip(problems, parallel):
        alone = linear.cross_validate_probe(X, y, n_folds=3, seed=5)
        assert np.array_equal(got.pred, alone.pred) and got.C == alone.C and got.fold_accuracy == alone.fold_accuracy
    monkeypatch.setenv("HARNESS_ANALYSIS_WORKERS", "1")
    assert linear.analysis_workers() == 1
    monkeypatch.delenv("HARNESS_ANALYSIS_WORKERS")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "64")
    assert linear.analysis_workers() == 1  # ranks on one machine share its cores
