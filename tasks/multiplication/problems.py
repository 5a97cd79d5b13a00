"""The problems: n-digit times m-digit pairs, drawn per cell, deterministically for a seed."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

DEFAULT_CELLS = ["2x2", "3x3", "4x4", "5x5"]


# Data.
@dataclass(frozen=True)
class Problem:
    n: int
    m: int
    a: int
    b: int

    @property
    def product(self) -> str:
        return str(self.a * self.b)

    @property
    def cell(self) -> str:
        return f"{self.n}x{self.m}"


def parse_cell(text: str) -> tuple[int, int]:
    match = re.fullmatch(r"\s*(\d+)\s*x\s*(\d+)\s*", text)
    if not match:
        raise ValueError(f"cell '{text}' is not NxM (e.g. 3x3)")
    n, m = int(match.group(1)), int(match.group(2))
    if not (1 <= n <= 9 and 1 <= m <= 9):
        raise ValueError(f"cell '{text}': digit lengths must be 1..9")
    return n, m


def parse_cells(items: Sequence[str]) -> list[tuple[int, int]]:
    """['2x2', '3x3'] -> [(2, 2), (3, 3)]; ['grid'] -> all 25 cells of 1..5 x 1..5."""
    if list(items) == ["grid"]:
        return [(n, m) for n in range(1, 6) for m in range(1, 6)]
    cells = [parse_cell(c) for c in items]
    if not cells:
        raise ValueError("cells is empty: give e.g. cells=2x2,5x5 or cells=grid")
    if len(set(cells)) != len(cells):
        raise ValueError(f"cells lists a cell twice: {','.join(items)}")
    return cells


def make_problems(n: int, m: int, count: int, rng: np.random.Generator) -> list[Problem]:
    """`count` pairs with exactly n and m digits, drawn uniformly; one-digit products are redrawn."""
    problems: list[Problem] = []
    while len(problems) < count:
        a = int(rng.integers(10 ** (n - 1), 10**n))
        b = int(rng.integers(10 ** (m - 1), 10**m))
        if len(str(a * b)) >= 2:
            problems.append(Problem(n, m, a, b))
    return problems


def cell_rng(ctx: Any, data_seed: int, n: int, m: int, stream: int) -> np.random.Generator:
    """One generator per (data seed, cell, stream): 0 behaviour problems, 1 probe problems, 2 shuffles."""
    return ctx.rng(((data_seed * 100 + n) * 100 + m) * 10 + stream)
