"""ADOPT against the spec's update rule (incontext_unlearning, criterion 6)."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from harness.engine.optim import ADOPT


def _quadratic_grad(x: torch.Tensor) -> None:
    """Gradient of 0.5 * ||x||^2, which is x itself."""
    x.grad = x.detach().clone()


def _reference(
    x0: torch.Tensor,
    grads: list[torch.Tensor],
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    wd: float = 0.0,
    decouple: bool = False,
) -> torch.Tensor:
    """The spec's pseudocode, unclipped, written out in float64 with plain Python loops."""
    theta = x0.double().clone()
    m = torch.zeros_like(theta)
    v = None
    for t, g in enumerate(grads):
        g = g.double()
        if t == 0:
            v = g * g
            continue
        if wd and not decouple:
            g = g + wd * theta
        if wd and decouple:
            theta = theta - lr * wd * theta
        n = g / torch.maximum(v.sqrt(), torch.tensor(eps, dtype=torch.float64))
        m = beta1 * m + (1 - beta1) * n
        theta = theta - lr * m
        v = beta2 * v + (1 - beta2) * g * g
    return theta


def test_first_step_changes_nothing():
    x = torch.nn.Parameter(torch.linspace(-1.0, 2.0, 7))
    before = x.detach().clone()
    opt = ADOPT([x], lr=0.1, weight_decay=0.1, decouple=True)
    _quadratic_grad(x)
    opt.step()
    assert torch.equal(x.detach(), before)
    assert torch.equal(opt.state[x]["exp_avg_sq"], before * before)
    _quadratic_grad(x)
    opt.step()
    assert not torch.equal(x.detach(), before)


@pytest.mark.parametrize("clip", [None, 0.25])
def test_quadratic_converges_within_500_steps(clip):
    x = torch.nn.Parameter(torch.ones(10))
    opt = ADOPT([x], lr=1e-2, clip=clip)
    for _ in range(500):
        opt.zero_grad()
        loss = 0.5 * (x * x).sum()
        loss.backward()
        opt.step()
    assert x.detach().norm().item() < 0.1


@pytest.mark.parametrize("wd,decouple", [(0.0, False), (0.05, False), (0.05, True)])
def test_unclipped_matches_hand_written_reference(wd, decouple):
    gen = torch.Generator().manual_seed(0)
    x0 = torch.randn(13, generator=gen)
    grads = [torch.randn(13, generator=gen) * (1 + i % 3) for i in range(40)]
    x = torch.nn.Parameter(x0.clone())
    opt = ADOPT([x], lr=3e-2, betas=(0.8, 0.95), eps=1e-6, weight_decay=wd, decouple=decouple, clip=None)
    for g in grads:
        x.grad = g.clone()
        opt.step()
    expected = _reference(x0, grads, 3e-2, 0.8, 0.95, 1e-6, wd, decouple)
    assert torch.allclose(x.detach().double(), expected, atol=1e-6, rtol=0)


def test_clipped_normalised_gradient_is_bounded_by_t_to_the_quarter():
    # With beta1 = 0 the momentum is the normalised gradient itself, so the step reveals n.
    # A first gradient near zero makes v tiny: unclipped, the next n would be about 1e6.
    x = torch.nn.Parameter(torch.zeros(6))
    lr = 1e-3
    opt = ADOPT([x], lr=lr, betas=(0.0, 0.9999), clip=0.25)
    x.grad = torch.full((6,), 1e-9)
    opt.step()
    for t in range(1, 30):
        before = x.detach().clone()
        x.grad = torch.full((6,), 5.0) * (-1) ** t
        opt.step()
        n = (before - x.detach()) / lr
        bound = t**0.25
        assert n.abs().max().item() <= bound * (1 + 1e-5)
        assert n.abs().max().item() == pytest.approx(bound, rel=1e-4)  # the clip is active


def test_state_dict_round_trip_continues_identically():
    gen = torch.Generator().manual_seed(1)
    grads = [torch.randn(5, 3, generator=gen) for _ in range(20)]
    a = torch.nn.Parameter(torch.randn(5, 3, generator=gen))
    opt_a = ADOPT([a], lr=1e-2, weight_decay=0.01)
    for g in grads[:8]:
        a.grad = g.clone()
        opt_a.step()
    b = torch.nn.Parameter(a.detach().clone())
    opt_b = ADOPT([b], lr=1.0)  # wrong hyperparameters: load_state_dict must restore them
    opt_b.load_state_dict(copy.deepcopy(opt_a.state_dict()))
    assert opt_b.param_groups[0]["lr"] == 1e-2
    for g in grads[8:]:
        a.grad, b.grad = g.clone(), g.clone()
        opt_a.step()
        opt_b.step()
    assert torch.equal(a.detach(), b.detach())
    assert opt_b.state[b]["step"] == 19  # call 0 is step 0


def test_parameter_groups_use_their_own_settings():
    x = torch.nn.Parameter(torch.ones(4))
    y = torch.nn.Parameter(torch.ones(4))
    frozen = torch.nn.Parameter(torch.ones(4))  # never gets a gradient
    opt = ADOPT([{"params": [x], "lr": 1e-1}, {"params": [y, frozen]}], lr=1e-3, clip=None)
    for _ in range(3):
        x.grad, y.grad = torch.ones(4), torch.ones(4)
        opt.step()
    # g = v = 1 throughout, so n = 1 and m after calls 1 and 2 is 0.1 and 0.19.
    step_sum = 0.1 + 0.19
    assert torch.allclose(x.detach(), torch.full((4,), 1 - 1e-1 * step_sum))
    assert torch.allclose(y.detach(), torch.full((4,), 1 - 1e-3 * step_sum))
    assert torch.equal(frozen.detach(), torch.ones(4))
    assert frozen not in opt.state


def test_invalid_settings_are_refused():
    x = torch.nn.Parameter(torch.ones(2))
    with pytest.raises(ValueError, match="betas"):
        ADOPT([x], betas=(0.9, 1.0))
    with pytest.raises(ValueError, match="lr"):
        ADOPT([x], lr=-1.0)
    assert math.isclose(ADOPT([x]).defaults["clip"], 0.25)
