"""The logit lens: what each layer's residual stream would predict if the model stopped there.

resid_post.L at a position goes through the model's own final norm and unembedding (and the
final logit softcap where the architecture has one), exactly as the last layer's state does
on the way to the logits. At the last layer this is the model's own next-token distribution,
which the tests check on every layout. The states are collected with the engine's `collect`
(batched by length, edits in force apply), then projected a layer at a time, so only
(prompts x layers) vectors and the asked-for token probabilities are held.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Sequence

import torch

from harness.engine.batching import BatchSizer
from harness.engine.layout import resolve
from harness.engine.sites import Position, collect

if TYPE_CHECKING:  # the type only: a request module never loads a model, so it need not import the loader
    from harness.engine.models import Model


@dataclass
class Lens:
    """Per layer, the lens's view of the next token at one position of each prompt.

    logprobs: (n_prompts, n_layers, n_targets) log-probabilities of the target tokens;
    top_token: (n_prompts, n_layers) the lens's argmax over the whole vocabulary;
    ranks: (n_prompts, n_layers, n_targets) how many vocabulary tokens have a strictly higher
        logit than each target (0: the target is top-1).
    """

    layers: list[int]
    logprobs: torch.Tensor
    top_token: torch.Tensor
    ranks: torch.Tensor


@torch.no_grad()
def unembed(model: Model, resid: torch.Tensor) -> torch.Tensor:
    """Logits from residual-stream states (..., d_model): final norm, unembedding, softcap."""
    norm = resolve(model.hf, model.layout.final_norm)
    head = resolve(model.hf, model.layout.unembed)
    weight = next(head.parameters())
    params = list(norm.parameters())
    x = resid.to(device=params[0].device, dtype=params[0].dtype) if params else resid.to(weight.dtype)
    logits = head(norm(x).to(device=weight.device, dtype=weight.dtype)).float()
    return softcap(model, logits)


def softcap(model: Model, logits: torch.Tensor) -> torch.Tensor:
    """The architecture's final logit softcap, c * tanh(logits / c), where its layout has one."""
    cap = model.layout.logit_softcap
    if not cap:
        return logits
    if isinstance(cap, str):
        raise TypeError(f"layout softcap {cap!r} was never resolved from the model's config")
    return cap * torch.tanh(logits / cap)


@torch.no_grad()
def logit_lens(
    model: Model,
    prompts: Sequence[str],
    targets: Sequence[int],
    layers: Sequence[int] | None = None,
    position: Position = "last",
    batch_size: int | str | BatchSizer = "auto",
    progress: Callable[[Any], Any] | None = None,
    chunk: int = 64,
) -> Lens:
    """The logit lens at `position` of each prompt for `layers` (default: every layer)."""
    layers = list(range(model.n_layers)) if layers is None else list(layers)
    sites = [f"resid_post.{L}" for L in layers]
    states = collect(model, prompts, sites, position, batch_size, progress)
    target = torch.as_tensor(list(targets), dtype=torch.long)
    n = len(prompts)
    logprobs = torch.empty(n, len(layers), len(target))
    top = torch.empty(n, len(layers), dtype=torch.long)
    ranks = torch.empty(n, len(layers), len(target), dtype=torch.long)
    for j, site in enumerate(sites):
        for start in range(0, n, chunk):  # a chunk of rows at a time: Gemma's vocabulary is 262k
            logits = unembed(model, states[site][start : start + chunk])
            lp = logits.log_softmax(-1)
            logprobs[start : start + chunk, j] = lp[:, target.to(lp.device)].cpu()
            top[start : start + chunk, j] = logits.argmax(-1).cpu()
            ranks[start : start + chunk, j] = _ranks(logits, target.to(logits.device)).cpu()
    return Lens(layers=layers, logprobs=logprobs, top_token=top, ranks=ranks)


def _ranks(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per row, the number of logits strictly above each target's: one sort, then a binary search per target."""
    ascending = logits.sort(dim=-1).values
    values = logits[:, target].contiguous()
    return logits.shape[-1] - torch.searchsorted(ascending, values, right=True)
