"""ADOPT: Adam whose step is normalised by the second moment of *earlier* gradients.

Taniguchi et al., "ADOPT: Modified Adam Can Converge with Any beta2 with the Optimal
Rate", NeurIPS 2024 (arXiv 2411.02853). Adam divides the gradient by a second-moment
estimate that already contains that same gradient, which correlates the two and breaks
convergence unless beta2 is tuned to the problem. ADOPT removes the correlation with two
changes: the gradient is normalised by v from the previous step (so v excludes g), and
the normalisation happens before the momentum average, not after it.

Per parameter theta with gradient g (m starts at 0):

    call 0:   v = g * g                              no parameter update
    call t>=1 (weight decay wd, learning rate lr):
              g = g + wd * theta                     when wd and not decouple
              theta = theta - lr * wd * theta        when wd and decouple (AdamW style)
              n = g / max(sqrt(v), eps)              v from the previous call
              n = clamp(n, -t**clip, t**clip)        when clip is not None
              m = beta1 * m + (1 - beta1) * n
              theta = theta - lr * m
              v = beta2 * v + (1 - beta2) * g * g

No bias correction is needed: v starts at the first squared gradient rather than at
zero, and m's start at zero only shrinks the first few steps. Coupled weight decay is
added to the gradient from call 1 on, so v starts from the loss gradient alone.
The clip bound t**0.25 is the paper's schedule for its stable variant; it keeps the
first steps bounded where v is still tiny (for example a LoRA factor whose gradient is
zero until the other factor has moved).
"""

from __future__ import annotations

from typing import Callable, Iterable

import torch
from torch.optim import Optimizer


class ADOPT(Optimizer):
    """ADOPT with optional clipping of the normalised gradient and decoupled weight decay.

    `clip` is the exponent p of the clip bound c(t) = t**p (the paper's 0.25); `None`
    gives the original, unclipped algorithm. Per-parameter state (`step`, `exp_avg`,
    `exp_avg_sq`) goes through `state_dict` like torch's own optimizers, so a restored
    optimizer continues exactly where the saved one stopped.
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.9999),
        eps: float = 1e-6,
        weight_decay: float = 0.0,
        decouple: bool = False,
        clip: float | None = 0.25,
    ) -> None:
        if lr < 0.0:
            raise ValueError(f"ADOPT: lr must be >= 0, got {lr}")
        if eps < 0.0:
            raise ValueError(f"ADOPT: eps must be >= 0, got {eps}")
        if not (0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0):
            raise ValueError(f"ADOPT: betas must lie in [0, 1), got {betas}")
        if weight_decay < 0.0:
            raise ValueError(f"ADOPT: weight_decay must be >= 0, got {weight_decay}")
        if clip is not None and clip < 0.0:
            raise ValueError(f"ADOPT: clip exponent must be >= 0 or None, got {clip}")
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, decouple=decouple, clip=clip)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor | None:  # type: ignore[override]  # torch's overloads type the loss as float
        """One update of every parameter that has a gradient; returns the closure's loss."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            lr, eps, wd = group["lr"], group["eps"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("ADOPT does not support sparse gradients")
                state = self.state[p]
                g = p.grad
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = g * g
                    continue
                state["step"] += 1
                t = state["step"]
                m, v = state["exp_avg"], state["exp_avg_sq"]
                if wd != 0.0:
                    if group["decouple"]:
                        p.mul_(1.0 - lr * wd)
                    else:
                        g = g.add(p, alpha=wd)
                n = g / v.sqrt().clamp_(min=eps)
                if group["clip"] is not None:
                    bound = t ** group["clip"]
                    n.clamp_(-bound, bound)
                m.mul_(beta1).add_(n, alpha=1.0 - beta1)
                p.add_(m, alpha=-lr)
                v.mul_(beta2).addcmul_(g, g, value=1.0 - beta2)
        return loss
