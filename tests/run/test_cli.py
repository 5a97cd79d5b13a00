"""The command line: bad input gets one line and exit 2; runs are reused, atomic and resumable."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jsonschema
import pytest

from harness.api.registry import get_task
from harness.engine.models import slugify
from harness.results import SCHEMA_PATH, TIMING_FIELDS
from harness.run.cli import main
from tests.tiny_models import save_tiny_model, tiny_tokenizer


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("models") / "tiny-llama"
    save_tiny_model("llama", folder)
    return folder


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_list_shows_builtin_tasks(capsys):
    code, out, _ = run_cli(capsys, "list")
    assert code == 0
    assert "weekday_circle" in out and "month_circle" in out and "Engels" in out


@pytest.mark.parametrize(
    "argv,message",
    [
        (["run", "--task", "weekday_circel"], "did you mean weekday_circle"),
        (["run", "--task", "weekday_circle", "--model", "no-such-model"], "unknown model 'no-such-model'"),
        (["run", "--task", "weekday_circle", "--model", "/nonexistent/model.gguf"], "no such GGUF file"),
        (["run", "--task", "weekday_circle", "--task-arg", "colour=red"], "has no option 'colour'"),
        (["run", "--task", "weekday_circle", "--task-arg", "n_components=five"], "expected an integer"),
        (["run", "--task", "weekday_circle", "--task-arg", "template=poetry"], "choose one of paper, code"),
        (["run", "--task", "weekday_circle", "--task-arg", "n_components"], "is not key=value"),
        (["run", "--task", "weekday_circle", "--batch-size", "0"], "positive integer"),
        (["run", "--task", "weekday_circle", "--dtype", "float8"], "invalid choice"),
        (["run"], "--task"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(capsys, tmp_path, argv, message):
    code, out, err = run_cli(capsys, *argv, "--output-dir", str(tmp_path)) if argv != ["run"] else run_cli(capsys, *argv)
    assert code == 2
    assert message in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not list(tmp_path.rglob("*.json"))


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks the no-CUDA message")
@pytest.mark.parametrize("flag", ["--load-in-4bit", "--load-in-8bit"])
def test_bitsandbytes_without_cuda(capsys, tmp_path, tiny_folder, flag):
    code, _, err = run_cli(
        capsys, "run", "--task", "weekday_circle", "--model", str(tiny_folder), flag, "--output-dir", str(tmp_path)
    )
    assert code == 2 and "needs a CUDA GPU" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("flag", ["--load-in-4bit", "--load-in-8bit"])
def test_a_task_that_cannot_run_on_a_quantised_model_says_so_before_loading(capsys, tmp_path, flag):
    code, _, err = run_cli(
        capsys,
        "run",
        "--task",
        "incontext_unlearning",
        "--task-arg",
        "mode=finetune",
        "--model",
        str(tmp_path / "never-loaded"),
        flag,
        "--output-dir",
        str(tmp_path / "out"),
    )
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "incontext_unlearning: mode=finetune trains a LoRA adapter on float weights: drop --load-in-4bit" in err
    assert not (tmp_path / "out").exists()


def test_model_without_layout(capsys, tmp_path):
    from transformers import FalconConfig, FalconForCausalLM

    folder = tmp_path / "falcon"
    config = FalconConfig(vocab_size=len(tiny_tokenizer()), hidden_size=32, num_hidden_layers=1, num_attention_heads=2)
    FalconForCausalLM(config).save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    code, _, err = run_cli(
        capsys, "run", "--task", "weekday_circle", "--model", str(folder), "--output-dir", str(tmp_path / "out")
    )
    assert code == 2
    assert "no layout for architecture FalconForCausalLM" in err and "harness/engine/layout.py" in err


def test_layer_past_depth(capsys, tmp_path, tiny_folder):
    code, _, err = run_cli(
        capsys,
        "run",
        "--task",
        "weekday_circle",
        "--model",
        str(tiny_folder),
        "--task-arg",
        "layer=3",
        "--output-dir",
        str(tmp_path),
    )
    assert code == 2 and "past the model's depth (3 layers, 0..2)" in err
    assert not list(tmp_path.rglob("*.json")) and not list(tmp_path.rglob(".*partial*"))


def test_offline_hub_model_is_one_line(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    code, _, err = run_cli(
        capsys, "run", "--task", "weekday_circle", "--model", "nobody/no-such-model", "--output-dir", str(tmp_path)
    )
    assert code == 2 and "nobody/no-such-model" in err and len(err.strip().splitlines()) == 1


def test_run_writes_valid_results_then_reuses_them(capsys, tmp_path, tiny_folder):
    argv = [
        "run",
        "--model",
        str(tiny_folder),
        "--task",
        "weekday_circle",
        "--output-dir",
        str(tmp_path),
        "--device",
        "cpu",
        "--dtype",
        "float32",
        "--log-samples",
        "--no-progress",
    ]
    code, out, _ = run_cli(capsys, *argv)
    assert code == 0
    stem = f"weekday_circle-v{get_task('weekday_circle').version}"
    path = tmp_path / slugify(str(tiny_folder)) / f"{stem}.json"
    data = json.loads(path.read_text())
    jsonschema.validate(data, json.loads(SCHEMA_PATH.read_text()))
    for name in (
        "accuracy",
        "probe_r2",
        "probe_r2_shuffled",
        "probe_r2_random_plane",
        "probe_r2_scrambled_order",
        "intervention_success",
        "intervention_logit_diff_patch",
        "intervention_success_mean",
        "intervention_success_rotate",
    ):
        m = data["metrics"][name]
        assert m["ci_low"] <= m["ci_high"] and m["n"] > 0
    assert data["metrics"]["accuracy"]["n"] == 49 and data["metrics"]["intervention_success"]["n"] == 49
    assert data["reference"]["metrics"]["mistralai/Mistral-7B-v0.1"]["accuracy"] == 0.633
    for artifact in data["artifacts"]:
        assert (path.parent / artifact).is_file()
    assert {f"{stem}/circle.png", f"{stem}/samples.jsonl"} <= set(data["artifacts"])
    assert len((path.parent / stem / "samples.jsonl").read_text().splitlines()) == 49

    code, out, _ = run_cli(capsys, *argv)
    assert code == 0 and "reused" in out and "loading" not in out
    assert json.loads(path.read_text()) == data

    code, out, _ = run_cli(capsys, *argv, "--force")
    again = json.loads(path.read_text())
    strip = lambda d: {k: v for k, v in d.items() if k not in TIMING_FIELDS}  # noqa: E731
    assert code == 0 and "reused" not in out
    assert strip(again) == strip(data)  # same seed, same results apart from timing

    code, out, _ = run_cli(capsys, *argv, "--seed", "1", "--limit", "10")
    assert code == 0
    other = [p for p in path.parent.glob(f"{stem}-*.json")]
    assert len(other) == 1 and json.loads(other[0].read_text())["metrics"]["accuracy"]["n"] == 10


SLOW_TASK = """
import sys, time
from harness import Task, TaskResult, metric, register_task
import numpy as np

@register_task
class Sleepy(Task):
    name = "sleepy"
    def run(self, model, config, ctx):
        import matplotlib; matplotlib.use("Agg"); import matplotlib.pyplot as plt
        fig, ax = plt.subplots(); ctx.save_figure(fig, "plot.png")
        if {interrupt}:
            raise KeyboardInterrupt
        time.sleep({sleep})
        return TaskResult(metrics={{"x": metric(np.ones(3))}})

from harness.run.cli import main
sys.exit(main(sys.argv[1:]))
"""


def run_script(tmp_path: Path, folder: Path, interrupt: bool, sleep: float, **popen) -> subprocess.Popen:
    script = tmp_path / f"sleepy_{interrupt}_{sleep}.py"
    script.write_text(SLOW_TASK.format(interrupt=interrupt, sleep=sleep))
    argv = [sys.executable, str(script), "run", "--model", str(folder), "--task", "sleepy", "--output-dir", str(tmp_path / "out")]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, **popen)


def test_ctrl_c_leaves_no_results_file(tmp_path, tiny_folder):
    proc = run_script(tmp_path, tiny_folder, interrupt=True, sleep=0)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "interrupted" in err and "Traceback" not in err
    out = tmp_path / "out" / slugify(str(tiny_folder))
    assert not (out / "sleepy-v1.0.json").exists() and not list(out.glob(".*partial*"))


def test_killed_run_leaves_no_results_file_and_next_run_completes(tmp_path, tiny_folder):
    proc = run_script(tmp_path, tiny_folder, interrupt=False, sleep=60)
    out = tmp_path / "out" / slugify(str(tiny_folder))
    deadline = time.time() + 120
    while not list(out.glob(".sleepy-v1.0.partial*/plot.png")) and time.time() < deadline:
        time.sleep(0.2)
    assert list(out.glob(".sleepy-v1.0.partial*/plot.png")), "the run never reached the task"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert not (out / "sleepy-v1.0.json").exists()
    proc = run_script(tmp_path, tiny_folder, interrupt=False, sleep=0)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    data = json.loads((out / "sleepy-v1.0.json").read_text())
    assert data["artifacts"] == ["sleepy-v1.0/plot.png"] and (out / "sleepy-v1.0" / "plot.png").is_file()
    assert not list(out.glob(".*partial*"))
