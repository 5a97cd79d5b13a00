"""Pure tests of probes.irreducibility on clouds whose answer is known (spec acceptance 4)."""

import numpy as np
import pytest

from probes.irreducibility import mixture_index, normalise_cloud, separability_index

N = 5000


def ring(seed=0, noise=0.05):
    rng = np.random.default_rng(seed)
    t = rng.uniform(0, 2 * np.pi, N)
    return np.c_[np.cos(t), np.sin(t)] + noise * rng.standard_normal((N, 2))


def square(seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, (N, 2))


def plus(seed=0, noise=0.01):
    """A mixture: half the points on a horizontal segment, half on a vertical one."""
    rng = np.random.default_rng(seed)
    s, horizontal = rng.uniform(-1, 1, N), rng.random(N) < 0.5
    points = np.where(horizontal[:, None], np.c_[s, 0 * s], np.c_[0 * s, s])
    return points + noise * rng.standard_normal((N, 2))


def rotate(points, angle):
    c, s = np.cos(angle), np.sin(angle)
    return points @ np.array([[c, s], [-s, c]])


def test_normalise_cloud():
    p = normalise_cloud(3 * square() + 7)
    np.testing.assert_allclose(p.mean(0), 0, atol=1e-12)
    np.testing.assert_allclose(np.sqrt(np.mean((p**2).sum(1))), np.sqrt(2))


def test_ring_is_irreducible():
    p = ring()
    assert separability_index(p) > 1.0
    assert mixture_index(p) < 0.2


def test_square_is_separable():
    assert separability_index(square()) < 0.2
    # the minimum over rotations finds the separating axes wherever they point
    assert separability_index(rotate(5 * square(), 0.7)) < 0.2


def test_plus_is_a_mixture():
    assert mixture_index(plus()) > 0.4
    assert mixture_index(rotate(plus(), 1.0), steps=2000) > 0.4


def test_line_is_all_on_one_line():
    t = np.random.default_rng(0).uniform(-1, 1, N)
    assert mixture_index(np.c_[t, 0.5 * t + 1], steps=2000) > 0.99


@pytest.mark.parametrize("measure", [separability_index, lambda p: mixture_index(p, steps=500)])
def test_scale_invariant_and_deterministic(measure):
    p = ring(seed=1)
    assert measure(p) == measure(p.copy())
    assert measure(p) == pytest.approx(measure(10 * p - 3), abs=1e-3)
