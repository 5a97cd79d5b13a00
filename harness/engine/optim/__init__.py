"""Optimizers the engine offers beyond torch's own (for `harness.engine.train`)."""

from harness.engine.optim.adopt import ADOPT

__all__ = ["ADOPT"]
