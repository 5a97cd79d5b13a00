"""incontext_unlearning on the bundled smollm2-135m (CPU): prompt only end to end, and short LoRA fine-tunes."""

from __future__ import annotations

import hashlib
import json

import pytest

from harness.api.context import RunContext
from harness.engine.models import load_model
from harness.results.validate import validate_file
from harness.run.runner import RunSpec, run_task
from tasks.incontext_unlearning import IncontextUnlearning
from tasks.incontext_unlearning.data import load_sample

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smollm():
    return load_model("smollm2-135m")


def weights_hash(model) -> str:
    h = hashlib.sha256()
    for name, tensor in sorted(model.hf.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().numpy().tobytes())
    return h.hexdigest()


def test_prompt_only_end_to_end_reports_the_baseline(smollm, tmp_path):
    """Criterion 8: completes on CPU with the sample and reports baseline_retain_acc (no threshold)."""
    path = tmp_path / "incontext_unlearning.json"
    results = run_task(
        smollm,
        IncontextUnlearning,
        IncontextUnlearning.resolve_config(IncontextUnlearning.Config(), "cpu"),
        path,
        RunSpec(models=["smollm2-135m"], tasks=["incontext_unlearning"]),
    )
    assert validate_file(path) == []
    metrics = results.metrics
    authors = {item.subject for item in load_sample().eval}  # the 20 eval items' authors: the resampled units
    assert len(load_sample().eval) == 20 and metrics["baseline_retain_acc"].n == metrics["forget_acc"].n == len(authors) == 5
    curves = results.details["lens_curve"]
    assert len(curves["forget"]["answer"]["prob"]) == smollm.n_layers == 30
    assert (tmp_path / "incontext_unlearning" / "lens_forget.png").exists()
    print(json.dumps({k: m.model_dump() for k, m in metrics.items()}, indent=1))


@pytest.mark.parametrize("optimizer", [pytest.param("adamw", marks=pytest.mark.extended), "adopt"])
def test_short_finetune_loss_falls_and_the_saved_adapter_gives_the_same_metrics(smollm, tmp_path, optimizer):
    before = weights_hash(smollm)
    ctx = RunContext(model=smollm, artifacts_dir=tmp_path / "train", show_progress=False, limit=6)
    config = IncontextUnlearning.resolve_config(
        IncontextUnlearning.Config(mode="finetune", optimizer=optimizer, steps=24, lr=1e-3), "cpu"
    )
    trained = IncontextUnlearning().run(smollm, config, ctx)
    training = trained.details["training"]
    assert training["steps"] == 24 and training["loss_last5"] < training["loss_first5"]
    assert weights_hash(smollm) == before
    adapter = tmp_path / "train" / "adapter"
    ctx = RunContext(model=smollm, artifacts_dir=tmp_path / "eval", show_progress=False, limit=6)
    reloaded = IncontextUnlearning().run(
        smollm, IncontextUnlearning.resolve_config(IncontextUnlearning.Config(adapter=str(adapter)), "cpu"), ctx
    )
    assert reloaded.details["replies"] == trained.details["replies"]
    for key, metric in trained.metrics.items():
        assert reloaded.metrics[key].model_dump() == pytest.approx(metric.model_dump(), abs=1e-9), key
    assert weights_hash(smollm) == before
    print(
        optimizer,
        training["loss_first5"],
        training["loss_last5"],
        training["seconds"],
        json.dumps({k: [round(m.value, 3), round(m.ci_low, 3), round(m.ci_high, 3)] for k, m in trained.metrics.items()}),
    )
    curves = trained.details["lens_curve"]
    for group in ("forget", "retain"):
        for token in ("answer", "forgot"):
            print(group, token, [round(p, 4) for p in curves[group][token]["prob"]], curves[group][token]["top1_rate"])
    print(trained.details["replies"])
