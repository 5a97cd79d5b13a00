"""Tokenise prompts once, batch them by length with left padding, and find a batch size that fits.

Rows are sorted by token length so a batch wastes little compute on padding, and
longest first so an out-of-memory error shows up in the first batch. Position ids
come from the attention mask: a left-padded row then computes exactly what the
prompt alone computes.
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Protocol, Sequence

import torch

from harness.errors import UsageError

CPU_BATCH_SIZE = 16  # CPUs raise no out-of-memory errors; on few cores 16 runs faster than 32 (benchmarks/)
# Decoding steps read every weight for a few rows each: memory-bound on a CPU up to a few dozen rows,
# so generation takes wider batches (gemma3-270m, 64 sampled texts: 64 per batch 2.0x faster than 8).
CPU_GENERATE_BATCH_SIZE = 64
CUDA_START_BATCH_SIZE = 256


class Indexable(Protocol):
    """One token position per caller index: a list, or the same index for everyone (`sites.SamePosition`)."""

    def __getitem__(self, i: int) -> int: ...


@dataclass
class Batch:
    """One padded batch; `indices` maps its rows back to the caller's prompt order."""

    indices: list[int]
    input_ids: torch.Tensor  # (B, T) left padded
    attention_mask: torch.Tensor  # (B, T)
    lengths: torch.Tensor  # (B,) real tokens per row

    @property
    def pad(self) -> torch.Tensor:
        """Left padding per row: real token j of row i sits at column pad[i] + j."""
        return self.input_ids.shape[1] - self.lengths

    @property
    def position_ids(self) -> torch.Tensor:
        return (self.attention_mask.cumsum(-1) - 1).clamp(min=0)

    def model_inputs(self, device: torch.device, with_positions: bool) -> dict[str, torch.Tensor]:
        inputs = {"input_ids": self.input_ids.to(device), "attention_mask": self.attention_mask.to(device)}
        if with_positions:
            inputs["position_ids"] = self.position_ids.to(device)
        return inputs

    def columns(self, positions: Indexable) -> torch.Tensor:
        """Padded column of each row's requested token; positions are per caller index, negative from the end."""
        pos = torch.tensor([positions[i] for i in self.indices])
        pos = torch.where(pos < 0, pos + self.lengths, pos)
        if bool(((pos < 0) | (pos >= self.lengths)).any()):
            raise IndexError("a requested token position is outside its prompt")
        return self.pad + pos


def encode(tokenizer: Any, prompts: Sequence[str]) -> list[list[int]]:
    """Token ids of each prompt, with the tokenizer's own special tokens (BOS where the model expects one)."""
    return tokenizer(list(prompts), add_special_tokens=True)["input_ids"]


def max_positions(hf: Any) -> int | None:
    """The most positions the model's config says it was built for (None when it declares none)."""
    config = getattr(hf, "config", None)
    text = config.get_text_config() if config is not None and hasattr(config, "get_text_config") else config
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(text, name, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def check_lengths(hf: Any, token_ids: Sequence[Sequence[int]], extra: int = 0) -> None:
    """Refuse, before any batch is padded or allocated, a sequence longer than the model's positions.

    A too-long prompt would otherwise allocate its padded batch and attention mask (gigabytes
    for a long data file) and then fail inside the model, or silently run past positions the
    model never saw. `extra`: tokens that will be appended (generation).
    """
    limit = max_positions(hf)
    if limit is None or not token_ids:
        return
    longest = max(len(ids) for ids in token_ids)
    if longest + extra > limit:
        more = f" plus {extra} to generate" if extra else ""
        raise UsageError(
            f"a prompt of {longest} tokens{more} is longer than the model's {limit} positions: "
            "shorten the data file's texts (or the task's length options) for this model"
        )


def make_batches(token_ids: Sequence[Sequence[int]], batch_size: int, pad_id: int) -> list[Batch]:
    """Padded batches, longest prompts first (a list, so a progress bar knows its length)."""
    order = sorted(range(len(token_ids)), key=lambda i: (-len(token_ids[i]), i))
    batches = []
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        width = max(len(token_ids[i]) for i in rows)
        ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for r, i in enumerate(rows):
            n = len(token_ids[i])
            ids[r, width - n :] = torch.tensor(token_ids[i], dtype=torch.long)
            mask[r, width - n :] = 1
        batches.append(Batch(indices=list(rows), input_ids=ids, attention_mask=mask, lengths=mask.sum(-1)))
    return batches


def accepts(fn: Callable, name: str) -> bool:
    """Whether a model's forward takes the keyword `name` (BLOOM, for one, takes no position ids)."""
    return _accepts(getattr(fn, "__func__", fn), name)


@functools.lru_cache(maxsize=256)
def _accepts(fn: Callable, name: str) -> bool:
    # Asked on every batch, so cached; keyed by the class's function, never the bound method,
    # which would keep a model alive after the runner has let it go.
    return name in inspect.signature(fn).parameters


class BatchSizer:
    """Batch size for one task: fixed, or 'auto' (start large on CUDA, halve on out-of-memory).

    One sizer per task and call site: a size found for short prompts must not be reused
    for long ones.
    """

    def __init__(self, requested: int | str, device: torch.device, cpu_size: int = CPU_BATCH_SIZE) -> None:
        self.auto = requested == "auto"
        if self.auto:
            self.size = CUDA_START_BATCH_SIZE if device.type == "cuda" else cpu_size
        else:
            self.size = int(requested)

    @classmethod
    def of(cls, batch_size: "int | str | BatchSizer", device: torch.device, cpu_size: int = CPU_BATCH_SIZE) -> "BatchSizer":
        """Reuse a sizer (a task keeps the size it found) or make one from a requested size."""
        return batch_size if isinstance(batch_size, BatchSizer) else cls(batch_size, device, cpu_size)

    def run(self, n_items: int, step: Callable[[int], Iterator[Any]]) -> list[Any]:
        """Call step(batch_size) and collect what it yields; on CUDA OOM halve the size and start again."""
        while True:
            used = min(self.size, max(n_items, 1))
            try:
                return list(step(used))
            except torch.OutOfMemoryError:
                if not self.auto or used == 1:
                    raise
                self.size = used // 2
                torch.cuda.empty_cache()
