"""Batching: length-sorted left-padded batches, and the automatic batch size that halves on OOM."""

from __future__ import annotations

import pytest
import torch

from harness.engine.batching import CPU_BATCH_SIZE, BatchSizer, make_batches


def test_batches_are_sorted_longest_first_and_left_padded():
    ids = [[1, 2], [3, 4, 5, 6], [7], [8, 9, 10]]
    batches = make_batches(ids, batch_size=2, pad_id=0)
    assert [b.indices for b in batches] == [[1, 3], [0, 2]]
    first = batches[0]
    assert first.input_ids.tolist() == [[3, 4, 5, 6], [0, 8, 9, 10]]
    assert first.attention_mask.tolist() == [[1, 1, 1, 1], [0, 1, 1, 1]]
    assert first.position_ids.tolist() == [[0, 1, 2, 3], [0, 0, 1, 2]]
    assert first.columns([0, -1, 0, 0]).tolist() == [3, 1]  # prompt 1 last token, prompt 3 first token
    with pytest.raises(IndexError):
        first.columns([0, 4, 0, 0])


def step_that_fits(limit: int, seen: list[int]):
    def step(size: int):
        seen.append(size)
        for start in range(0, 100, size):
            if size > limit:
                raise torch.OutOfMemoryError("CUDA out of memory")
            yield start

    return step


def test_auto_batch_size_halves_on_oom_and_keeps_what_it_found():
    sizer = BatchSizer("auto", torch.device("cuda"))
    seen: list[int] = []
    done = sizer.run(100, step_that_fits(40, seen))
    assert seen == [100, 50, 25] and sizer.size == 25 and done == list(range(0, 100, 25))
    seen.clear()
    assert BatchSizer.of(sizer, torch.device("cuda")) is sizer
    sizer.run(100, step_that_fits(40, seen))
    assert seen == [25]  # the next call of the same task starts from the size that fitted


def test_fixed_batch_size_does_not_hide_oom():
    with pytest.raises(torch.OutOfMemoryError):
        BatchSizer(64, torch.device("cuda")).run(100, step_that_fits(40, []))
    assert BatchSizer("auto", torch.device("cpu")).size == CPU_BATCH_SIZE


def test_generation_takes_wider_automatic_batches_on_a_cpu_than_forward_passes():
    """Decoding is memory-bound at a few rows on a CPU; a fixed --batch-size still applies to every kind."""
    from harness import RunContext
    from harness.engine.batching import CPU_GENERATE_BATCH_SIZE
    from harness.engine.models import from_hf
    from tests.tiny_models import tiny_model, tiny_tokenizer

    model = from_hf(tiny_model("llama"), tiny_tokenizer(), spec="tiny-llama")
    auto = RunContext(model=model, batch_size="auto")
    assert auto._sizer("generate").size == CPU_GENERATE_BATCH_SIZE > auto._sizer("score").size == CPU_BATCH_SIZE
    assert RunContext(model=model, batch_size=4)._sizer("generate").size == 4
