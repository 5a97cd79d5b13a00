"""What every benchmark shares: the prompts, a timer that also watches memory, and a Markdown table.

Every comparison runs in one process, on the same prompts, after a warm-up call, and reports
the median of `repeat` runs; ratios are what a reader should compare across machines, not the
seconds. Run benchmarks alone on the machine: two CPU-heavy processes on two cores slow torch
down many times over.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

DATA = Path(__file__).resolve().parent.parent / "tasks" / "scrambled_text" / "data" / "sentences.jsonl"


def mixed_prompts(tokenizer: Any, n: int = 128, shortest: int = 9, longest: int = 68) -> list[str]:
    """`n` English prompts whose token lengths spread evenly over [shortest, longest].

    Sentences of the shipped scrambled_text sample are joined and cut at word boundaries, so
    the text is natural and the lengths, not the content, differ.
    """
    words = " ".join(json.loads(line)["text"] for line in DATA.read_text().splitlines() if line.strip()).split()
    prompts, start = [], 0
    for i in range(n):
        target = shortest + round(i * (longest - shortest) / max(1, n - 1))
        end = _first_end_reaching(tokenizer, words, start, target)
        prompts.append(" ".join(words[start:end]))
        start = (end + 7) % max(1, len(words) - 200)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(0)).tolist()  # mixed, as real requests come
    return [prompts[i] for i in order]


def _first_end_reaching(tokenizer: Any, words: list[str], start: int, target: int) -> int:
    """The fewest words from `start` whose text has `target` tokens (a bisection: a word added never removes tokens)."""
    low, high = start + 1, len(words)
    while low < high:
        mid = (low + high) // 2
        if len(tokenizer(" ".join(words[start:mid]))["input_ids"]) < target:
            low = mid + 1
        else:
            high = mid
    return low


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@dataclass
class Timing:
    seconds: float  # median over repeats
    peak_mib: float  # resident memory above the level before the call, at its highest


def measure(fn: Callable[[], Any], repeat: int = 3) -> Timing:
    """Median seconds of `fn` after one warm-up call, and the peak extra resident memory it needed."""
    fn()
    times, peaks = [], []
    for _ in range(repeat):
        seconds, peak = _timed(fn)
        times.append(seconds)
        peaks.append(peak)
    return Timing(statistics.median(times), max(peaks))


def measure_once(fn: Callable[[], Any]) -> Timing:
    """One call of `fn`, no warm-up: for what only a first call shows (a search, memory a result keeps)."""
    seconds, peak = _timed(fn)
    return Timing(seconds, peak)


def measure_together(fns: dict[str, Callable[[], Any]], repeat: int = 3) -> dict[str, Timing]:
    """`measure` for several variants, their repeats interleaved (A B C, A B C, ...).

    On a shared or thermally throttled machine the speed drifts over minutes; interleaving gives
    every variant the same drift, so their ratio holds where back-to-back runs would not.
    """
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    peaks: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            seconds, peak = _timed(fn)
            times[name].append(seconds)
            peaks[name].append(peak)
    return {name: Timing(statistics.median(times[name]), max(peaks[name])) for name in fns}


def _timed(fn: Callable[[], Any]) -> tuple[float, float]:
    """Seconds of one call of `fn` and its peak extra memory: on the GPU where CUDA is in use, else resident.

    CUDA work is asynchronous, so the clock is read only after the device has finished.
    """
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        start = time.perf_counter()
        result = fn()
        torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        del result
        return seconds, (torch.cuda.max_memory_allocated() - base) / 2**20
    base = rss_mib()
    peak = [base]
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(0.005):
            peak[0] = max(peak[0], rss_mib())

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    start = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - start
    stop.set()
    watcher.join()
    del result
    return seconds, max(peak[0], rss_mib()) - base


def machine() -> str:
    """One line naming the machine and the torch threads, to print above every table."""
    cpu = platform.processor() or platform.machine()
    gpu = f"{torch.cuda.get_device_name()}, " if torch.cuda.is_available() else ""
    return (
        f"{gpu}{platform.system()} {cpu}, {os.cpu_count()} cores, torch {torch.__version__} with "
        f"{torch.get_num_threads()} threads"
    )


def table(header: list[str], rows: list[list[str]]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def padded_batches(tokenizer: Any, prompts: list[str], size: int, device: Any = "cpu") -> list[dict[str, torch.Tensor]]:
    """What a plain transformers user runs: prompts in their own order, padded to the longest of each batch."""
    return [
        {k: v.to(device) for k, v in tokenizer(prompts[i : i + size], return_tensors="pt", padding=True).items()}
        for i in range(0, len(prompts), size)
    ]


def padding_bound(tokenizer: Any, prompts: list[str], size: int) -> float:
    """How much faster length-sorted batches can be than batches in the prompts' own order: their token ratio.

    A forward pass costs about its padded tokens (rows x width), so the plain loop's padded
    tokens over the harness's, both with `size` rows a batch, bound the speed-up of length
    sorting. On the benchmarks' 128 prompts of 9-68 tokens in batches of 16 it is 1.55 (not 2:
    a random batch of 16 is padded to about 64 tokens, and the sorted ones to 42 on average).
    """
    from harness.engine.batching import encode, make_batches

    plain = sum(int(b["input_ids"].numel()) for b in padded_batches(tokenizer, prompts, size))
    ours = sum(int(b.input_ids.numel()) for b in make_batches(encode(tokenizer, prompts), size, tokenizer.pad_token_id))
    return plain / ours
