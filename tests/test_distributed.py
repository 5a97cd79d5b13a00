"""Data parallelism: two processes (gloo on CPU) give every rank exactly what one process computes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).parent.parent
SCRIPT = ROOT / "tests" / "dist" / "engine_requests.py"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(out: Path, processes: int) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "HARNESS_DIST_BACKEND": "gloo"}
    if processes == 1:
        cmd = [sys.executable, str(SCRIPT), str(out)]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={processes}", "--master_addr=127.0.0.1",
               f"--master_port={free_port()}", str(SCRIPT), str(out)]
    done = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    one, two = tmp_path_factory.mktemp("one"), tmp_path_factory.mktemp("two")
    launch(one, 1)
    launch(two, 2)
    return torch.load(one / "rank0.pt"), [torch.load(two / f"rank{r}.pt") for r in (0, 1)]


@pytest.mark.parametrize("key", ["score", "loglikelihood", "collect", "mean", "greedy", "sampled", "edited"])
def test_two_processes_give_every_rank_the_single_process_result(runs, key):
    single, ranks = runs
    for got in ranks:
        if isinstance(single[key], list):
            assert got[key] == single[key]
        else:
            assert torch.equal(got[key], single[key]), key
