"""Optimizers the engine offers beyond torch's own (for `harness.train`)."""

from harness.optim.adopt import ADOPT

__all__ = ["ADOPT"]
