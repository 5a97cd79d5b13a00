"""Next-token scoring and greedy generation, batched by length.

Logits are computed only at the last position (`logits_to_keep=1`): Gemma's
262k-token unembedding over every position would cost most of the time and memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import torch

from harness.batching import BatchSizer, accepts, encode, make_batches
from harness.sites import forward


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
    batch_size: int | str = "auto",
    progress: Callable[[Any], Any] | None = None,
) -> Scores:
    """Score target tokens as the next token after each prompt (interventions in force apply)."""
    token_ids = encode(model.tokenizer, prompts)
    target = torch.as_tensor(list(targets), dtype=torch.long)
    n, k = len(prompts), len(target)
    logits = torch.empty(n, k)
    logprobs = torch.empty(n, k)
    top = torch.empty(n, dtype=torch.long)
    keep = {"logits_to_keep": 1} if accepts(model.hf.forward, "logits_to_keep") else {}

    def step(size: int) -> Iterator[None]:
        batches = make_batches(token_ids, size, model.tokenizer.pad_token_id)
        for batch in progress(batches) if progress else batches:
            last = forward(model, batch, **keep).logits[:, -1].float()
            idx = torch.as_tensor(batch.indices)
            logits[idx] = last[:, target.to(last.device)].cpu()
            logprobs[idx] = last.log_softmax(-1)[:, target.to(last.device)].cpu()
            top[idx] = last.argmax(-1).cpu()
            yield None

    BatchSizer(batch_size, model.input_device).run(n, step)
    return Scores(logits=logits, logprobs=logprobs, top_token=top)


@torch.no_grad()
def generate(
    model: Any,
    prompts: Sequence[str],
    max_new_tokens: int = 32,
    batch_size: int | str = "auto",
    progress: Callable[[Any], Any] | None = None,
) -> list[str]:
    """Greedy continuations of each prompt (interventions in force apply to every step)."""
    token_ids = encode(model.tokenizer, prompts)
    out: list[str] = [""] * len(prompts)
    hf, tok = model.hf, model.tokenizer

    def step(size: int) -> Iterator[None]:
        batches = make_batches(token_ids, size, tok.pad_token_id)
        for batch in progress(batches) if progress else batches:
            model.current_batch = batch
            try:
                inputs = batch.model_inputs(model.input_device, with_positions=False)
                new = hf.generate(
                    **inputs, max_new_tokens=max_new_tokens, do_sample=False,
                    pad_token_id=tok.pad_token_id, top_p=None, top_k=None, temperature=None,
                )[:, batch.input_ids.shape[1]:]
            finally:
                model.current_batch = None
            model.tokens_processed = getattr(model, "tokens_processed", 0) + int(batch.lengths.sum()) + new.numel()
            for r, i in enumerate(batch.indices):
                out[i] = tok.decode(new[r], skip_special_tokens=True)
            yield None

    BatchSizer(batch_size, model.input_device).run(len(prompts), step)
    return out
