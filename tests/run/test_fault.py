"""Faults: a run killed at any instant never leaves a partial or inconsistent results file,
leaves nothing a later run trips over, and the rerun completes."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from harness import Task, TaskResult
from harness.engine.models import LoadOptions, load_model
from harness.results.validate import validate_file
from harness.run.runner import RunSpec, run_task
from tests.tiny_models import tiny_model, tiny_tokenizer

ROOT = Path(__file__).parents[2]
FAST = ["--task-arg", "intervention=false", "--bootstrap", "100", "--device", "cpu", "--no-progress"]
KILLS, KILL_SECONDS = 6, 60  # the kill loop stops at whichever bound comes first


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("models") / "tiny"
    tiny_model("llama").save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    return folder


def results_files(out: Path) -> list[Path]:
    return sorted(
        p
        for p in out.rglob("*.json")
        if not any(part.startswith(".") for part in p.relative_to(out).parts) and p.parent.parent == out
    )


def assert_consistent(out: Path) -> None:
    """Every results file validates and every artifact it lists exists."""
    for path in results_files(out):
        assert validate_file(path) == [], path
        for artifact in json.loads(path.read_text())["artifacts"]:
            assert (path.parent / artifact).exists(), f"{path.name} lists {artifact}, which is gone"


def leftovers(out: Path) -> list[Path]:
    return [p for p in out.rglob(".*") if ".partial" in p.name or p.name.endswith(".tmp")]


def cli(folder: Path, out: Path, *extra: str, tasks: tuple[str, ...] = ("weekday_circle", "month_circle")) -> subprocess.Popen:
    argv = [sys.executable, "-m", "harness.run.cli", "run", "--model", str(folder), "--output-dir", str(out), *FAST, *extra]
    for task in tasks:
        argv += ["--task", task]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)


def wait_for_work(out: Path, proc: subprocess.Popen, deadline: float) -> None:
    """Until a task is running (a staging folder exists), the process ended, or the deadline."""
    while time.time() < deadline and proc.poll() is None and not any(".partial" in p.name for p in out.rglob(".*")):
        time.sleep(0.05)


@pytest.mark.slow  # a minute of kills and a full rerun, by design
def test_kill_at_random_points_then_rerun(tmp_path, tiny_folder):
    out = tmp_path / "out"
    rng = random.Random(int(os.environ.get("FAULT_SEED", time.time_ns() % 2**32)))
    start, kills = time.time(), 0
    while kills < KILLS and time.time() - start < KILL_SECONDS:
        proc = cli(tiny_folder, out, "--force")  # --force: every kill run replaces a result, the riskiest path
        if rng.random() < 0.8:  # most kills land while a task runs or installs its result, the rest anywhere
            wait_for_work(out, proc, time.time() + 60)
            time.sleep(rng.uniform(0, 3))
        else:
            time.sleep(rng.uniform(0, 8))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.communicate(timeout=60)
        assert_consistent(out)
    assert kills >= 2, "the loop never got to kill a run"
    proc = cli(tiny_folder, out)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    files = results_files(out)
    assert sorted(json.loads(p.read_text())["task"]["name"] for p in files) == ["month_circle", "weekday_circle"]
    assert_consistent(out)
    assert not leftovers(out), leftovers(out)


def test_a_reader_that_leaves_does_not_stop_the_run(tmp_path, tiny_folder):
    """`harness run ... | head -1`: the pipe closes, the run goes on and its results are kept."""
    out = tmp_path / "out"
    proc = cli(tiny_folder, out, tasks=("weekday_circle",))
    proc.stdout.close()  # before the first line is printed: every print meets a closed pipe
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0 and "Traceback" not in err, err
    assert len(results_files(out)) == 1
    assert_consistent(out)


# ---- a crash at each step of writing a result, deterministically ----


class Crash(BaseException):
    """Stands for a kill: not an Exception, so nothing on the way catches it."""


MUTATIONS = [
    (os, "replace"),
    (os, "rename"),
    (os, "unlink"),
    (os, "rmdir"),
    (shutil, "rmtree"),
    (tempfile, "mkstemp"),
    (Path, "rename"),
    (Path, "replace"),
    (Path, "unlink"),
    (Path, "rmdir"),
    (Path, "mkdir"),
]


class Injector:
    """Counts the file system changes made once armed and raises `Crash` instead of the `at`-th one."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, at: int) -> None:
        self.at, self.count, self.armed, self.depth, self.fired = at, 0, False, 0, False
        for owner, name in MUTATIONS:
            monkeypatch.setattr(owner, name, self.wrap(getattr(owner, name)))

    def wrap(self, fn):
        def step(*args, **kwargs):
            if self.armed and not self.fired and self.depth == 0:
                self.count += 1
                if self.count == self.at:
                    self.fired = True
                    raise Crash
            self.depth += 1  # a change inside another (rmtree's unlinks) is part of that step
            try:
                return fn(*args, **kwargs)
            finally:
                self.depth -= 1

        return step


def run_plot(model, path: Path, spec: RunSpec, injector: Injector | None, name: str):
    """Run a task that saves one plot, `name`; with an injector, arm it once the task's own work is done."""

    class Plot(Task):
        def run(self, model, config, ctx):
            fig = ctx.figure()
            fig.add_subplot().plot([0, 1])
            ctx.save_figure(fig, name)
            if injector is not None:
                injector.armed = True  # the task's work is done: from here on, the runner writes the result
            return TaskResult(metrics={"x": ctx.metric(np.arange(5.0))})

    Plot.name = "crash_plot"
    return run_task(model, Plot, Plot.Config(), path, spec)


@pytest.fixture(scope="module")
def tiny_loaded(tiny_folder):
    return load_model(str(tiny_folder), LoadOptions(device="cpu"))


def test_a_crash_at_each_step_of_writing_a_result_leaves_it_consistent(tmp_path, tiny_loaded, monkeypatch):
    spec = RunSpec(models=["tiny"], tasks=["crash_plot"], output_dir=tmp_path, show_progress=False)
    at, completed = 1, False
    while not completed:
        assert at < 40, "writing a result should take a handful of steps"
        out = tmp_path / f"crash-{at}"
        path = out / "m" / "crash_plot-v1.0.json"
        run_plot(tiny_loaded, path, spec, None, "old.png")  # an older result to replace
        with monkeypatch.context() as patch:
            injector = Injector(patch, at)
            try:
                run_plot(tiny_loaded, path, spec, injector, "new.png")
                completed = not injector.fired
            except Crash:
                pass
        assert_consistent(out)
        if path.exists():  # the old result whole, or the new one whole
            assert json.loads(path.read_text())["artifacts"] in (["crash_plot-v1.0/old.png"], ["crash_plot-v1.0/new.png"])
        results = run_plot(tiny_loaded, path, spec, None, "new.png")  # the rerun completes
        assert results.artifacts == ["crash_plot-v1.0/new.png"]
        assert_consistent(out)
        at += 1
    assert at > 3  # the crash was tried at several steps before one run got through
