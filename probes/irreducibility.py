"""Irreducibility of a 2-D feature (Engels et al. 2024, section "Irreducibility measures").

A 2-D feature is reducible if it splits into simpler parts, in one of two ways:
- separable: two independent 1-D features, i.e. some rotation makes the coordinates
  independent. Measured by the separability index S (bits): the minimum over rotations
  of the mutual information between the two coordinates. Higher = less separable.
- a mixture: the points fall into lower-dimensional pieces, e.g. most lie on one line.
  Measured by the epsilon-mixture index M_eps: the largest fraction of points within eps
  of some line. Lower = less of a mixture.
A circle is irreducible on both counts (high S, low M_eps).

Both measures work on the cloud normalised as in the paper (centred, RMS norm sqrt(2),
i.e. unit variance per axis for an isotropic cloud), so the clip square of S and the eps
of M_eps are in fixed units whatever the scale of the hidden states.
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import torch


def normalise_cloud(points: np.ndarray) -> np.ndarray:
    """Centre the (n, 2) cloud and scale it so that the RMS point norm is sqrt(2)."""
    points = np.asarray(points, dtype=float)
    points = points - points.mean(axis=0)
    return points * np.sqrt(2 / np.mean((points**2).sum(axis=1)))


def separability_index(points: np.ndarray, n_angles: int = 1000, clip: float = 3.0, bins: int = 40) -> float:
    """Separability index S in bits: min over rotations of the mutual information of the
    two coordinates of the normalised cloud, clipped to [-clip, clip]^2 (points outside land
    in the edge bins) and binned on a bins x bins histogram (plug-in estimate).

    Rotating by 90 degrees only swaps and negates the axes, which leaves the mutual
    information unchanged on this symmetric grid, so the `n_angles` rotations are spread
    over a quarter turn (4x finer than the authors' 1000 angles over a full turn).
    All angles are binned in one vectorised pass (chunked to bound memory).
    """
    xy = normalise_cloud(points)
    n = len(xy)
    theta = np.arange(n_angles) * (np.pi / 2) / n_angles
    mi = np.empty(n_angles)
    chunk = max(1, 2_000_000 // n)
    for start in range(0, n_angles, chunk):
        c, s = np.cos(theta[start : start + chunk, None]), np.sin(theta[start : start + chunk, None])
        u, v = c * xy[:, 0] - s * xy[:, 1], s * xy[:, 0] + c * xy[:, 1]  # (a, n) rotated coordinates
        iu = np.clip(((u + clip) / (2 * clip) * bins).astype(int), 0, bins - 1)
        iv = np.clip(((v + clip) / (2 * clip) * bins).astype(int), 0, bins - 1)
        a = len(u)
        flat = (np.arange(a)[:, None] * bins + iu) * bins + iv
        joint = np.bincount(flat.ravel(), minlength=a * bins * bins).reshape(a, bins, bins) / n
        product = joint.sum(axis=2)[:, :, None] * joint.sum(axis=1)[:, None, :]
        nz = joint > 0
        terms = np.zeros_like(joint)
        terms[nz] = joint[nz] * np.log2(joint[nz] / product[nz])
        mi[start : start + chunk] = terms.sum(axis=(1, 2))
    return float(mi.min())


def mixture_index(
    points: np.ndarray,
    eps: float = 0.1,
    steps: int = 10_000,
    lr: float = 0.1,
    seed: int = 0,
    n_restarts: int = 8,
) -> float:
    """Epsilon-mixture index M_eps: the largest fraction of the normalised cloud within
    distance eps of a line v.x + c = 0, i.e. with |v.x + c| / |v| < eps.

    As in the paper, the line is found by full-batch gradient ascent (lr, `steps` steps)
    on the soft count mean(sigmoid((eps - |v.x + c| / |v|) / T)), with the temperature T
    decayed linearly from 1 towards 0 so that the soft count becomes the hard one. Like the
    authors' code, v starts from a standard normal draw and c from 0; `n_restarts` such
    starts (from `seed`) run as one batch, and the result is the hard count of the best
    final line. Gradient ascent only finds a lower bound of the true maximum (on the test
    clouds it lands within about 0.01 of an exhaustive line search).

    Deviation from the authors' code, which measures |v.x + c| in units of its RMS over
    the cloud: we use the geometric distance to the line, on the cloud normalised to RMS
    norm sqrt(2), so eps = 0.1 is a fixed fraction of the cloud's size.

    Speed: the gradient is written out by hand (one matmul, a few elementwise ops per
    step, no autograd graph) and the sigmoid argument is clamped at -30 so late, cold
    steps do not produce denormal floats, which are very slow on CPUs. The loop runs on
    one thread: its ops are too small to gain from more, and with two threads we saw
    10,000 steps stall for 15-45 s on a busy 2-core machine instead of about 2 s. n = 5000,
    steps = 10_000, 8 restarts takes about 2 s. Deterministic for a given seed.
    """
    x = torch.as_tensor(normalise_cloud(points), dtype=torch.float32)
    n = len(x)
    gen = torch.Generator().manual_seed(seed)
    v = torch.randn(n_restarts, 2, generator=gen)
    c = torch.zeros(n_restarts)
    with _torch_threads(1):
        for step in range(steps):
            T = 1 - step / steps
            inv_norm = v.pow(2).sum(dim=1).rsqrt()  # (R,)
            s = torch.addmm(c, x, v.T)  # (n, R) v.x + c
            d = s * inv_norm  # signed distance to each line
            q = torch.sigmoid(d.abs().mul_(-1 / T).add_(eps / T).clamp_(min=-30.0))
            # d(soft count)/ds for each point: -q(1-q) sign(d) / (T |v| n)
            g = (q - q * q).mul_(d.sign()).mul_(inv_norm * (-1 / (T * n)))
            # chain rule through d = s / |v|: ds/dv = x, d|v|^-1/dv = -v / |v|^3
            grad_v = x.T.mm(g).T - (g * s).sum(dim=0)[:, None] * v * inv_norm[:, None] ** 2
            v += lr * grad_v
            c += lr * g.sum(dim=0)
    hard = ((x @ v.T + c).abs() * v.norm(dim=1).reciprocal() < eps).double().mean(dim=0)
    return float(hard.max())


@contextmanager
def _torch_threads(n: int):
    """Temporarily set torch's intra-op thread count (a process-wide setting), then restore it."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
