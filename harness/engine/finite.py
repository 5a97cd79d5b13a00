"""Finite numbers: the one check behind refusing NaN or Inf weights (a model, an SAE) and stopping
training that diverged.

A tensor's sum is finite unless it holds NaN or Inf or the sum overflows; only then is
`isfinite` checked element by element. On SmolLM2 135M (one CPU core) the sums take 0.2 s where
`torch.isfinite(p).all()` on every parameter takes 2.6 s.
"""

from __future__ import annotations

import math
from typing import Iterable

import torch

from harness.errors import UsageError


def finite(t: torch.Tensor) -> bool:
    """Whether every element of `t` is finite (the sum first, element by element only when it is not)."""
    return bool(torch.isfinite(t.sum())) or bool(torch.isfinite(t).all())


def check_diverged(what: str, step: int, loss: float, params: Iterable[torch.Tensor], lr: float) -> None:
    """Stop with one line, before the step's checkpoint or result is saved, once the loss or a trained weight is not finite.

    A diverged run (a learning rate far too high, say) would otherwise save weights of NaN and
    report numbers computed from them.
    """
    if math.isfinite(loss) and all(finite(p.detach()) for p in params):
        return
    raise UsageError(
        f"{what} diverged at step {step} (loss {loss:g}, or a trained weight no longer finite) with "
        f"lr {lr:g}: lower the learning rate (--task-arg lr=...) and run again"
    )
