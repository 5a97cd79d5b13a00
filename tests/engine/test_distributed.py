"""Data parallelism: two processes (gloo on CPU) give every rank exactly what one process computes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).parents[2]
SCRIPT = ROOT / "tests" / "dist" / "engine_requests.py"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(out: Path, processes: int, script: Path = SCRIPT, *args: str) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "HARNESS_DIST_BACKEND": "gloo"}
    if processes == 1:
        cmd = [sys.executable, str(script), str(out), *args]
    else:
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            f"--nproc_per_node={processes}",
            "--master_addr=127.0.0.1",
            f"--master_port={free_port()}",
            str(script),
            str(out),
            *args,
        ]
    done = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    one, two = tmp_path_factory.mktemp("one"), tmp_path_factory.mktemp("two")
    launch(one, 1)
    launch(two, 2)
    return torch.load(one / "rank0.pt"), [torch.load(two / f"rank{r}.pt") for r in (0, 1)]


@pytest.mark.parametrize(
    "key", ["score", "loglikelihood", "collect", "mean", "one_batch", "tokens", "greedy", "sampled", "edited", "stream", "linear"]
)
def test_two_processes_give_every_rank_the_single_process_result(runs, key):
    single, ranks = runs
    for got in ranks:
        if isinstance(single[key], list) and isinstance(single[key][0], torch.Tensor):
            assert all(torch.equal(a, b) for a, b in zip(got[key], single[key], strict=True)), key
        elif isinstance(single[key], list):
            assert got[key] == single[key]
        else:
            assert torch.equal(got[key], single[key]), key


def test_data_parallel_fine_tuning_trains_the_single_process_adapter_and_resumes(tmp_path):
    """DDP: each rank trains on its share of every batch, yet losses, token counts and the adapter
    are the single-process ones (to rounding, dropout off); both ranks hold the same adapter; a run
    killed after step 3 resumes from rank 0's step-2 checkpoint to the uninterrupted result."""
    script = ROOT / "tests" / "dist" / "finetune.py"
    one, two, killed = tmp_path / "one", tmp_path / "two", tmp_path / "killed"
    for folder in (one, two, killed):
        folder.mkdir()
    launch(one, 1, script)
    launch(two, 2, script)
    launch(killed, 2, script, "3")
    assert sorted(p.name for p in (killed / "checkpoints").iterdir()) == ["step-000002"]
    launch(killed, 2, script)
    single = torch.load(one / "rank0.pt")
    ranks = [torch.load(two / f"rank{r}.pt") for r in (0, 1)]
    resumed = [torch.load(killed / f"rank{r}.pt") for r in (0, 1)]
    for got in ranks:
        assert got["tokens"] == single["tokens"] and got["reply_tokens"] == single["reply_tokens"]
        assert got["losses"] == pytest.approx(single["losses"], rel=1e-5)
        assert got["losses"][-1] < got["losses"][0]  # it learned
        for name, tensor in single["adapter"].items():
            assert torch.allclose(got["adapter"][name], tensor, atol=1e-5), name
    for name, tensor in ranks[0]["adapter"].items():
        assert torch.equal(ranks[1]["adapter"][name], tensor), name  # ranks stay in step
    for got, uninterrupted in zip(resumed, ranks):
        assert got["resumed_from"] == 2 and got["losses"] == uninterrupted["losses"]
        for name, tensor in uninterrupted["adapter"].items():
            assert torch.equal(got["adapter"][name], tensor), name


def run_cli(model: Path, out: Path, processes: int, *args: str) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "HARNESS_DIST_BACKEND": "gloo", "HF_HUB_OFFLINE": "1"}
    argv = [
        "-m",
        "harness.run.cli",
        "run",
        "--model",
        str(model),
        "--output-dir",
        str(out),
        "--no-progress",
        "--batch-size",
        "4",
        *args,
    ]
    if processes == 1:
        cmd = [sys.executable, *argv]
    else:
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            f"--nproc_per_node={processes}",
            "--master_addr=127.0.0.1",
            f"--master_port={free_port()}",
            *argv,
        ]
    done = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]


def results_files(out: Path) -> dict[str, dict]:
    import json

    files = {p.name: json.loads(p.read_text()) for p in out.rglob("*.json") if p.is_file() and not p.name.startswith(".")}
    for data in files.values():
        for volatile in ("timing", "created_at", "environment"):
            data.pop(volatile, None)
    return files


@pytest.mark.parametrize(
    "task,args",
    [
        ("weekday_circle", []),
        (
            "language_neurons",
            [
                "--task-arg",
                "n_samples=2",
                "--task-arg",
                "n_translate=2",
                "--task-arg",
                "max_new_tokens=4",
                "--task-arg",
                "translation_max_new_tokens=4",
                "--task-arg",
                "n_random=1",
                "--task-arg",
                "conditions=none,both",
            ],
        ),
    ],
)
def test_a_two_process_run_writes_the_single_process_results_file(tmp_path, task, args):
    """Bitwise equal, because every process runs on one thread (OMP_NUM_THREADS=1, as the single
    process here): with other thread counts a matmul sums in another order, and the numbers differ by
    float rounding (about 1e-7 relative), which docs/scaling.md says."""
    from tests.tiny_models import save_tiny_model

    model = tmp_path / "tiny"
    save_tiny_model("llama", model)
    run_cli(model, tmp_path / "one", 1, "--task", task, *args)
    run_cli(model, tmp_path / "two", 2, "--task", task, *args)
    one, two = results_files(tmp_path / "one"), results_files(tmp_path / "two")
    assert one and one == two
    assert not list((tmp_path / "two").rglob(".*partial*"))  # rank 1 wrote nothing of its own


@pytest.mark.slow
@pytest.mark.parametrize(
    "task,args",
    [
        pytest.param(
            "weekday_circle", ["--preset", "quick", "--limit", "7"], marks=pytest.mark.extended
        ),  # two minutes; the tiny-model runs above cover both kinds in CI
        pytest.param(
            "language_neurons",
            [
                "--bootstrap",
                "200",
                "--task-arg",
                "n_samples=3",
                "--task-arg",
                "n_translate=3",
                "--task-arg",
                "max_new_tokens=12",
                "--task-arg",
                "translation_max_new_tokens=12",
                "--task-arg",
                "conditions=none,both",
                "--task-arg",
                "languages=de,zh",
            ],
            marks=pytest.mark.extended,
        ),  # six minutes on two cores; the tiny-model run covers this kind in CI
    ],
)
def test_two_processes_on_smollm2_write_the_single_process_results_file(tmp_path, task, args):
    """The bundled model: patching runs (weekday_circle), neuron scoring and sampled generation (language_neurons)."""
    run_cli(Path("smollm2-135m"), tmp_path / "one", 1, "--task", task, *args)
    run_cli(Path("smollm2-135m"), tmp_path / "two", 2, "--task", task, *args)
    one, two = results_files(tmp_path / "one"), results_files(tmp_path / "two")
    assert one and one == two


def test_each_data_parallel_process_loads_onto_the_gpu_of_its_local_rank(monkeypatch):
    """Without --device, rank 1 of a two-GPU launch takes cuda:1, not cuda:0 beside rank 0."""
    from harness.engine.models import LoadOptions, pick_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert pick_device(LoadOptions()) == "cuda:1"
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert pick_device(LoadOptions()) == "cuda"


def test_device_map_with_several_processes_is_refused_in_one_line(monkeypatch):
    from harness.engine.models import LoadOptions, load_model
    from harness.errors import UsageError

    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(UsageError, match="one process with --device-map"):
        load_model("smollm2-135m", LoadOptions(device_map="auto"))
