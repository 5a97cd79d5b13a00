"""Data parallelism across processes started by `accelerate launch`, `torchrun` or a multi-node launcher.

Every rank loads the model and runs the same task code with the same seed. Each request the
engine serves (score, loglikelihood, generate, collect) is cut into the length-sorted batches a
single process would run; rank r runs batches r, r + W, r + 2W, ... of them, and the rows come
back to every rank in the caller's order. Batch compositions, and so the numbers (sampled
generations included, which are seeded per batch), are those of one process, whatever the
number of ranks; everything a task computes from them (probes, bootstraps) is then identical
on every rank, and rank 0 alone writes results, plots and samples.

The launchers set RANK and WORLD_SIZE; without them this is one process and nothing here costs
anything. The process group is the launcher's (accelerate's `PartialState` when accelerate
started us), gloo on CPU and nccl on CUDA.
"""

from __future__ import annotations

import os
from typing import Any, Sequence, TypeVar

T = TypeVar("T")


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def is_main() -> bool:
    """Whether this process writes results, plots and samples (rank 0, or the only process)."""
    return rank() == 0


def local_rank() -> int:
    """This process's index on its machine: the GPU it takes (LOCAL_RANK, set by the launchers)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def process_group() -> Any:
    """The default process group, started on first use with the launcher's rendezvous variables."""
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() and os.environ.get("HARNESS_DIST_BACKEND") != "gloo" else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local_rank())
        dist.init_process_group(backend=backend)
    return dist


def mine(items: Sequence[T]) -> list[tuple[int, T]]:
    """(index, item) of this rank's share: every world_size-th item, starting at its rank."""
    w, r = world_size(), rank()
    return [(i, item) for i, item in enumerate(items) if i % w == r]


def gather_rows(local: dict[int, Any], n: int) -> list[Any]:
    """Rows 0..n-1 from every rank's {row: value}, in the caller's order, on every rank."""
    if world_size() == 1:
        return [local[i] for i in range(n)]
    merged: dict[int, Any] = {}
    for part in gather_objects(local):
        merged.update(part or {})
    missing = [i for i in range(n) if i not in merged]
    if missing:
        raise RuntimeError(f"rows {missing[:5]} were computed on no rank")
    return [merged[i] for i in range(n)]


def barrier() -> None:
    if world_size() > 1:
        process_group().barrier()


def gather_objects(obj: T) -> list[T]:
    """Every rank's `obj`, in rank order, on every rank ([obj] in one process)."""
    if world_size() == 1:
        return [obj]
    parts: list[Any] = [None] * world_size()
    process_group().all_gather_object(parts, obj)
    return parts


def sum_over_ranks(values: Any) -> Any:
    """The elementwise sum of a tensor over all ranks (the tensor itself in one process)."""
    if world_size() == 1:
        return values
    total = values.clone()
    process_group().all_reduce(total)
    return total
