"""probes.neurons on synthetic activations whose language neurons are planted."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score

from probes.neurons import (
    SentencePool,
    average_precision,
    default_k,
    edge_layers,
    layer_histogram,
    layer_of,
    median_rows,
    overlap_matrix,
    random_units,
    select_units,
)


def test_ap_matches_sklearn_with_ties():
    rng = np.random.default_rng(0)
    y = (rng.random(60) < 0.25).astype(int)
    X = np.round(rng.normal(size=(60, 200)), 1)  # rounding makes many ties
    ap = average_precision(X, y, chunk=32)
    expected = np.array([average_precision_score(y, X[:, j]) for j in range(X.shape[1])])
    np.testing.assert_allclose(ap, expected, atol=1e-12)


def test_ap_label_neuron_negation_and_constant():
    # The shipped split: 80 sentences per language, 6 languages -> positive share 1/6.
    y = np.repeat(np.arange(6), 80) == 4
    rng = np.random.default_rng(1)
    X = rng.normal(size=(480, 50))
    X[:, 3] = y
    X[:, 17] = -(y + 0.01 * rng.random(480))  # the label's negation, without ties
    X[:, 30] = 2.5
    X[:, 40] = -y.astype(float)  # the exact negation is two tie groups: AP of a constant
    ap = average_precision(X, y.astype(int))
    assert ap[3] == pytest.approx(1.0)
    assert ap[30] == pytest.approx(1 / 6) and ap[40] == pytest.approx(1 / 6)
    assert ap[17] == ap.min() < 0.12
    sel = select_units(ap, 5)
    assert sel.top[0] == 3 and 17 in sel.bottom and sel.bottom[0] == 17
    assert 3 not in sel.bottom and 17 not in sel.top


def test_ap_rejects_bad_labels():
    with pytest.raises(ValueError):
        average_precision(np.zeros((3, 2)), np.array([0, 0, 0]))
    with pytest.raises(ValueError):
        average_precision(np.zeros((3, 2)), np.array([0, 2, 1]))


def test_sentence_pool_means_ignore_padding():
    pool = SentencePool(3, 2)
    act = torch.arange(2 * 4 * 5, dtype=torch.float32).reshape(2, 4, 5)
    mask = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    pool.add(0, act, mask, [2, 0])
    pool.add(1, act[:, :, :3], mask, [2, 0])
    with pytest.raises(RuntimeError):  # sentence 1 not seen yet
        pool.matrix()
    pool.add(0, act[:1, 2:], torch.ones(1, 2), [1])
    pool.add(1, act[:1, 2:, :3], torch.ones(1, 2), [1])
    m = pool.matrix()
    assert m.shape == (3, 8) and pool.widths == [5, 3]
    torch.testing.assert_close(m[2, :5], act[0, 2:].mean(0))
    torch.testing.assert_close(m[0, :5], act[1].mean(0))
    torch.testing.assert_close(m[1, 5:], act[0, 2:, :3].mean(0))


def planted_stream(n_per_lang=40, n_layers=4, width=32, seed=0):
    """Token-level activations streamed in padded batches; unit (layer 0, 5 + L) and (last layer, 2*L) fire on language L."""
    rng = np.random.default_rng(seed)
    n_langs = 6
    labels = np.repeat(np.arange(n_langs), n_per_lang)
    order = rng.permutation(len(labels))
    pool = SentencePool(len(labels), n_layers)
    for start in range(0, len(order), 16):
        rows = order[start : start + 16]
        lengths = rng.integers(3, 12, size=len(rows))
        T = int(lengths.max())
        mask = torch.zeros(len(rows), T)
        for r, n in enumerate(lengths):
            mask[r, T - n :] = 1
        for layer in range(n_layers):
            act = torch.as_tensor(rng.normal(size=(len(rows), T, width)), dtype=torch.float32)
            for r, i in enumerate(rows):
                L = labels[i]
                if layer == 0:
                    act[r, :, 5 + L] += 3.0
                if layer == n_layers - 1:
                    act[r, :, 2 * L] -= 3.0  # fires less on L: a bottom neuron
                act[r, : T - lengths[r]] = 1e6  # padding must not leak into the means
            pool.add(layer, act, mask, rows.tolist())
    return pool, labels


def test_planted_language_neurons_are_found():
    pool, labels = planted_stream()
    X = pool.matrix()
    widths = pool.widths
    assert torch.isfinite(X).all() and X.abs().max() < 100
    tops, bottoms = [], []
    for L in range(6):
        ap = average_precision(X, (labels == L).astype(int))
        sel = select_units(ap, 1)
        assert sel.top[0] == 5 + L and ap[5 + L] > 0.95
        assert sel.bottom[0] == (len(widths) - 1) * 32 + 2 * L and ap[sel.bottom[0]] < 0.1
        tops.append(sel.top)
        bottoms.append(sel.bottom)
        assert layer_of(sel.top, widths)[0] == 0 and layer_of(sel.bottom, widths)[0] == len(widths) - 1
    assert np.allclose(overlap_matrix(tops, 1), np.eye(6)) and np.allclose(overlap_matrix(bottoms, 1), np.eye(6))
    hist = layer_histogram(np.concatenate(tops + bottoms), widths)
    assert hist.sum() == pytest.approx(1.0) and hist[0] == pytest.approx(0.5) and hist[-1] == pytest.approx(0.5)


def test_unplanted_units_are_near_chance():
    pool, labels = planted_stream(seed=3)
    ap = average_precision(pool.matrix(), (labels == 2).astype(int))
    planted = {5 + 2, 3 * 32 + 4}
    rest = np.array([a for j, a in enumerate(ap) if j not in planted])
    assert abs(np.median(rest) - 1 / 6) < 0.05 and rest.max() < 0.6


def test_selection_overlap_and_layers():
    ap = np.array([0.5, 0.9, 0.1, 0.9, 0.3])
    sel = select_units(ap, 2)
    assert sel.top.tolist() == [1, 3] and sel.bottom.tolist() == [2, 4]
    assert sel.both.tolist() == [1, 2, 3, 4]
    with pytest.raises(ValueError):
        select_units(ap, 6)
    assert default_k(36864) == 184 and default_k(10) == 1
    m = overlap_matrix([np.array([1, 2, 3, 4]), np.array([3, 4, 5, 6])], 4)
    assert m.tolist() == [[1.0, 0.5], [0.5, 1.0]]
    assert layer_of(np.array([0, 9, 10, 24, 25]), [10, 15, 5]).tolist() == [0, 0, 1, 1, 2]
    with pytest.raises(ValueError):
        layer_of(np.array([30]), [10, 15, 5])
    assert edge_layers(10).tolist() == [True, True] + [False] * 6 + [True, True]
    assert edge_layers(3).tolist() == [True, False, True]
    assert layer_histogram(np.array([], dtype=int), [2, 2]).tolist() == [0.0, 0.0]


def test_median_matches_numpy():
    x = torch.as_tensor(np.random.default_rng(2).normal(size=(9, 7)))
    np.testing.assert_allclose(median_rows(x).numpy(), np.median(x.numpy(), 0))
    np.testing.assert_allclose(median_rows(x[:8]).numpy(), np.median(x[:8].numpy(), 0))


def test_random_units_reproducible_and_uniform():
    a, b = random_units(100, 10, [0, 7, 1]), random_units(100, 10, [0, 7, 1])
    assert a.tolist() == b.tolist() and len(set(a.tolist())) == 10
    assert random_units(100, 10, [0, 7, 2]).tolist() != a.tolist()
    seen = np.concatenate([random_units(20, 5, s) for s in range(200)])
    assert set(seen.tolist()) == set(range(20))  # every unit can be drawn: none excluded
    with pytest.raises(ValueError):
        random_units(5, 6, 0)


def test_reweighted_ap_equals_the_ap_of_the_rows_repeated():
    """A bootstrap draw as weights: AP with row i counted w[i] times, ties included, as sklearn computes it."""
    from sklearn.metrics import average_precision_score

    from probes.neurons import ReweightedAP

    rng = np.random.default_rng(3)
    n = 40
    y = (rng.random(n) < 0.3).astype(int)
    X = np.round(rng.normal(size=(n, 5)), 1)  # rounded: many ties
    X[:, 4] = 0.0  # a constant column
    ap = ReweightedAP(X, y)
    assert np.allclose(ap(), [average_precision_score(y, X[:, j]) for j in range(5)])
    w = rng.integers(0, 4, size=n)
    repeated = np.repeat(np.arange(n), w)
    expected = [average_precision_score(y[repeated], X[repeated, j]) for j in range(5)]
    assert np.allclose(ap(w), expected)
    assert np.allclose(ap(w), [average_precision_score(y, X[:, j], sample_weight=w) for j in range(5)])
    assert np.isnan(ap(np.where(y == 1, 0, 1))).all()  # a draw without a positive: AP undefined


def test_a_draw_in_blocks_of_columns_is_the_whole_draw_to_rounding():
    """Blocks of columns keep a 7B model's draw in cache; each column's sums are its own, so the
    numbers are those of the whole matrix at once to rounding, and a bundled model's pool (480
    sentences x 2,944 candidates on gemma3-270m) still runs whole, bit for bit as before."""
    from probes.neurons import ReweightedAP

    rng = np.random.default_rng(3)
    scores = rng.standard_normal((90, 257)).round(1)  # rounding makes ties
    labels = (rng.random(90) < 0.3).astype(int)
    whole, blocked = ReweightedAP(scores, labels), ReweightedAP(scores, labels)
    assert whole.block == scores.shape[1]
    blocked.block = 7
    for _ in range(20):
        w = rng.multinomial(90, np.ones(90) / 90)
        a, b = whole(w), blocked(w)
        assert np.allclose(a, b, rtol=1e-13, atol=0) and np.array_equal(
            np.argsort(-a, kind="stable"), np.argsort(-b, kind="stable")
        )
    assert ReweightedAP(np.zeros((480, 2944)), np.arange(480) % 6 == 0).block == 2944
    assert ReweightedAP(np.zeros((480, 18352)), np.arange(480) % 6 == 0).block < 18352  # a 7B model's pool
