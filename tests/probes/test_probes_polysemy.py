"""PS-Eval metrics, the top-latent verdict, and the grouped probe and cosine baselines."""

from __future__ import annotations

import numpy as np
import pytest

from harness.results.stats import bootstrap_ci
from probes.polysemy import (
    Confusion,
    balanced_indices,
    best_threshold,
    compare_top_units,
    confusion,
    cosine_baseline,
    decoder_cosine,
    grouped_folds,
    pair_features,
    pair_rows,
    probe_baseline,
    rate_rows,
    rate_statistic,
)


def test_rates_from_counts_exactly():
    c = Confusion(tp=30, fp=10, tn=40, fn=20)
    assert c.n == 100
    assert c.accuracy == pytest.approx(0.70, abs=1e-9)
    assert c.precision == pytest.approx(0.75, abs=1e-9)
    assert c.recall == pytest.approx(0.60, abs=1e-9)
    assert c.specificity == pytest.approx(0.80, abs=1e-9)
    assert c.f1 == pytest.approx(60 / 90, abs=1e-9)


def test_zero_denominators_are_none():
    only_negatives_said_different = Confusion(tp=0, fp=0, tn=5, fn=0)
    assert only_negatives_said_different.precision is None
    assert only_negatives_said_different.recall is None
    assert only_negatives_said_different.f1 is None
    assert only_negatives_said_different.specificity == 1.0
    assert Confusion(0, 0, 0, 0).rates() == dict.fromkeys(("accuracy", "precision", "recall", "specificity", "f1"))


def test_confusion_counts_from_arrays():
    labels = np.array([1] * 50 + [0] * 50)
    same = np.array([True] * 30 + [False] * 20 + [True] * 10 + [False] * 40)
    assert confusion(labels, same) == Confusion(tp=30, fp=10, tn=40, fn=20)
    with pytest.raises(ValueError, match="shape"):
        confusion(labels, same[:-1])


def planted_pairs(n_words: int = 10, d: int = 64, seed: int = 0):
    """Latent vectors where latent (2 * word + sense) is the top one: a perfect sense detector."""
    rng = np.random.default_rng(seed)
    z1, z2, labels, words = [], [], [], []
    for w in range(n_words):
        for label in (1, 0):
            s1 = rng.integers(2)
            s2 = s1 if label else 1 - s1
            a, b = rng.random(d) * 0.5, rng.random(d) * 0.5
            a[2 * w + s1] = 5.0
            b[2 * w + s2] = 5.0
            z1.append(a), z2.append(b), labels.append(label), words.append(w)
    return np.array(z1), np.array(z2), np.array(labels), np.array(words)


def test_planted_latents_give_perfect_accuracy():
    z1, z2, labels, _ = planted_pairs()
    top = compare_top_units(z1, z2)
    c = confusion(labels, top.same)
    assert c.accuracy == 1.0 and c.specificity == 1.0 and c.recall == 1.0
    assert top.n_all_zero == 0
    np.testing.assert_array_equal(top.v1, 5.0)


def test_constant_argmax_is_the_trivial_line():
    z1, z2, labels, _ = planted_pairs()
    z1[:, -1] = z2[:, -1] = 100.0  # one outlier dimension always wins
    c = confusion(labels, compare_top_units(z1, z2).same)
    assert (c.recall, c.specificity, c.accuracy) == (1.0, 0.0, 0.5)


def test_all_zero_context_has_argmax_zero_as_in_the_authors_code_and_is_counted():
    z1 = np.array([[0.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    z2 = np.array([[0.0, 0.0, 0.0], [0.0, 2.0, 0.0], [3.0, 0.0, 0.0], [0.0, 0.0, 4.0]])
    top = compare_top_units(z1, z2)
    assert top.same.tolist() == [True, True, True, False]  # pair 0: no active latent, argmax 0 in both
    assert top.all_zero.tolist() == [True, False, True, True]
    assert top.n_all_zero == 3


def test_an_sae_of_zeros_sits_on_the_trivial_line_not_at_specificity_one():
    z1, z2, labels, _ = planted_pairs()
    c = confusion(labels, compare_top_units(np.zeros_like(z1), np.zeros_like(z2)).same)
    assert (c.recall, c.specificity, c.accuracy) == (1.0, 0.0, 0.5)


def test_each_rate_is_a_mean_over_its_denominator_pairs():
    labels = np.array([1] * 50 + [0] * 50)
    same = np.array([True] * 30 + [False] * 20 + [True] * 10 + [False] * 40)
    c = confusion(labels, same)
    for name in ("accuracy", "precision", "recall", "specificity"):
        mask, values = rate_rows(labels, same, name)
        assert values[mask].mean() == pytest.approx(getattr(c, name)), name
    assert [int(rate_rows(labels, same, r)[0].sum()) for r in ("accuracy", "precision", "recall", "specificity")] == [
        100,
        40,
        50,
        50,
    ]
    with pytest.raises(ValueError, match="not a mean"):
        rate_rows(labels, same, "f1")


def test_rate_statistic_bootstraps_over_pairs():
    labels = np.array([1] * 50 + [0] * 50)
    same = np.array([True] * 30 + [False] * 20 + [True] * 10 + [False] * 40)
    rows = pair_rows(labels, same)
    value, lo, hi = bootstrap_ci(rows, rate_statistic("specificity"), n_boot=2000)
    # 40 of 50 different-sense pairs: the binomial standard error is sqrt(.8 * .2 / 50) = 0.057, so a 95%
    # interval is about 0.22 wide; an interval over the 100 pairs as if all were in the denominator would be narrower.
    se = (0.8 * 0.2 / 50) ** 0.5
    assert value == pytest.approx(0.8) and hi - lo == pytest.approx(2 * 1.96 * se, rel=0.2)
    assert np.isnan(rate_statistic("recall")(rows[50:]))  # no positive pairs: undefined
    with pytest.raises(ValueError, match="unknown rate"):
        rate_statistic("auc")


def test_decoder_cosine_of_top_latents():
    W = np.array([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0], [0.0, 0.0]])
    np.testing.assert_allclose(decoder_cosine(W, [0, 0, 1, 3], [0, 1, 2, 0]), [1.0, 0.0, 2**-0.5, 0.0])


def test_balanced_indices_take_the_first_valid_pairs_per_class():
    labels = np.array([1, 0, 1, 1, 0, 1, 0])
    valid = np.array([True, True, False, True, True, True, False])
    np.testing.assert_array_equal(balanced_indices(labels, valid), [0, 1, 3, 4])
    np.testing.assert_array_equal(balanced_indices(labels), [0, 1, 2, 3, 4, 6])


def sense_vectors(n_words: int = 20, per_word: int = 6, d: int = 12, noise: float = 0.3, seed: int = 0):
    """Hidden states: each (word, sense) has a direction; a context adds noise to it."""
    rng = np.random.default_rng(seed)
    h1, h2, labels, words = [], [], [], []
    for w in range(n_words):
        senses = rng.standard_normal((2, d))
        for i in range(per_word):
            label = i % 2
            s1 = rng.integers(2)
            s2 = s1 if label else 1 - s1
            h1.append(senses[s1] + noise * rng.standard_normal(d))
            h2.append(senses[s2] + noise * rng.standard_normal(d))
            labels.append(label), words.append(w)
    return np.array(h1), np.array(h2), np.array(labels), np.array(words)


def test_grouped_folds_keep_each_word_in_one_fold():
    words = np.repeat(np.arange(7), 3)
    fold = grouped_folds(words, 5)
    assert set(fold) == set(range(5))
    for w in range(7):
        assert len(set(fold[words == w])) == 1
    assert len(set(grouped_folds(np.array([0, 0, 1, 1]), 5))) == 2
    with pytest.raises(ValueError, match="2 distinct"):
        grouped_folds(np.zeros(4), 5)


def test_pair_features_are_symmetric():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    np.testing.assert_array_equal(pair_features(a, b), pair_features(b, a))


def test_probe_baseline_separates_senses_out_of_fold():
    h1, h2, labels, words = sense_vectors()
    pred = probe_baseline(h1, h2, labels, words)
    c = pred.confusion(labels)
    assert c.accuracy > 0.85 and c.specificity > 0.8
    assert pred.same.shape == labels.shape and ((pred.score >= 0) & (pred.score <= 1)).all()
    for w in np.unique(words):
        assert len(set(pred.fold[words == w])) == 1


def test_probe_baseline_is_at_chance_on_shuffled_labels():
    h1, h2, labels, words = sense_vectors(n_words=40)
    shuffled = np.random.default_rng(1).permutation(labels)
    assert abs(probe_baseline(h1, h2, shuffled, words).confusion(shuffled).accuracy - 0.5) < 0.15


def test_probe_baseline_with_one_label_in_training_predicts_it():
    h1, h2, _, words = sense_vectors(n_words=4, per_word=2)
    labels = np.ones(len(words), int)
    assert probe_baseline(h1, h2, labels, words).same.all()


def test_best_threshold_maximises_training_accuracy():
    assert best_threshold(np.array([0.1, 0.2, 0.8, 0.9]), np.array([0, 0, 1, 1])) == pytest.approx(0.5)
    assert best_threshold(np.array([0.1, 0.2]), np.array([1, 1])) == -np.inf
    assert best_threshold(np.array([0.1, 0.2]), np.array([0, 0])) == np.inf
    # Tied values cannot be split: the best cut must fall between distinct values.
    t = best_threshold(np.array([0.5, 0.5, 0.5, 0.9]), np.array([0, 1, 0, 1]))
    assert t == pytest.approx(0.7)


def test_cosine_baseline_uses_training_fold_thresholds():
    h1, h2, labels, words = sense_vectors()
    pred = cosine_baseline(h1, h2, labels, words)
    assert pred.confusion(labels).accuracy > 0.85
    np.testing.assert_allclose(pred.score[0], h1[0] @ h2[0] / np.linalg.norm(h1[0]) / np.linalg.norm(h2[0]))
    assert set(pred.fold) == set(range(5))
