"""Special tokens added to a shared model for one block of work, and removed after it.

A task that needs tokens of its own (forget tags around a subject, say) must not change the
model the next task of the invocation sees: a longer vocabulary and new logits would change
its numbers. `added_tokens` works on a copy of the tokenizer, sets the new ids' input and
output embedding rows to the mean row of the existing vocabulary (a neutral start that LoRA,
which keeps these rows frozen, can read but not move), growing the matrices first where the
vocabulary outgrows them, and on exit puts back the tokenizer, the matrices' size and any rows
it overwrote (a matrix padded past the vocabulary).
"""

from __future__ import annotations

import contextlib
import copy
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import torch

if TYPE_CHECKING:  # the type only: a request module never loads a model, so it need not import the loader
    from harness.engine.models import Model


def add_special_tokens(tokenizer: Any, tokens: Sequence[str], model: Any = None) -> tuple[int, ...]:
    """Add `tokens` as special tokens once and return their ids; the call that adds them sets the
    model's embedding rows of the new ids to the vocabulary's mean row. A second call changes nothing."""
    from tokenizers import AddedToken

    before = len(tokenizer)
    added = tokenizer.add_tokens(
        [AddedToken(t, special=True, normalized=False, single_word=False) for t in tokens], special_tokens=True
    )
    ids = tuple(tokenizer.convert_tokens_to_ids(list(tokens)))
    if added and model is not None:
        if model.get_input_embeddings().num_embeddings < len(tokenizer):
            model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
        with torch.no_grad():
            for weight in embedding_matrices(model):
                weight[list(ids)] = weight[:before].mean(dim=0, keepdim=True)
    return ids


@contextlib.contextmanager
def added_tokens(model: Model, tokens: Sequence[str]) -> Iterator[tuple[int, ...]]:
    """`tokens` as special tokens of `model` (a harness Model) for the block; their ids are yielded."""
    hf, original = model.hf, model.tokenizer
    rows = hf.get_input_embeddings().num_embeddings
    new_ids = [i for i in range(len(original), len(original) + len(tokens)) if i < rows]
    saved = [w[new_ids].detach().clone() for w in embedding_matrices(hf)]
    model.tokenizer = copy.deepcopy(original)
    try:
        yield add_special_tokens(model.tokenizer, tokens, hf)
    finally:
        model.tokenizer = original
        if hf.get_input_embeddings().num_embeddings != rows:
            hf.resize_token_embeddings(rows, mean_resizing=False)
        with torch.no_grad():
            for weight, old in zip(embedding_matrices(hf), saved):
                weight[new_ids] = old.to(weight.device)


def embedding_matrices(hf: Any) -> list[torch.Tensor]:
    """The input and output embedding weights, once when they are tied."""
    modules = (hf.get_input_embeddings(), hf.get_output_embeddings())
    return list({id(m.weight): m.weight for m in modules if m is not None}.values())
