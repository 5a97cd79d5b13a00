"""multiplication_digits on the two bundled models, small sizes (run with -m slow; about a minute each on 2 cores)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from harness.api.context import RunContext
from harness.engine.models import load_model
from tasks.multiplication import MultiplicationDigits, forced_context, make_problems, render_prompt, resolve_mode

MODELS = ["smollm2-135m", pytest.param("gemma3-270m", marks=pytest.mark.extended)]


@pytest.fixture(scope="module", params=MODELS)
def model(request):
    return load_model(request.param)


@pytest.mark.slow
def test_real_tokenizers_split_digits_and_teacher_forcing_matches_a_plain_forward(model):
    tok = model.tokenizer
    mode, ids = resolve_mode(tok, "auto")
    assert mode == "teacher_forced" and len(set(ids)) == 10
    assert resolve_mode(tok, "spaced")[0] == "spaced"
    problems = make_problems(4, 3, 6, np.random.default_rng(0))
    prompts = [render_prompt("{a}*{b}=", "", p.a, p.b, False) for p in problems]
    contexts = [forced_context(tok, q, p.product, len(p.product) - 1, False, ids) for q, p in zip(prompts, problems)]
    scores = RunContext(model=model, show_progress=False).score(contexts, ids)
    for i, (q, p) in enumerate(zip(prompts, problems)):
        full = torch.tensor([tok(q + p.product)["input_ids"]])
        with torch.no_grad():
            expected = model.hf(full).logits[0, -2, ids].float()
        assert torch.allclose(scores.logits[i], expected, atol=1e-3, rtol=1e-4)


@pytest.mark.slow
def test_small_run_on_a_bundled_model(model, tmp_path):
    last = model.n_layers - 1
    config = MultiplicationDigits.Config(cells=["2x2", "4x4"], n_per_cell=30, probe_n=150, probe_layers=[0, last // 2, last])
    ctx = RunContext(model=model, show_progress=False, artifacts_dir=tmp_path, log_samples=True)
    result = MultiplicationDigits().run(model, config, ctx)
    m, details = result.metrics, result.details
    assert details["digit_scoring"] == "teacher_forced"
    assert m["first_digit_acc@4x4"].n == 30 and m["probe_last_digit_acc"].n == 150
    best = details["probe"]["best_layer"]  # every probe, control or not, at its own best layer
    for name, key in (
        ("last_digit", "probe_last_digit_acc"),
        ("shuffled", "probe_shuffled_acc"),
        ("b_last_digit", "probe_b_last_digit_acc"),
    ):
        assert m[key].value == pytest.approx(max(details["probe"][f"{name}_acc_by_layer"]), abs=1e-6)
        assert details["probe"][f"{name}_acc_by_layer"][details["probe"]["layers"].index(best[name])] == pytest.approx(
            m[key].value, abs=1e-6
        )
    # A digit with more than half the whole vocabulary's probability is the argmax over the ten digits.
    for conf_key, acc_key in (
        ("first_digit_conf", "first_digit_acc"),
        ("last_digit_conf_given_prefix", "last_digit_acc_given_prefix"),
    ):
        conf = np.array([s[conf_key] for s in ctx.samples])
        acc = np.array([s[acc_key] for s in ctx.samples], dtype=bool)
        assert len(conf) == 60 and np.all(acc[conf > 0.5]), conf_key
    # The controls behave as controls: b's units digit is the token just before '=', so the probe at '=' reads it
    # far above its chance (~0.13); shuffled labels stay at chance level.
    assert m["probe_b_last_digit_acc"].ci_low > 0.5
    assert m["probe_shuffled_acc"].value <= m["chance_probe_last_digit"].value + 0.12
    assert len(details["probe"]["probe_last_digit_acc_by_layer"]) == 3
    assert {"heatmap.png", "probe_layers.png"} <= set(ctx.artifacts)
