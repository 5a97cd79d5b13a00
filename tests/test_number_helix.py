"""number_helix: generator, scoring, mechanics on a tiny random model, the results file."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from harness.context import RunContext
from harness.errors import UsageError
from harness.intervene import Edit
from harness.models import from_hf
from harness.runner import RunSpec, run_task
from harness.task import parse_config
from probes.helix import BasisFit, basis_functions
from tasks.number_helix import (
    PATCH_METHODS, TEMPLATES, NumberHelix, Problem, Triple, a_positions, all_problems, make_problems, parse_answer,
    resolve_template,
)
from tests.tiny_models import tiny_model, tiny_tokenizer

GPTJ = TEMPLATES["gptj"]


def test_generator_grid_and_subsamples():
    grid = all_problems(GPTJ)
    assert len(grid) == 10000 and len({(p.a, p.b) for p in grid}) == 10000
    assert [(p.a, p.b) for p in grid] == sorted((p.a, p.b) for p in grid)  # a-major
    assert grid[57 * 100 + 23].prompt == "Output ONLY a number. 57+23=" and grid[57 * 100 + 23].answer == 80
    assert all_problems(TEMPLATES["llama"])[0].prompt == "The following is a correct addition problem.\n0+0="
    one = make_problems(GPTJ, 1000, np.random.default_rng([0, 0]))
    assert len(one) == 1000 and len({(p.a, p.b) for p in one}) == 1000
    assert [(p.a, p.b) for p in one] == sorted((p.a, p.b) for p in one)
    assert one == make_problems(GPTJ, 1000, np.random.default_rng([0, 0]))
    assert one != make_problems(GPTJ, 1000, np.random.default_rng([1, 0]))
    assert make_problems(GPTJ, 10000, np.random.default_rng(0)) == grid


def test_templates_resolve_per_family():
    assert resolve_template("auto", "meta-llama/Llama-3.1-8B") == TEMPLATES["llama"]
    assert resolve_template("auto", "EleutherAI/gpt-j-6b") == GPTJ
    assert resolve_template("auto", "gemma3-270m") == GPTJ
    assert resolve_template("{a} plus {b} is", "x") == "{a} plus {b} is"


@pytest.mark.parametrize("text,value", [("57", 57), (" 57\n", 57), ("57.\n\n", 57), ("57+3", 57), ("-4", -4)])
def test_parse_answer(text, value):
    assert parse_answer(text) == value


@pytest.mark.parametrize("text", ["", "-", " \n", "x57", "57.5"])
def test_parse_answer_rejects(text):
    assert parse_answer(text) is None


def test_spaced_digits_do_not_score():
    assert parse_answer("5 7") != 57


def test_config_validation():
    for bad in (["n_problems=0"], ["template=no placeholders"], ["template={b}+{a}="], ["periods=0,10"], ["n_pairs=0"], ["pca_dim=-1"]):
        with pytest.raises(UsageError):
            parse_config(NumberHelix, bad)
    config = parse_config(NumberHelix, ["n_problems=500", "layer=3", "template=llama", "correct_only=false"])
    assert (config.n_problems, config.layer, config.template, config.correct_only) == (500, 3, "llama", False)


class SumStub:
    """Stands in for the RunContext of a model that always emits the right sum (and one that never does)."""

    def __init__(self, wrong: bool = False) -> None:
        self.wrong = wrong

    def generate(self, prompts, max_new_tokens, desc=""):
        out = []
        for p in prompts:
            a, b = p.rsplit(" ", 1)[-1].rstrip("=").split("+")
            out.append(f" {int(a) + int(b) + (10 if self.wrong else 0)}\n\n")
        return out


def test_a_model_that_emits_the_sum_scores_one():
    from harness.stats import metric

    problems = make_problems(GPTJ, 300, np.random.default_rng(0))
    for stub, expected in ((SumStub(), 1.0), (SumStub(wrong=True), 0.0)):
        texts = stub.generate([p.prompt for p in problems], 4)
        correct = np.array([parse_answer(t) == p.answer for t, p in zip(texts, problems)])
        assert metric(correct.astype(float)).value == expected


@pytest.fixture(scope="module")
def tiny():
    return from_hf(tiny_model("llama"), tiny_tokenizer(), spec="tiny-llama")


def test_a_position_is_the_last_token_of_a(tiny):
    tok = tiny.tokenizer
    problems = [Problem(a, b, GPTJ.format(a=a, b=b)) for a, b in [(0, 5), (7, 99), (57, 23), (99, 0), (10, 10)]]
    for p, pos in zip(problems, a_positions(tok, problems, GPTJ)):
        start, end = tok(p.prompt, return_offsets_mapping=True)["offset_mapping"][pos]
        a_end = p.prompt.index("+")
        assert end == a_end and p.prompt[start:end] == str(p.a)[-(end - start):]


def helix_states(tiny, layer):
    ctx = RunContext(model=tiny, show_progress=False)
    problems = [Problem(a, 0, GPTJ.format(a=a, b=0)) for a in range(100)]
    pos = a_positions(tiny.tokenizer, problems, GPTJ)
    H = ctx.collect([p.prompt for p in problems], [f"resid_post.{layer}"], positions=pos)[f"resid_post.{layer}"]
    return ctx, problems, pos, H.numpy().astype(np.float64)


def test_swap_to_same_a_is_a_no_op_and_edits_only_the_a_token(tiny):
    ctx, problems, pos, H = helix_states(tiny, 1)
    a = np.arange(100)
    fit = BasisFit(basis_functions()["helix"], 100).fit(H, a)
    prompts = [p.prompt for p in problems]
    targets = list(range(10))
    clean = ctx.score(prompts, targets).logits
    same = torch.as_tensor(H + fit.swap_delta(a, a), dtype=torch.float32)
    with ctx.intervene([Edit("resid_post.1", "set", same, position=pos)]):
        swapped = ctx.score(prompts, targets).logits
    assert (swapped - clean).abs().max() < 1e-4
    moved = torch.as_tensor(H + fit.swap_delta(a, (a + 37) % 100), dtype=torch.float32)
    before = ctx.collect(prompts[:20], ["resid_post.1"], positions="all")["resid_post.1"]
    with ctx.intervene([Edit("resid_post.1", "set", moved[:20], position=pos[:20])]):
        after = ctx.collect(prompts[:20], ["resid_post.1"], positions="all")["resid_post.1"]
    with ctx.intervene([Edit("resid_post.1", "set", moved, position=pos)]):
        shifted = ctx.score(prompts, targets).logits
    assert (shifted - clean).abs().max() > 1e-4
    for i, p in enumerate(pos[:20]):
        changed = (after[i] - before[i]).abs().amax(-1) > 1e-6
        assert changed.nonzero().flatten().tolist() == [p]


def test_layer_patch_with_same_a_has_zero_ld(tiny):
    ctx, _, _, _ = helix_states(tiny, 0)
    X = {L: helix_states(tiny, L)[3] for L in range(tiny.n_layers)}
    a, shuffled = np.arange(100), np.random.default_rng(0).permutation(100)
    bases = basis_functions()
    fits = {L: NumberHelix.fit_layer(X[L], a, shuffled, bases, 100, 4) for L in X}
    triples = [Triple(a=v, a2=v2, b=b) for v, v2, b in [(12, 12, 3), (57, 57, 23), (40, 40, 9), (57, 43, 23)]]
    details = {"pairs": {}}
    ld = NumberHelix().patch(ctx, tiny, X, fits, triples, GPTJ, tiny.tokenizer, details)
    assert details["pairs"]["n_patched"] == 4
    for L in X:
        assert set(ld[L]) == set(PATCH_METHODS)
        np.testing.assert_allclose(ld[L]["layer_patch"][:3], 0, atol=1e-4)  # the clean state of a = a'
        if L < tiny.n_layers - 1:  # the last block's output at the a token never reaches the final logits
            assert np.abs(ld[L]["helix"]).max() > 1e-4  # a fit is not the state: the patch moves something
    assert np.abs(ld[0]["layer_patch"][3]) > 1e-4  # patching 57 into 43 changes the answer's logit


def test_layer_past_depth_is_a_usage_error(tiny):
    with pytest.raises(UsageError, match="past the model's depth"):
        NumberHelix().run(tiny, NumberHelix.Config(layer=3, n_problems=10), RunContext(model=tiny, show_progress=False))


SMALL = dict(n_problems=120, n_pairs=8, correct_only=False, max_new_tokens=3)


def test_task_end_to_end_on_a_tiny_model(tiny, tmp_path):
    ctx = RunContext(model=tiny, artifacts_dir=tmp_path, show_progress=False)
    result = NumberHelix().run(tiny, NumberHelix.Config(**SMALL), ctx)
    m, d = result.metrics, result.details
    assert m["accuracy"].n == 120
    for k in ("helix", "linear", "circle", "poly", "helix_shuffled", "pca9_recon"):
        assert m[f"{k}_r2_heldout"].n == 100 and len(d["per_layer_r2_heldout"][k]) == tiny.n_layers
        assert m[f"{k}_r2_heldout"].ci_low <= m[f"{k}_r2_heldout"].ci_high
    for method in PATCH_METHODS:
        assert m[f"patch_ld_{method}"].n == d["pairs"]["n_patched"] and len(d["per_layer_patch_ld"][method]) == tiny.n_layers
    for k in ("swap_success", "swap_to_original", "swap_success_random_subspace", "swap_success_helix_shuffled"):
        assert m[k].n == 8 and 0 <= m[k].value <= 1
    assert d["swap_layer"] == 0 and d["swap_subspace_rank"] == 8  # first third of 3 layers
    assert d["best_fit_layer"] in range(tiny.n_layers)
    assert {"helix.png", "helix_layers.png"} <= set(ctx.artifacts)
    assert result.reference.metrics["EleutherAI/gpt-j-6b"]["patch_ld_helix"] > 0
    assert "swap_success" in result.reference.notes


def test_correct_only_on_a_random_model_finds_no_pairs(tiny):
    result = NumberHelix().run(tiny, NumberHelix.Config(n_problems=60, n_pairs=5), RunContext(model=tiny, show_progress=False))
    assert result.metrics["accuracy"].value == 0.0
    assert result.details["pairs"]["n"] == 0 and result.details["pairs"]["tries"] <= 100
    assert "patch_ld_helix" not in result.metrics and any("no (a, a', b) triples" in n for n in result.notes)


def test_results_file_is_complete_and_deterministic(tiny, tmp_path):
    config = NumberHelix.Config(**SMALL)
    texts = []
    for i in range(2):
        path = tmp_path / f"r{i}" / "number_helix.json"
        run_task(tiny, NumberHelix, config, path, RunSpec(models=["tiny"], tasks=["number_helix"], output_dir=tmp_path, show_progress=False))
        data = json.loads(path.read_text())
        for k in ("timing", "created_at"):
            data.pop(k)
        texts.append(json.dumps(data, sort_keys=True))
    data = json.loads(texts[0])
    assert texts[0] == texts[1]
    assert data["reference"]["source"].startswith("Kantamneni") and data["task"]["name"] == "number_helix"
    for name, m in data["metrics"].items():
        assert set(m) == {"value", "ci_low", "ci_high", "n", "higher_is_better"} and m["n"] > 0, name
    other_seed = RunContext(model=tiny, seed=1, show_progress=False)
    r = NumberHelix().run(tiny, config, other_seed)
    assert r.details["pairs"] != data["details"]["pairs"] or r.metrics["helix_r2_heldout"].value != data["metrics"]["helix_r2_heldout"]["value"]
