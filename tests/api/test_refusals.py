"""Options and inputs that cannot make a meaningful run are refused with one line, and a run
that exits 0 always wrote a file the leaderboard accepts.

Each case here once ran to exit 0 with meaningless numbers, hung, allocated gigabytes, or
ended in a traceback.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest
import torch

from harness import Metric, RunContext, TaskResult, UsageError, load_sae, save_sae
from harness.api.task import Task
from harness.engine.batching import check_lengths
from harness.engine.models import LoadOptions, from_hf, load_model
from harness.engine.train import TrainConfig, finetune_lora
from harness.results.validate import MAX_JSON_BYTES, validate_file
from harness.run.cli import main
from harness.run.runner import RunSpec, run_task
from probes.sae import SAE, SAEConfig
from tasks.incontext_unlearning.data import load_age
from tests.report.test_leaderboard import fake_results
from tests.results.test_compare import comparison_folder
from tests.tiny_models import WEEKDAYS, save_tiny_model, tiny_model, tiny_tokenizer


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory) -> Path:
    return save_tiny_model("llama", tmp_path_factory.mktemp("models") / "tiny-llama")


def cli(capsys, *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out + err


# Options refused before any model loads -----------------------------------------------------------


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--task", "weekday_circle", "--preset", "quik"], "--preset quik: no task declares it (did you mean quick?)"),
        (["--task", "weekday_circle", "--preset", "bogus"], "known presets: quick"),
        (["--task", "code_vs_language", "--task-arg", "n_items=1000000000", "--limit", "3"], "n_items <= 10000"),
        (["--task", "number_helix", "--task-arg", "periods=2,1e308"], "periods <= 10000"),
        (["--task", "polysemy_sae", "--task-arg", "expansion=100000"], "expansion <= 256"),
    ],
)
def test_options_that_cannot_make_a_meaningful_run_are_refused_before_loading(capsys, tmp_path, argv, message):
    start = time.perf_counter()
    code, text = cli(capsys, "run", "--model", str(tmp_path / "never-loaded"), "--output-dir", str(tmp_path / "r"), *argv)
    assert code == 2 and message in text and len(text.strip().splitlines()) == 1, text
    assert time.perf_counter() - start < 10 and not (tmp_path / "r").exists()


def test_an_age_file_with_too_few_people_is_refused(tmp_path):
    rows = [{"question": f"Q{i}?", "answer": f"A{i}", "person": f"P{i % 150}", "choices": ["x", "y"]} for i in range(300)]
    path = tmp_path / "age.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    with pytest.raises(UsageError, match="150 people leave no evaluation items"):
        load_age(str(path), "id")
    path.write_text(json.dumps({"question": "Q?", "answer": 3, "person": "P", "choices": []}))
    with pytest.raises(UsageError, match="every row needs strings question, answer, person"):
        load_age(str(path), "id")


def test_a_model_that_needs_its_own_code_names_the_flag(tmp_path):
    folder = tmp_path / "custom"
    folder.mkdir()
    (folder / "config.json").write_text(
        json.dumps(
            {
                "model_type": "custom-lm",
                "architectures": ["CustomLM"],
                "auto_map": {
                    "AutoConfig": "configuration_custom.CustomConfig",
                    "AutoModelForCausalLM": "modeling_custom.CustomLM",
                },
            }
        )
    )
    (folder / "configuration_custom.py").write_text("raise SystemExit('remote code ran')\n")
    with pytest.raises(UsageError, match="pass --trust-remote-code") as e:
        load_model(str(folder), LoadOptions(device="cpu", show_progress=False))
    assert "\n" not in str(e.value)


# Sizes checked against the model and the weights --------------------------------------------------


def test_a_prompt_longer_than_the_models_positions_is_refused_before_batching():
    hf = tiny_model("gpt2")  # 128 learned positions
    check_lengths(hf, [[1] * 128])
    with pytest.raises(UsageError, match="a prompt of 129 tokens is longer than the model's 128 positions"):
        check_lengths(hf, [[1] * 5, [1] * 129])
    with pytest.raises(UsageError, match="plus 8 to generate"):
        check_lengths(hf, [[1] * 125], extra=8)
    model = from_hf(hf, tiny_tokenizer())
    ctx = RunContext(model=model, show_progress=False)
    long_prompt = " ".join(["Monday"] * 400)
    with pytest.raises(UsageError, match="longer than the model's 128 positions"):
        ctx.collect([long_prompt], ["resid_post.0"])
    with pytest.raises(UsageError, match="longer than the model's 128 positions"):
        ctx.generate([long_prompt], max_new_tokens=2)


def write_sae(folder: Path, d_in: int = 8, d_sae: int = 16, fill: float | None = None) -> Path:
    cfg = SAEConfig(d_in=d_in, d_sae=d_sae)
    sae = SAE.initialised(cfg, seed=0)
    if fill is not None:
        with torch.no_grad():
            sae.W_enc[0, 0] = fill
    return save_sae(sae, cfg, folder)


def test_an_sae_whose_config_declares_more_than_its_weights_hold_allocates_nothing(tmp_path):
    folder = write_sae(tmp_path / "sae")
    raw = json.loads((folder / "cfg.json").read_text())
    (folder / "cfg.json").write_text(json.dumps(dict(raw, d_sae=3_000_000_000)))  # 96 GB of float32 if allocated
    with pytest.raises(UsageError, match="the two files do not belong together"):
        load_sae(str(folder))
    for bad in ("12", -3, True, None):
        (folder / "cfg.json").write_text(json.dumps(dict(raw, d_sae=bad)))
        with pytest.raises(UsageError, match="d_sae is .* not a positive whole number"):
            load_sae(str(folder))
    (folder / "cfg.json").write_text("[1, 2]")
    with pytest.raises(UsageError, match="holds a list"):
        load_sae(str(folder))


@pytest.mark.parametrize("fill", [float("nan"), float("inf")])
def test_an_sae_of_non_finite_weights_is_refused(tmp_path, fill):
    folder = write_sae(tmp_path / "sae", fill=fill)
    with pytest.raises(UsageError, match="holds NaN, infinite or non-float values"):
        load_sae(str(folder))
    load_sae(str(write_sae(tmp_path / "fine")))


# Training that diverges stops with one line --------------------------------------------------------


def test_fine_tuning_that_diverges_stops_before_saving_anything(tmp_path):
    examples = [(f"Today is {day}. Tomorrow is", f" {WEEKDAYS[(i + 1) % 7]}.") for i, day in enumerate(WEEKDAYS)]
    base = tiny_model("llama").requires_grad_(False)
    with pytest.raises(UsageError, match=r"fine-tuning diverged at step \d+ .* with lr 1e\+308: lower the learning rate") as e:
        finetune_lora(
            base, tiny_tokenizer(), examples, TrainConfig(lr=1e308, steps=5, checkpoint_every=1), checkpoint_dir=tmp_path / "ckpt"
        )
    diverged = int(str(e.value).split("step ")[1].split()[0])
    saved = sorted(int(p.name.split("-")[1]) for p in (tmp_path / "ckpt").glob("step-*"))
    assert all(step < diverged for step in saved), (saved, diverged)  # nothing from the diverged step on


def test_sae_training_that_diverges_stops_with_one_line(tmp_path, capsys, tiny_folder):
    code, text = cli(
        capsys,
        "run",
        "--model",
        str(tiny_folder),
        "--task",
        "polysemy_sae",
        "--output-dir",
        str(tmp_path / "r"),
        "--device",
        "cpu",
        "--task-arg",
        "lr=1e30",
        "--task-arg",
        "tokens=2048",
        "--task-arg",
        "batch_tokens=256",
        "--task-arg",
        "expansion=1",
        "--task-arg",
        "l1=0",
        "--task-arg",
        "multi_token=last",
    )
    assert code == 2 and "SAE training diverged at step" in text and "lower the learning rate" in text, text
    assert list((tmp_path / "r").iterdir()) == []  # no lock file, no empty model folder


def test_a_failed_run_leaves_no_lock_nor_empty_model_folder(tmp_path, capsys, tiny_folder):
    code, text = cli(
        capsys,
        "run",
        "--model",
        str(tiny_folder),
        "--task",
        "polysemy_sae",
        "--output-dir",
        str(tmp_path / "r"),
        "--device",
        "cpu",
        "--task-arg",
        "arch=topk",
        "--task-arg",
        "expansion=1",
        "--task-arg",
        "k=5000",
    )
    assert code == 2 and "k=5000 is more than the SAE's" in text, text
    assert list((tmp_path / "r").iterdir()) == []


# A run writes only what validate accepts ---------------------------------------------------------------


class NaNTask(Task):
    name = "nan_task"
    version = "1.0"
    description = "a task whose metric is NaN"

    def run(self, model, config, ctx) -> TaskResult:
        return TaskResult(metrics={"score": Metric(value=float("nan"), ci_low=0.0, ci_high=1.0, n=0)})


def test_a_run_refuses_to_write_a_results_file_validate_would_reject(tmp_path):
    model = from_hf(tiny_model("llama"), tiny_tokenizer())
    path = tmp_path / "tiny" / "nan_task-v1.0.json"
    spec = RunSpec(models=["tiny"], tasks=["nan_task"], output_dir=tmp_path, show_progress=False)
    with pytest.raises(UsageError, match="metrics.score.value") as e:
        run_task(model, NaNTask, NaNTask.Config(), path, spec)
    assert "\n" not in str(e.value) and not path.exists() and not list(tmp_path.rglob("*.json"))


# validate applies the leaderboard's rules and reads regular files only ------------------------------


def test_validate_reads_only_regular_files_and_never_hangs(tmp_path, capsys):
    fifo = tmp_path / "pipe.json"
    os.mkfifo(fifo)
    done: list[int] = []
    worker = threading.Thread(target=lambda: done.append(main(["validate", str(fifo)])), daemon=True)
    worker.start()
    worker.join(10)
    assert done == [1], "validate hung on a FIFO"
    assert "not a regular file" in capsys.readouterr().out


def test_validate_refuses_what_build_refuses(tmp_path):
    def problems(name: str, text: str | bytes) -> list[str]:
        path = tmp_path / name
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
        return validate_file(path)

    assert "nested more than 64 deep" in problems("deep.json", "[" * 100_000 + "]" * 100_000)[0]
    big = fake_results("org/m", 0.5).model_dump_json()
    assert "bytes" in problems("big.json", big[:-1] + ', "pad": "' + "x" * MAX_JSON_BYTES + '"}')[0]
    data = json.loads(big)
    data["metrics"]["accuracy"] = {"value": 1e300, "ci_low": 0, "ci_high": 1e300, "n": 5}
    assert any("not a finite number within" in p for p in problems("huge.json", json.dumps(data)))
    assert validate_file(tmp_path / "missing.json")[0].startswith("cannot read")


def test_validate_checks_a_comparisons_names_and_references(tmp_path):
    _, path = comparison_folder(tmp_path)
    good = json.loads(path.read_text())
    assert validate_file(path) == []
    cases = {
        "task.json": (dict(good, task=dict(good["task"], name="../x")), "cannot name"),
        "dup.json": (dict(good, models=[good["models"][0], good["models"][0]]), "more than once"),
        "unknown.json": (dict(good, differences=[dict(good["differences"][0], model_a="org/nobody")]), "org/nobody"),
    }
    for name, (data, message) in cases.items():
        (path.parent / name).write_text(json.dumps(data))
        found = validate_file(path.parent / name)
        assert any(message in p for p in found), (name, found)
