"""Named activation sites, the hooks that reach them, and `collect`.

Site names read like the architecture and are the same for every model:

    resid_pre.L   input of block L (the residual stream before it)
    resid_post.L  output of block L
    attn_out.L    what attention adds to the residual stream in block L
    mlp_out.L     what the MLP adds to the residual stream in block L
    mlp_act.L     MLP neurons after the nonlinearity (input of the down projection)
    logits        the model's output logits

The `Layout` of the model says which real module each name is; we hook those modules
and never re-implement the model, so the numbers are the library's own.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence, Union

import torch

from harness.batching import Batch, BatchSizer, accepts, encode, make_batches
from harness.errors import UsageError
from harness.layout import resolve

KINDS = ("resid_pre", "resid_post", "attn_out", "mlp_out", "mlp_act")
SITE = re.compile(r"^(resid_pre|resid_post|attn_out|mlp_out|mlp_act)\.(\d+)$")

# A position is a token index into the prompt (negative from the end), "last", "all",
# or one such index per prompt (the token of interest moves with the wording).
Position = Union[int, str, Sequence[int]]


class StopForward(Exception):
    """Raised by a hook after the deepest layer a caller needs: the rest of the model is not run."""


@dataclass(frozen=True)
class Site:
    kind: str
    layer: int | None  # None for logits

    @property
    def name(self) -> str:
        return "logits" if self.kind == "logits" else f"{self.kind}.{self.layer}"


def parse_site(name: str, n_layers: int) -> Site:
    """Parse a site name, checking the layer against the model's depth."""
    if name == "logits":
        return Site("logits", None)
    m = SITE.match(name)
    if not m:
        raise UsageError(f"unknown site '{name}': use one of {', '.join(k + '.L' for k in KINDS)} or logits")
    layer = int(m.group(2))
    if layer >= n_layers:
        raise UsageError(f"site {name} is past the model's depth ({n_layers} layers, 0..{n_layers - 1}): pick a smaller layer")
    return Site(m.group(1), layer)


def first_tensor(x: Any) -> torch.Tensor:
    return x[0] if isinstance(x, (tuple, list)) else x


def replace_first(x: Any, new: torch.Tensor) -> Any:
    if isinstance(x, tuple):
        return (new, *x[1:])
    if isinstance(x, list):
        return [new, *x[1:]]
    return new


def hook_site(model: Any, site: Site, fn: Callable[[torch.Tensor], torch.Tensor | None]) -> torch.utils.hooks.RemovableHandle:
    """Call fn(activation) at `site` on every forward; a returned tensor replaces the activation.

    Sites that are a module's input use a forward pre-hook, the others a forward hook;
    tuples returned by blocks and attention modules keep their other elements.
    """
    layout = model.layout
    block = model.blocks[site.layer]
    if layout.mlp_flat and site.kind in ("mlp_act", "mlp_out"):
        fn = _unflatten(model, fn)
    if site.kind in ("resid_pre", "mlp_act"):
        module = block if site.kind == "resid_pre" else resolve(block, layout.mlp_down)

        def pre_hook(mod: Any, args: tuple, kwargs: dict) -> Any:
            if args:
                new = fn(args[0])
                return None if new is None else ((new, *args[1:]), kwargs)
            new = fn(kwargs["hidden_states"])
            return None if new is None else (args, {**kwargs, "hidden_states": new})

        return module.register_forward_pre_hook(pre_hook, with_kwargs=True)
    module = {
        "resid_post": block,
        "attn_out": resolve(block, layout.attn_out) if site.kind == "attn_out" else None,
        "mlp_out": resolve(block, layout.mlp_out) if site.kind == "mlp_out" else None,
    }[site.kind]

    def post_hook(mod: Any, args: tuple, output: Any) -> Any:
        new = fn(first_tensor(output))
        return None if new is None else replace_first(output, new)

    return module.register_forward_hook(post_hook)


def _unflatten(model: Any, fn: Callable[[torch.Tensor], torch.Tensor | None]) -> Callable[[torch.Tensor], torch.Tensor | None]:
    """OPT runs its MLP on a (batch * seq, width) view: show hooks (batch, seq, width) like everywhere else."""

    def wrapped(act: torch.Tensor) -> torch.Tensor | None:
        if act.dim() != 2:
            return fn(act)
        rows = model.current_batch.input_ids.shape[0]
        new = fn(act.view(rows, -1, act.shape[-1]))
        return None if new is None else new.reshape(act.shape)

    return wrapped


@contextlib.contextmanager
def hooks(handles: Sequence[torch.utils.hooks.RemovableHandle]) -> Iterator[None]:
    """Remove every hook on exit, also on an exception: a leftover hook silently changes later runs."""
    try:
        yield
    finally:
        for h in handles:
            h.remove()


@contextlib.contextmanager
def in_flight(model: Any, batch: Batch, tokens: int | None = None) -> Iterator[None]:
    """Make `batch` visible to intervention hooks while the model runs on it, and count its tokens.

    Every forward pass or generate call of the harness runs inside this, so edits can map
    prompt indices and token positions onto the padded batch.
    """
    model.current_batch = batch
    model.tokens_processed += int(batch.lengths.sum()) if tokens is None else tokens
    try:
        yield
    finally:
        model.current_batch = None


def forward(model: Any, batch: Batch, **kwargs: Any) -> Any:
    """One forward pass of a batch, with the batch visible to intervention hooks."""
    with in_flight(model, batch):
        inputs = batch.model_inputs(model.input_device, accepts(model.hf.forward, "position_ids"))
        return model.hf(**inputs, use_cache=False, **kwargs)


class SamePosition:
    """The same token index for every prompt, indexable like a per-prompt list."""

    def __init__(self, index: int) -> None:
        self.index = index

    def __getitem__(self, i: int) -> int:
        return self.index


def positions_for(position: Position, n: int | None = None) -> Sequence[int] | SamePosition | None:
    """Normalise a Position into something indexed by prompt; None means every token."""
    if isinstance(position, str):
        if position == "all":
            return None
        if position == "last":
            return SamePosition(-1)
        raise UsageError(f"unknown position '{position}': use an index, 'last' or 'all'")
    if isinstance(position, int):
        return SamePosition(position)
    if n is not None and len(position) != n:
        raise ValueError(f"{len(position)} positions for {n} prompts")
    return [int(p) for p in position]


@torch.no_grad()
def collect(
    model: Any,
    prompts: Sequence[str],
    sites: Sequence[str],
    positions: Position = "last",
    batch_size: int | str | BatchSizer = "auto",
    progress: Callable[[Any], Any] | None = None,
) -> dict[str, Any]:
    """Activations at `sites` for each prompt, at exactly the `positions` asked.

    Returns {site: tensor (n_prompts, d)} in prompt order (float32, CPU); with
    positions="all", {site: [tensor (len_i, d) per prompt]}. The forward pass stops after
    the deepest layer asked for, unless `logits` is asked.
    """
    parsed = [parse_site(s, model.n_layers) for s in sites]
    per_prompt = positions_for(positions, len(prompts))
    token_ids = encode(model.tokenizer, prompts)
    stop_layer = None if any(s.kind == "logits" for s in parsed) else max(s.layer for s in parsed)
    out: dict[str, list] = {s.name: [None] * len(prompts) for s in parsed}
    state: dict[str, Batch] = {}

    def take(site: Site, act: torch.Tensor) -> None:
        batch = state["batch"]
        act = act.detach()
        if per_prompt is None:
            for r, i in enumerate(batch.indices):
                out[site.name][i] = act[r, batch.pad[r] :].float().cpu()
        else:
            rows = act[torch.arange(len(batch.indices)), batch.columns(per_prompt).to(act.device)]
            for r, i in enumerate(batch.indices):
                out[site.name][i] = rows[r].float().cpu()

    def capture(site: Site) -> Callable[[torch.Tensor], None]:
        return lambda act: take(site, act)

    def stop(*_: Any) -> None:
        raise StopForward

    handles = [hook_site(model, s, capture(s)) for s in parsed if s.kind != "logits"]
    if stop_layer is not None:
        deepest = [s for s in parsed if s.layer == stop_layer]
        block = model.blocks[stop_layer]
        if all(s.kind == "resid_pre" for s in deepest):
            handles.append(block.register_forward_pre_hook(lambda *a: stop()))
        else:
            handles.append(block.register_forward_hook(lambda *a: stop()))

    def step(size: int) -> Iterator[None]:
        batches = make_batches(token_ids, size, model.tokenizer.pad_token_id)
        for batch in progress(batches) if progress else batches:
            state["batch"] = batch
            try:
                result = forward(model, batch)
            except StopForward:
                continue
            if stop_layer is None:
                take(Site("logits", None), result.logits)
            yield None

    with hooks(handles):
        BatchSizer.of(batch_size, model.input_device).run(len(prompts), step)
    if per_prompt is None:
        return out
    return {name: torch.stack(rows) for name, rows in out.items()}
