"""`harness run --dry-run` sizes every task from a model's config alone, and bench_scale's drivers run."""

from __future__ import annotations

import pytest
from transformers import Gemma3Config, GPT2Config, MistralConfig

from harness.api.registry import all_tasks
from harness.api.task import ModelShape
from harness.run.cli import main
from harness.run.estimate import REFERENCE, analysis_seconds, shape_of


@pytest.fixture
def mistral_config(tmp_path):
    """Mistral-7B-v0.1's config (transformers' defaults are its numbers), with no weights beside it."""
    folder = tmp_path / "mistral-7b-config"
    MistralConfig().save_pretrained(folder)
    return folder


def test_the_shape_comes_from_any_architectures_config():
    assert shape_of(MistralConfig()) == ModelShape(32, 4096, 14336, 32000, shape_of(MistralConfig()).n_params)
    assert 6.5e9 < shape_of(MistralConfig()).n_params < 7.5e9  # Mistral-7B: 7.24B
    gpt2 = shape_of(GPT2Config())  # n_layer, n_embd, no n_inner: 4 x width
    assert (gpt2.n_layers, gpt2.d_model, gpt2.d_mlp, gpt2.vocab) == (12, 768, 3072, 50257)
    gemma = shape_of(Gemma3Config())  # multimodal: the text part
    assert gemma.d_model == Gemma3Config().text_config.hidden_size


def test_analysis_estimates_grow_with_width_and_depth():
    small, big = REFERENCE, ModelShape(80, 8192, 28672, 128256)
    for task in all_tasks():
        if task.startswith(("weekday", "month", "number", "multiplication", "language")):
            assert (
                analysis_seconds(task, big)
                > analysis_seconds(task, small)
                > analysis_seconds(task, ModelShape(4, 512, 1024, 1000))
            )


def test_dry_run_sizes_every_task_without_weights(mistral_config, capsys):
    assert main(["run", "--model", str(mistral_config), "--task", "all", "--dry-run", "--device", "cuda"]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[1]: line for line in out.splitlines() if line.startswith(str(mistral_config))}
    assert set(lines) == set(all_tasks())
    # 480 scoring sentences x 32 layers x 14,336 MLP neurons, one float32 mean each
    assert "880.8MB" in lines["language_neurons"]
    # on a GPU the SAE trains on 2M tokens (the config is resolved for the device asked for)
    assert "2.0M" in lines["polysemy_sae"].split()[2]
    assert "Nothing was loaded or run" in out


def test_dry_run_follows_the_preset_and_the_task_args(mistral_config, capsys):
    main(["run", "--model", str(mistral_config), "--task", "multiplication_digits", "--dry-run", "--device", "cuda"])
    full = capsys.readouterr().out
    main(
        [
            "run",
            "--model",
            str(mistral_config),
            "--task",
            "multiplication_digits",
            "--dry-run",
            "--device",
            "cuda",
            "--task-arg",
            "probe_n=200",
        ]
    )
    fewer = capsys.readouterr().out
    held = lambda out: next(line for line in out.splitlines() if "multiplication_digits" in line).split()[4]  # noqa: E731
    assert held(full) == "1.0GB" and held(fewer) == "104.9MB"  # 2000 vs 200 problems x 32 layers x 4096 x 4 bytes


def test_dry_run_without_a_config_is_one_line(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["run", "--model", str(tmp_path / "empty"), "--task", "all", "--dry-run"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "config.json" in err[0]


@pytest.mark.parametrize(
    "task",
    [
        "weekday_circle",
        "number_helix",
        "multiplication_digits",
        "language_neurons",
        "polysemy_sae",
        "incontext_unlearning",
        "scrambled_text",
        "code_vs_language",
    ],
)
def test_bench_scale_drives_each_tasks_analysis_on_a_small_shape(task):
    from benchmarks.bench_scale import Shape, measure_alone

    row = measure_alone(task, Shape(2, 64, 128, 500), "quick")
    assert row["seconds"] > 0 and row["peak_mib"] >= 0 and row["held_mib"] >= 0
