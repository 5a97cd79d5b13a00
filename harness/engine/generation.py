"""Continuations of prompts through transformers' own `generate`, greedy or sampled, batched by length.

Decoding is the library's (`GenerationConfig`, stop strings included), never a loop of our
own, so a model's own generation quirks (caches, special tokens) behave as they do for
everyone else. What the engine adds: length-sorted batches whose rows go back to the
caller's order, edits in force at every step, token accounting, and seeded sampling that
leaves the global random state alone.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence, Union, cast

import numpy as np
import torch

from harness.engine import distributed
from harness.engine.batching import CPU_GENERATE_BATCH_SIZE, BatchSizer, check_lengths, encode, make_batches
from harness.engine.sites import in_flight

if TYPE_CHECKING:  # the type only: a request module never loads a model, so it need not import the loader
    from harness.engine.models import Model

# A prompt is text (tokenised with the tokenizer's special tokens) or token ids as they are.
Prompt = Union[str, Sequence[int]]


def tokenize_prompts(tokenizer: Any, prompts: Sequence[Prompt]) -> list[list[int]]:
    """Token ids of each prompt: text is encoded with special tokens, id lists are kept as given."""
    texts = [(i, p) for i, p in enumerate(prompts) if isinstance(p, str)]
    encoded = encode(tokenizer, [p for _, p in texts]) if texts else []
    out: list[list[int]] = [list(p) if not isinstance(p, str) else [] for p in prompts]
    for (i, _), ids in zip(texts, encoded):
        out[i] = list(ids)
    if any(not ids for ids in out):
        raise ValueError("a prompt has no tokens: give at least one token (e.g. BOS) to generate from")
    return out


def decoding_config(max_new_tokens: int, temperature: float, top_p: float, stop: Sequence[str], pad_token_id: int | None) -> Any:
    """The `GenerationConfig` of a call: every sampling knob explicit, so a model's own defaults never leak in."""
    from transformers import GenerationConfig

    if not np.isfinite(temperature) or temperature < 0:
        raise ValueError(f"temperature={temperature}: use 0 (greedy) or a positive number")
    if not np.isfinite(top_p) or not 0 < top_p <= 1:
        raise ValueError(f"top_p={top_p}: use a number in (0, 1]")
    if temperature > 0:
        options: dict[str, Any] = dict(do_sample=True, temperature=float(temperature), top_k=0, top_p=float(top_p))
    else:
        options = dict(do_sample=False, temperature=None, top_k=None, top_p=None)
    return GenerationConfig(max_new_tokens=max_new_tokens, pad_token_id=pad_token_id, stop_strings=list(stop) or None, **options)


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    """The text before the first stop string (generation stops after the token that completes one)."""
    cut = min((text.find(s) for s in stop if s and s in text), default=-1)
    return text if cut < 0 else text[:cut]


@torch.no_grad()
def generate(
    model: Model,
    prompts: Sequence[Prompt],
    max_new_tokens: int = 32,
    batch_size: int | str | BatchSizer = "auto",
    progress: Callable[[Any], Any] | None = None,
    temperature: float = 0.0,
    top_p: float = 1.0,
    seed: int | None = None,
    stop: Sequence[str] = (),
) -> list[str]:
    """Continuation of each prompt, in prompt order (interventions in force apply at every step).

    temperature 0 decodes greedily; above 0 it samples (top_k off, nucleus `top_p`). Sampling
    is seeded per batch from `seed` inside a forked random state, so the same seed and batch
    size give the same texts and the caller's random state is untouched. `stop`: strings that
    end a continuation; the text is cut before the first one.
    """
    if max_new_tokens < 1:
        raise ValueError("max_new_tokens must be at least 1")
    tok = model.tokenizer
    token_ids = tokenize_prompts(tok, prompts)
    check_lengths(model.hf, token_ids, extra=max_new_tokens)
    config = decoding_config(max_new_tokens, temperature, top_p, stop, tok.pad_token_id)
    request = _Continuations(model, token_ids, config, seed, stop, progress)
    BatchSizer.of(batch_size, model.input_device, CPU_GENERATE_BATCH_SIZE).run(len(prompts), request.run)
    return request.result()


class _Continuations:
    """One `generate` call: each batch's decoded continuations, filed by prompt."""

    def __init__(self, model: Model, token_ids: list[list[int]], config: Any, seed: int | None, stop: Sequence[str],
                 progress: Callable[[Any], Any] | None) -> None:  # fmt: skip
        self.model, self.token_ids, self.config, self.seed, self.stop, self.progress = (
            model,
            token_ids,
            config,
            seed,
            stop,
            progress,
        )
        self.with_tokenizer = {"tokenizer": model.tokenizer} if stop else {}  # stop strings are matched on decoded tokens
        device = model.input_device
        self.rng_devices = [device.index or 0] if device.type == "cuda" else []
        self.texts: list[str | None] = [None] * len(token_ids)

    def run(self, size: int) -> Iterator[None]:
        """This rank's batches of `size` prompts, one yield each (the sizer halves `size` on out-of-memory)."""
        model, tok = self.model, self.model.tokenizer
        batches = distributed.mine(make_batches(self.token_ids, size, tok.pad_token_id))
        for b, batch in self.progress(batches) if self.progress else batches:
            with in_flight(model, batch), torch.random.fork_rng(devices=self.rng_devices):
                if self.config.do_sample:  # seeded per batch: the same seed and batch size give the same texts
                    torch.manual_seed(int(np.random.default_rng([0 if self.seed is None else self.seed, b]).integers(2**31)))
                inputs = batch.model_inputs(model.input_device, with_positions=False)
                generated = model.hf.generate(**inputs, generation_config=self.config, **self.with_tokenizer)
                new = generated[:, batch.input_ids.shape[1] :]
            model.tokens_processed += new.numel()
            for r, i in enumerate(batch.indices):
                self.texts[i] = cut_at_stop(tok.decode(new[r], skip_special_tokens=True), self.stop)
            yield None

    def result(self) -> list[str]:
        """Every prompt's text, gathered from every rank under data parallelism."""
        if distributed.world_size() > 1:
            filled = {i: text for i, text in enumerate(self.texts) if text is not None}
            return distributed.gather_rows(filled, len(self.texts))
        return cast(list[str], self.texts)  # one process runs every batch: no row is left None
