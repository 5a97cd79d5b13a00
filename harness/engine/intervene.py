"""Causal interventions: edit activations at named sites while `score`, `generate` or `collect` run.

    with intervene(model, [Edit("resid_post.3", "set", values, position=alpha_positions)]):
        result = score(model, prompts, answer_ids)

Values are either one vector for every prompt (d,) or one row per prompt (n_prompts, d),
indexed in the caller's prompt order even though batches are sorted by length.
Every hook is removed when the block exits, also on an exception.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import torch

from harness.engine.sites import Position, hook_site, hooks, parse_site, positions_for

if TYPE_CHECKING:  # the type only: a request module never loads a model, so it need not import the loader
    from harness.engine.models import Model

OPS = ("set", "add", "project_out", "patch", "scale")


@dataclass
class Edit:
    """One change to the activation at `site` and `position`.

    op:
      set / patch   replace the activation by `value` (patch: values cached from another run,
                    one row per prompt, or one (len_i, d) tensor per prompt for position="all")
      add           add `value` (a steering vector)
      project_out   remove the component along the rows of `value` (k, d)
      scale         multiply by `value` (a number or a vector)
    dims restricts set/add/scale to some coordinates (e.g. chosen MLP neurons).
    prompts restricts the edit to some prompts of each request (their indices in the call), so
    one request can carry several conditions, each on its own rows: wider batches, which is
    what generation on a CPU needs (decoding steps are memory-bound at a few rows).
    """

    site: str
    op: str
    value: Any
    position: Position = "last"
    dims: Sequence[int] | None = None
    prompts: Sequence[int] | None = None

    def __post_init__(self) -> None:
        if self.op not in OPS:
            raise ValueError(f"unknown op '{self.op}': use one of {', '.join(OPS)}")


def _orthonormal(directions: torch.Tensor) -> torch.Tensor:
    q, _ = torch.linalg.qr(directions.reshape(-1, directions.shape[-1]).T.double())
    return q.T


class _Applier:
    """Applies one Edit inside a hook, using the batch that `forward` made current on the model."""

    def __init__(self, model: Model, edit: Edit) -> None:
        self.model, self.edit = model, edit
        self.value = edit.value
        if edit.op == "project_out":
            self.value = _orthonormal(torch.as_tensor(edit.value))
        self.per_prompt_all = edit.position == "all" and isinstance(edit.value, (list, tuple))
        self.positions = positions_for(edit.position)
        self.prompts = None if edit.prompts is None else {int(i) for i in edit.prompts}

    def _value_for(self, indices: list[int], like: torch.Tensor) -> torch.Tensor:
        v = torch.as_tensor(self.value) if not isinstance(self.value, torch.Tensor) else self.value
        if v.dim() >= 2 and self.edit.op != "project_out":
            v = v[indices]
        return v.to(device=like.device, dtype=like.dtype)

    def _apply(self, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        op, dims = self.edit.op, self.edit.dims
        if op == "project_out":
            q = v.to(x.dtype)
            return x - (x @ q.T) @ q
        if dims is not None:
            idx = torch.as_tensor(list(dims), device=x.device)
            v = v[..., idx] if v.dim() and v.shape[-1] == x.shape[-1] else v
            x = x.clone()
            x[..., idx] = self._apply_plain(x[..., idx], v)
            return x
        return self._apply_plain(x, v)

    def _apply_plain(self, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        if self.edit.op in ("set", "patch"):
            return v.expand_as(x).clone() if v.shape != x.shape else v.clone()
        if self.edit.op == "add":
            return x + v
        return x * v

    def __call__(self, act: torch.Tensor) -> torch.Tensor:
        if getattr(self.model, "edits_suspended", False):  # computing a shared prefix no edit may touch
            return act
        batch = getattr(self.model, "current_batch", None)
        if batch is None:
            raise RuntimeError("interventions apply inside harness score/generate/collect calls")
        if self.prompts is None:
            return self._edit(act, batch)
        untouched = torch.tensor([i not in self.prompts for i in batch.indices], device=act.device)
        if bool(untouched.all()):
            return act
        edited = self._edit(act, batch)
        edited[untouched] = act[untouched]
        return edited

    def _edit(self, act: torch.Tensor, batch: Any) -> torch.Tensor:
        act = act.clone()
        rows = torch.arange(len(batch.indices), device=act.device)
        prefill = act.shape[1] == batch.input_ids.shape[1]
        positions = self.positions
        if positions is None:  # every token, generated ones included
            if bool((batch.pad < 0).any()):
                raise ValueError("position='all' edits cannot be combined with a reused prefix")
            if self.per_prompt_all:
                if prefill:
                    for r, i in enumerate(batch.indices):
                        pad = int(batch.pad[r])
                        act[r, pad:] = self._apply(act[r, pad:], self.value[i].to(act.device, act.dtype))
                return act
            v = self._value_for(batch.indices, act)
            if v.dim() == 2 and self.edit.op != "project_out" and (self.edit.dims is None or v.shape[-1] == act.shape[-1]):
                v = v[:, None, :]
            return self._apply(act, v)
        if not prefill:  # a generated token: position-specific edits were made in the prompt
            return act
        cols = batch.columns(positions).to(act.device)
        if bool((cols < 0).any()):
            raise ValueError("an edit falls inside a reused prefix: shorten prefix_lengths to end before every edit")
        v = self._value_for(batch.indices, act)
        act[rows, cols] = self._apply(act[rows, cols], v)
        return act


@contextlib.contextmanager
def intervene(model: Model, edits: Sequence[Edit]) -> Iterator[None]:
    """Apply `edits` to every forward pass inside the block; remove every hook on exit."""
    handles = [hook_site(model, parse_site(e.site, model.n_layers), _Applier(model, e)) for e in edits]
    model.active_edits += len(edits)
    try:
        with hooks(handles):
            yield
    finally:
        model.active_edits -= len(edits)
