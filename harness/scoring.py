"""Next-token scoring and greedy generation, batched by length.

Logits are computed only at the last position (`logits_to_keep=1`): Gemma's
262k-token unembedding over every position would cost most of the time and memory.
"""

from __future__ import annotations

import copy

from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import torch

from harness.batching import Batch, BatchSizer, accepts, encode, make_batches
from harness.sites import forward, in_flight


@dataclass
class Scores:
    """Next-token scores after each prompt, in prompt order."""

    logits: torch.Tensor  # (n, k) logits of the k target tokens
    logprobs: torch.Tensor  # (n, k) full-vocabulary log-probabilities of the targets
    top_token: torch.Tensor  # (n,) argmax over the whole vocabulary


@torch.no_grad()
def score(
    model: Any,
    prompts: Sequence[str],
    targets: Sequence[int],
    batch_size: int | str | BatchSizer = "auto",
    progress: Callable[[Any], Any] | None = None,
    prefix_lengths: Sequence[int] | None = None,
) -> Scores:
    """Score target tokens as the next token after each prompt (interventions in force apply).

    prefix_lengths: for patching experiments that run one prompt many times with different
    edits. Tokens [0, prefix_lengths[i]) of prompt i are computed once per distinct prefix and
    their keys and values reused; only the rest runs per prompt. Valid only when every edit
    in force acts at or after the prefix (checked), which is where an edit can change anything.
    """
    token_ids = encode(model.tokenizer, prompts)
    target = torch.as_tensor(list(targets), dtype=torch.long)
    n, k = len(prompts), len(target)
    out = Scores(logits=torch.empty(n, k), logprobs=torch.empty(n, k), top_token=torch.empty(n, dtype=torch.long))
    keep = {"logits_to_keep": 1} if accepts(model.hf.forward, "logits_to_keep") else {}

    def record(indices: list[int], last: torch.Tensor) -> None:
        idx = torch.as_tensor(indices)
        last = last.float()
        out.logits[idx] = last[:, target.to(last.device)].cpu()
        out.logprobs[idx] = last.log_softmax(-1)[:, target.to(last.device)].cpu()
        out.top_token[idx] = last.argmax(-1).cpu()

    def step(size: int) -> Iterator[None]:
        batches = make_batches(token_ids, size, model.tokenizer.pad_token_id)
        for batch in progress(batches) if progress else batches:
            record(batch.indices, forward(model, batch, **keep).logits[:, -1])
            yield None

    def step_after_prefixes(size: int) -> Iterator[None]:
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, ids in enumerate(token_ids):
            if not 0 < prefix_lengths[i] < len(ids):
                raise ValueError(f"prefix length {prefix_lengths[i]} leaves no token of prompt {i} to run")
            groups.setdefault(tuple(ids[: prefix_lengths[i]]), []).append(i)
        items = list(groups.items())
        for prefix, rows in progress(items) if progress else items:
            cache = _prefix_cache(model, prefix)
            for start in range(0, len(rows), size):
                chunk = rows[start : start + size]
                suffix_batch = make_batches([token_ids[i][len(prefix):] for i in chunk], len(chunk), model.tokenizer.pad_token_id)[0]
                record([chunk[r] for r in suffix_batch.indices], _forward_after_prefix(model, cache, prefix, chunk, suffix_batch, keep))
            yield None

    BatchSizer.of(batch_size, model.input_device).run(n, step if prefix_lengths is None else step_after_prefixes)
    return out


def _prefix_cache(model: Any, prefix: tuple[int, ...]) -> Any:
    """Keys and values of a shared prefix, computed with edits suspended (none may act there)."""
    ids = torch.tensor([prefix], device=model.input_device)
    model.edits_suspended = True
    try:
        model.tokens_processed += len(prefix)
        out = model.hf(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=True)
        return out.cache if getattr(out, "cache", None) is not None else out.past_key_values
    finally:
        model.edits_suspended = False


def _forward_after_prefix(model: Any, cache: Any, prefix: tuple[int, ...], chunk: list[int], suffix: Batch, keep: dict) -> torch.Tensor:
    """Run left-padded suffixes on a copy of the prefix cache; return last-position logits in suffix-batch order."""
    p, rows = len(prefix), len(chunk)
    cache = copy.deepcopy(cache)
    cache.batch_repeat_interleave(rows)
    device = model.input_device
    mask = torch.cat([torch.ones(rows, p, dtype=torch.long), suffix.attention_mask], 1)
    cache_arg = "cache" if accepts(model.hf.forward, "cache") else "past_key_values"  # renamed in transformers 5
    inputs = {"input_ids": suffix.input_ids.to(device), "attention_mask": mask.to(device), cache_arg: cache, "use_cache": True}
    if accepts(model.hf.forward, "position_ids"):
        inputs["position_ids"] = (p + suffix.position_ids).to(device)
    # Positions of edits count from the start of the prompt: real token j of a row sits at
    # column (pad - p) + j of the suffix batch.
    whole = Batch(
        indices=[chunk[r] for r in suffix.indices], input_ids=suffix.input_ids, attention_mask=suffix.attention_mask,
        lengths=suffix.lengths + p,
    )
    with in_flight(model, whole, tokens=int(suffix.lengths.sum())):
        return model.hf(**inputs, **keep).logits[:, -1]


@torch.no_grad()
def generate(
    model: Any,
    prompts: Sequence[str],
    max_new_tokens: int = 32,
    batch_size: int | str | BatchSizer = "auto",
    progress: Callable[[Any], Any] | None = None,
) -> list[str]:
    """Greedy continuations of each prompt (interventions in force apply to every step)."""
    token_ids = encode(model.tokenizer, prompts)
    out: list[str] = [""] * len(prompts)
    hf, tok = model.hf, model.tokenizer

    def step(size: int) -> Iterator[None]:
        batches = make_batches(token_ids, size, tok.pad_token_id)
        for batch in progress(batches) if progress else batches:
            with in_flight(model, batch):
                inputs = batch.model_inputs(model.input_device, with_positions=False)
                new = hf.generate(
                    **inputs, max_new_tokens=max_new_tokens, do_sample=False,
                    pad_token_id=tok.pad_token_id, top_p=None, top_k=None, temperature=None,
                )[:, batch.input_ids.shape[1]:]
            model.tokens_processed += new.numel()
            for r, i in enumerate(batch.indices):
                out[i] = tok.decode(new[r], skip_special_tokens=True)
            yield None

    BatchSizer.of(batch_size, model.input_device).run(len(prompts), step)
    return out
