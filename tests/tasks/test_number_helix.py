"""number_helix: generator, scoring, mechanics on a tiny random model, the results file."""

from __future__ import annotations

import contextlib
import json
import re
from typing import Callable

import numpy as np
import pytest
import torch

from harness.api.context import RunContext
from harness.api.task import parse_config
from harness.engine.intervene import Edit
from harness.engine.models import from_hf
from harness.errors import UsageError
from harness.run.runner import RunSpec, plan_tasks, result_path, run_task
from probes.helix import BasisFit, basis_functions
from tasks.number_helix.task import (
    PATCH_METHODS,
    TEMPLATES,
    NumberHelix,
    Problem,
    Triple,
    a_positions,
    all_problems,
    make_problems,
    parse_answer,
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


@pytest.mark.parametrize("text", ["5 7", " 5 7\n", "57 3", "5\t7"])
def test_digits_split_by_spaces_are_no_answer(text):
    assert parse_answer(text) is None  # not 5: a model spelling 57 digit by digit did not answer 5


def test_config_validation():
    for bad in (
        ["n_problems=0"],
        ["template=no placeholders"],
        ["template={b}+{a}="],
        ["periods=0,10"],
        ["n_pairs=0"],
        ["pca_dim=-1"],
        ["swap_op=move"],
    ):
        with pytest.raises(UsageError):
            parse_config(NumberHelix, bad)
    config = parse_config(NumberHelix, ["n_problems=500", "layer=3", "template=llama", "correct_only=false", "swap_op=add"])
    assert (config.n_problems, config.layer, config.template, config.correct_only, config.swap_op) == (
        500,
        3,
        "llama",
        False,
        "add",
    )
    assert NumberHelix.Config().swap_op == "replace"  # the paper's swap is the default


@pytest.mark.parametrize(
    "template,message",
    [
        ("{a}+{b}={c}", "unknown field(s) {c}"),
        ("{a}+{b}=}", "literal brace"),
        ("{a}+{a}=", "missing {b}"),
    ],
)
def test_template_errors_are_one_line(template, message):
    with pytest.raises(UsageError) as err:
        parse_config(NumberHelix, [f"template={template}"])
    assert message in str(err.value) and "\n" not in str(err.value)


def test_n_problems_is_resolved_and_hashed_per_device(tmp_path):
    cpu = NumberHelix.resolve_config(NumberHelix.Config(), "cpu")
    gpu = NumberHelix.resolve_config(NumberHelix.Config(), "cuda")
    assert (cpu.n_problems, gpu.n_problems) == (1000, 10000)
    assert NumberHelix.resolve_config(NumberHelix.Config(n_problems=7), "cuda").n_problems == 7
    spec = RunSpec(models=["tiny"], tasks=["number_helix"], output_dir=tmp_path)
    [(task, planned)] = plan_tasks(spec)
    assert planned.n_problems == 1000  # the tests run on CPU: the runner records the number it runs
    assert result_path(tmp_path, "tiny", task, cpu, spec) != result_path(tmp_path, "tiny", task, gpu, spec)


@pytest.fixture(scope="module")
def tiny():
    return from_hf(tiny_model("llama"), tiny_tokenizer(), spec="tiny-llama")


@contextlib.contextmanager
def answering(model, answer: Callable[[int, int], str]):
    """Make the tiny model's greedy decoding write answer(a, b) after a prompt ending in 'a+b='.

    Hooks on the Hugging Face module rewrite the last position's logits, so everything else
    is real: the task's prompts, the engine's batched `generate`, decoding, parsing, scoring.
    """
    tok = model.tokenizer
    state: dict = {}

    def before(module, args, kwargs):
        ids = kwargs["input_ids"] if kwargs.get("input_ids") is not None else args[0]
        if ids.shape[1] > 1:  # a new batch (decoding steps feed one token at a time)
            state["prompt"], state["new"] = ids, 0
        else:
            state["new"] += 1

    def after(module, args, kwargs, output):
        for r, row in enumerate(state["prompt"]):
            m = re.search(r"(\d+)\+(\d+)=$", tok.decode(row, skip_special_tokens=True))
            if m:
                target = tok(answer(int(m[1]), int(m[2])), add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
                output.logits[r, -1] = -1e4
                output.logits[r, -1, target[min(state["new"], len(target) - 1)]] = 1e4
        return output

    handles = [
        model.hf.register_forward_pre_hook(before, with_kwargs=True),
        model.hf.register_forward_hook(after, with_kwargs=True),
    ]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


@pytest.mark.parametrize(
    "answer,accuracy,unparsed",
    [
        (lambda a, b: f" {a + b}\n", 1.0, 0),
        (lambda a, b: f" {a + b + 10}\n", 0.0, 0),
        (lambda a, b: " " + " ".join(str(a + b)), None, "two-digit"),  # digits split by spaces: no answer
    ],
)
def test_the_task_scores_what_the_model_generates(tiny, answer, accuracy, unparsed):
    config = NumberHelix.Config(n_problems=40, patching=False, swap=False, max_new_tokens=6)
    with answering(tiny, answer):
        result = NumberHelix().run(tiny, config, RunContext(model=tiny, show_progress=False))
    problems = make_problems(GPTJ, 40, RunContext(model=tiny).rng(0))
    two_digit = sum(p.answer >= 10 for p in problems)
    if unparsed == "two-digit":
        accuracy, unparsed = (40 - two_digit) / 40, two_digit
        assert any(f"{two_digit} of 40 generations have no leading integer" in n for n in result.notes)
    assert result.metrics["accuracy"].value == accuracy and result.metrics["accuracy"].n == 40
    assert result.details["unparsed_answers"] == unparsed


def test_a_position_is_the_last_token_of_a(tiny):
    tok = tiny.tokenizer
    problems = [Problem(a, b, GPTJ.format(a=a, b=b)) for a, b in [(0, 5), (7, 99), (57, 23), (99, 0), (10, 10)]]
    for p, pos in zip(problems, a_positions(tok, problems, GPTJ)):
        start, end = tok(p.prompt, return_offsets_mapping=True)["offset_mapping"][pos]
        a_end = p.prompt.index("+")
        assert end == a_end and p.prompt[start:end] == str(p.a)[-(end - start) :]


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
    same = torch.as_tensor(fit.swap(H, a, a, op="add"), dtype=torch.float32)
    with ctx.intervene([Edit("resid_post.1", "set", same, position=pos)]):
        swapped = ctx.score(prompts, targets).logits
    assert (swapped - clean).abs().max() < 1e-4
    moved = torch.as_tensor(fit.swap(H, a, (a + 37) % 100), dtype=torch.float32)
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
        per_layer = d["per_layer_r2_heldout"][k]
        assert m[f"{k}_r2_heldout"].n == 100 and len(per_layer) == tiny.n_layers
        # every fit and baseline at its own best layer, by the one rule (highest, ties to the earliest)
        assert d["best_fit_layers"][k] == int(np.argmax(per_layer))
        assert m[f"{k}_r2_heldout"].value == pytest.approx(max(per_layer), abs=1e-6)
    for gap, baseline in (("helix_minus_linear", "linear"), ("helix_minus_shuffled", "helix_shuffled")):
        assert m[gap].value == pytest.approx(m["helix_r2_heldout"].value - m[f"{baseline}_r2_heldout"].value)
    for method in PATCH_METHODS:
        per_layer = d["per_layer_patch_ld"][method]
        assert m[f"patch_ld_{method}"].n == d["pairs"]["n_patched"] and len(per_layer) == tiny.n_layers
        assert m[f"patch_ld_{method}"].value == pytest.approx(max(per_layer), abs=1e-5)
    assert any("patch_ld_* is the maximum over layers" in n for n in result.notes)
    for k in ("swap_success", "swap_to_original", "swap_success_random_subspace", "swap_success_helix_shuffled"):
        assert m[k].n == 8
    assert d["swap_layer"] == 0 and d["swap_subspace_rank"] == 8 and d["swap_op"] == "replace"  # first third of 3 layers
    assert d["best_fit_layer"] in range(tiny.n_layers)
    assert {"helix.png", "helix_layers.png"} <= set(ctx.artifacts)
    assert result.reference.metrics["EleutherAI/gpt-j-6b"]["patch_ld_helix"] > 0
    assert "swap_success" in result.reference.notes


def test_correct_only_on_a_random_model_finds_no_pairs(tiny):
    result = NumberHelix().run(tiny, NumberHelix.Config(n_problems=60, n_pairs=5), RunContext(model=tiny, show_progress=False))
    assert result.metrics["accuracy"].value == 0.0
    assert result.details["pairs"]["n"] == 0 and result.details["pairs"]["tries"] <= 100
    assert "patch_ld_helix" not in result.metrics and any("no (a, a', b) triples" in n for n in result.notes)
    # the causal facet has no unit to stand on: "too few units" (n = 0), not "missing metric"
    from dataclasses import asdict

    from harness.report.findings import TOO_FEW, parse_finding, verdict

    assert "correctly" in result.unmeasured["swap_success_minus_random_subspace"] and "patch_ld_helix" in result.unmeasured
    cell = verdict(parse_finding(asdict(NumberHelix.finding)), result.metrics, result.unmeasured)
    assert next(f for f in cell.facets if f.kind == "causal").verdict == TOO_FEW


def test_results_file_is_complete_and_deterministic(tiny, tmp_path):
    config = NumberHelix.Config(**SMALL)
    texts = []
    for i in range(2):
        path = tmp_path / f"r{i}" / "number_helix.json"
        run_task(
            tiny,
            NumberHelix,
            config,
            path,
            RunSpec(models=["tiny"], tasks=["number_helix"], output_dir=tmp_path, show_progress=False),
        )
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
    assert (
        r.details["pairs"] != data["details"]["pairs"]
        or r.metrics["helix_r2_heldout"].value != data["metrics"]["helix_r2_heldout"]["value"]
    )


def test_swap_op_add_is_a_named_departure(tiny):
    def run(op):
        config = NumberHelix.Config(n_problems=60, n_pairs=4, correct_only=False, patching=False, max_new_tokens=2, swap_op=op)
        return NumberHelix().run(tiny, config, RunContext(model=tiny, show_progress=False))

    replace, add = run("replace"), run("add")
    assert not any("swap_op=add" in n for n in replace.notes) and any("swap_op=add" in n for n in add.notes)
    assert (replace.details["swap_op"], add.details["swap_op"]) == ("replace", "add")
    # the same triples, another edit: replace also removes the in-subspace residual of each state
    assert replace.details["pairs"] == add.details["pairs"]
    assert replace.details["swap_displacement_norm"] != pytest.approx(add.details["swap_displacement_norm"], rel=1e-3)


def test_a_random_weight_model_earns_neither_the_representation_nor_the_causal_facet(tiny):
    """Digits split: the random model's a-state is a function of its digit tokens, which the helix's
    T = 2, 5, 10 columns fit, so the helix beats a line on it; it must not beat digit relabellings."""
    from dataclasses import asdict

    from harness.report.findings import HOLDS, parse_finding, verdict

    config = NumberHelix.Config(n_problems=120, n_pairs=30, correct_only=False, max_new_tokens=3)
    result = NumberHelix().run(tiny, config, RunContext(model=tiny, show_progress=False, bootstrap=300))
    m = result.metrics
    assert m["helix_minus_linear"].ci_low > 0  # the old finding's test: a null model earned it
    cell = verdict(parse_finding(asdict(NumberHelix.finding)), m)
    facets = {f.kind: f for f in cell.facets}
    assert list(facets) == ["behaviour", "representation", "causal"] and cell.verdict != HOLDS
    assert facets["representation"].verdict != HOLDS and facets["causal"].verdict != HOLDS, cell.reason
    assert result.details["scrambled_digits"]["n"] == 50
