"""Neuron scoring: every unit as a one-feature detector of a class, by average precision.

Kojima et al. (NAACL 2024) score each neuron as a classifier "is this sentence in language
L?": the neuron's activation, averaged over the sentence's tokens, is the score and
average precision (AP) against the labels is its quality. High-AP units fire for L,
low-AP units fire for everything but L.

Whole-model activations are large (every token x every unit), so nothing here keeps them:
`SentencePool` reduces each batch's (batch, seq, width) activations to one mean per
(sentence, unit) as it arrives, and `average_precision` scores many units at once on those
pooled values, in chunks of units. Plain arrays in, arrays out: no model, no hooks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

AP_CHUNK = 4096  # units scored at once: (n_sentences, AP_CHUNK) float64 work arrays
BLOCK_VALUES = 1 << 18  # a bootstrap draw's work arrays, in values per block of columns (2 MB as float64)
WHOLE_VALUES = 1 << 22  # up to this many values (32 MB as float64) a draw runs as one block


class SentencePool:
    """Running per-sentence means of every unit, filled one batch at a time.

    `add(block, act, mask, rows)` takes one block of units (e.g. the MLP of one layer) for
    a padded batch: act (batch, seq, width), mask (batch, seq) with 1 on real tokens, and
    the sentence index of each row. Only the mean over real tokens is kept, so memory is
    n_sentences x n_units floats however long the sentences are.
    """

    def __init__(self, n_sentences: int, n_blocks: int, dtype: torch.dtype = torch.float32) -> None:
        self.n_sentences, self.n_blocks, self.dtype = n_sentences, n_blocks, dtype
        self.blocks: list[torch.Tensor | None] = [None] * n_blocks
        self.filled = [torch.zeros(n_sentences, dtype=torch.bool) for _ in range(n_blocks)]

    def add(self, block: int, act: torch.Tensor, mask: torch.Tensor, rows: Sequence[int]) -> None:
        act = act.detach()
        if self.blocks[block] is None:
            self.blocks[block] = torch.zeros(self.n_sentences, act.shape[-1], dtype=self.dtype)
        m = mask.to(device=act.device, dtype=torch.float32)
        sums = torch.einsum("bt,btd->bd", m, act.float())
        means = sums / m.sum(1, keepdim=True).clamp(min=1.0)
        idx = torch.as_tensor(list(rows), dtype=torch.long)
        self.blocks[block][idx] = means.to(device="cpu", dtype=self.dtype)
        self.filled[block][idx] = True

    @property
    def widths(self) -> list[int]:
        return [0 if b is None else b.shape[1] for b in self.blocks]

    def matrix(self) -> torch.Tensor:
        """(n_sentences, n_units): the blocks side by side, block 0 first."""
        missing = [i for i, f in enumerate(self.filled) if not bool(f.all())]
        if missing:
            raise RuntimeError(f"blocks {missing} did not receive every sentence")
        return torch.cat([b for b in self.blocks], dim=1)  # type: ignore[misc]


def average_precision(scores: np.ndarray | torch.Tensor, labels: np.ndarray, chunk: int = AP_CHUNK) -> np.ndarray:
    """AP of every column of `scores` (n, m) against binary `labels` (n,), as sklearn computes it.

    Equal to `sklearn.metrics.average_precision_score(labels, scores[:, j])` for each j,
    ties included: tied scores form one threshold, so a constant column gets the positive
    share. Vectorised over columns, `chunk` columns at a time.
    """
    x = torch.as_tensor(scores)
    out = np.empty(x.shape[1] if x.dim() == 2 else 0)
    for start in range(0, x.shape[1], chunk):
        block = ReweightedAP(x[:, start : start + chunk], labels)
        out[start : start + block.n_columns] = block()
    return out


class ReweightedAP:
    """AP of fixed columns when the rows are reweighted, for a bootstrap over rows (sentences).

    Drawing rows with replacement is the same as weighting each row by the number of times
    it was drawn, and the weights never change the order of the rows by score. So each
    column is sorted once here, and each draw costs two cumulative sums: precision at a
    threshold is (weighted positives above it) / (weight above it), and every positive adds
    the precision at the end of its tie group, times its weight. With unit weights this is
    sklearn's average precision; with integer weights it is the AP of the rows repeated.
    """

    def __init__(self, scores: np.ndarray | torch.Tensor, labels: np.ndarray) -> None:
        y = torch.as_tensor(np.asarray(labels), dtype=torch.float64)
        if y.dim() != 1 or not bool(((y == 0) | (y == 1)).all()):
            raise ValueError("labels must be a 1-D array of 0/1")
        if float(y.sum()) == 0:
            raise ValueError("no positive example: AP is undefined")
        x = torch.as_tensor(scores).to(torch.float64)
        n, self.n_columns = x.shape
        if n != len(y):
            raise ValueError(f"{n} rows of scores for {len(y)} labels")
        values, self.order = torch.sort(x, dim=0, descending=True, stable=True)
        # The last row of each run of tied values is where the threshold sits; every row
        # carries the index of the nearest end at or below it.
        is_end = torch.ones_like(values, dtype=torch.bool)
        is_end[:-1] = values[:-1] != values[1:]
        idx = torch.arange(n)[:, None].expand_as(values)
        self.end_index = torch.where(is_end, idx, torch.full_like(idx, n)).flip(0).cummin(0).values.flip(0)
        self.y = y
        self.positive_sorted = y[self.order].to(torch.int32)
        # Columns per block of a draw: all of them up to WHOLE_VALUES values (every bundled model's
        # pool: the sums are then bit for bit those of one pass), else about BLOCK_VALUES values each.
        self.block = self.n_columns if n * self.n_columns <= WHOLE_VALUES else max(1, BLOCK_VALUES // max(1, n))

    def __call__(self, weights: np.ndarray | None = None) -> np.ndarray:
        """AP of every column with row i counted weights[i] times (all once without weights); NaN with no positive weight.

        Weights are counts, so the cumulative sums are integers: they run in int32 (exact, half
        the memory traffic of float64, which is what a draw costs) and only the precisions are
        floating point.
        """
        if weights is None:
            w = torch.ones(len(self.y), dtype=torch.int32)
        else:
            w = torch.as_tensor(np.asarray(weights))
            if w.shape != self.y.shape:
                raise ValueError(f"{len(w)} weights for {len(self.y)} rows")
            if w.is_floating_point() and not bool((w == w.round()).all()):
                raise ValueError("weights must be whole numbers (how often each row was drawn)")
            w = w.to(torch.int32)
        n_pos = float((w.to(torch.float64) * self.y).sum())
        if n_pos == 0:
            return np.full(self.n_columns, np.nan)
        out = torch.empty(self.n_columns, dtype=torch.float64)
        # Columns a block at a time: each column's sums are its own, and a block's work arrays stay
        # in cache (whole, a 7B model's candidate pool is 70 MB per array, and per value a draw ran
        # 2.5x slower than on a bundled model's). Blocks sum in another order: equal to rounding.
        for start in range(0, self.n_columns, self.block):
            cols = slice(start, start + self.block)
            w_sorted = w[self.order[:, cols]]
            wy = w_sorted * self.positive_sorted[:, cols]
            tp, seen = torch.cumsum(wy, dim=0, dtype=torch.int32), torch.cumsum(w_sorted, dim=0, dtype=torch.int32)
            precision = tp.to(torch.float64) / seen.clamp(min=1).to(torch.float64)  # 0 where nothing is seen yet (tp = 0)
            at_end = torch.gather(precision, 0, self.end_index[:, cols])
            out[cols] = (wy.to(torch.float64) * at_end).sum(0) / n_pos
        return out.numpy()


@dataclass
class Selection:
    """The k highest-AP (top) and k lowest-AP (bottom) units, best first within each."""

    top: np.ndarray
    bottom: np.ndarray

    @property
    def both(self) -> np.ndarray:
        return np.unique(np.concatenate([self.top, self.bottom]))


def select_units(ap: np.ndarray, k: int) -> Selection:
    """Top-k and bottom-k units by AP; ties broken by unit index, so the choice is deterministic."""
    ap = np.asarray(ap)
    if not 1 <= k <= len(ap):
        raise ValueError(f"k={k} must be between 1 and the number of units ({len(ap)})")
    top = np.argsort(-ap, kind="stable")[:k]
    bottom = np.argsort(ap, kind="stable")[:k]
    return Selection(top=top, bottom=bottom)


def default_k(n_units: int, share: float = 0.005) -> int:
    """Units per side: a share of all candidates (the paper forces ~1% in all), at least one."""
    return max(1, int(round(share * n_units)))


def overlap(a: np.ndarray, b: np.ndarray, k: int) -> float:
    """|a & b| / k."""
    return len(np.intersect1d(a, b)) / k


def overlap_matrix(sets: Sequence[np.ndarray], k: int) -> np.ndarray:
    """Pairwise overlaps |S_i & S_j| / k; the diagonal is |S_i| / k (1 for k-sets)."""
    n = len(sets)
    return np.array([[overlap(sets[i], sets[j], k) for j in range(n)] for i in range(n)])


def layer_of(units: np.ndarray, widths: Sequence[int]) -> np.ndarray:
    """Block (layer) index of each global unit index, for blocks of the given widths laid side by side."""
    bounds = np.cumsum(widths)
    units = np.asarray(units)
    if len(units) and (units.min() < 0 or units.max() >= bounds[-1]):
        raise ValueError("unit index outside the blocks")
    return np.searchsorted(bounds, units, side="right")


def layer_histogram(units: np.ndarray, widths: Sequence[int]) -> np.ndarray:
    """Share of `units` in each block; sums to 1 (all zeros for no units)."""
    counts = np.bincount(layer_of(units, widths), minlength=len(widths)).astype(float)
    return counts / max(1, len(units))


def edge_layers(n_layers: int, share: float = 0.2) -> np.ndarray:
    """Boolean mask of the first and last `share` of layers (at least one each)."""
    n_edge = max(1, int(round(share * n_layers)))
    mask = np.zeros(n_layers, dtype=bool)
    mask[:n_edge] = True
    mask[n_layers - n_edge :] = True
    return mask


def median_rows(x: torch.Tensor) -> torch.Tensor:
    """Median of each column over rows, the mean of the two middle values for an even count (numpy's)."""
    values = torch.sort(x.to(torch.float64), dim=0).values
    n = values.shape[0]
    if n == 0:
        raise ValueError("median of no rows")
    mid = n // 2
    return values[mid] if n % 2 else (values[mid - 1] + values[mid]) / 2


def random_units(n_units: int, count: int, seed: int | Sequence[int]) -> np.ndarray:
    """`count` distinct units drawn uniformly from all `n_units` (none excluded), sorted; same seed, same units."""
    if not 0 <= count <= n_units:
        raise ValueError(f"cannot draw {count} distinct units from {n_units}")
    return np.sort(np.random.default_rng(seed).choice(n_units, size=count, replace=False))
