"""weekday_circle / month_circle: the spec's acceptance criteria on generators, scoring and mechanics."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from harness.api.context import RunContext
from harness.engine.intervene import Edit
from harness.engine.models import from_hf
from harness.engine.scoring import Scores
from harness.errors import UsageError
from probes.circle import CircularProbe
from tasks.circles.task import (
    MONTHS,
    NUMBER_WORDS,
    WEEKDAYS,
    MonthCircle,
    WeekdayCircle,
    answer_token_ids,
    behaviour_metrics,
    make_problems,
    name_positions,
    scrambled_order,
)
from tests.tiny_models import tiny_model, tiny_tokenizer


@pytest.mark.parametrize("names,n", [(WEEKDAYS, 49), (MONTHS, 144)])
@pytest.mark.parametrize("template", ["paper", "code"])
def test_generator(names, n, template):
    problems = make_problems(names, template)
    m = len(names)
    assert len(problems) == n and len({p.prompt for p in problems}) == n
    assert problems == make_problems(names, template)
    assert [(p.alpha, p.beta) for p in problems] == sorted((p.alpha, p.beta) for p in problems)
    for p in problems:
        assert p.gamma == (p.alpha + p.beta) % m
        assert names[p.alpha] in p.prompt and NUMBER_WORDS[p.beta - 1] in p.prompt and p.prompt.endswith(" is")
    first = problems[0].prompt
    if names is WEEKDAYS:
        assert first == (
            "Let's do some day of the week math. One day from Monday is"
            if template == "paper"
            else "Let's do some days of the week math. One day from Monday is"
        )
    else:
        assert first == (
            "Let's do some calendar math. One month from January is"
            if template == "paper"
            else "Let's do some calendar math. One months from January is"
        )


def fake_scores(favoured: np.ndarray, m: int) -> Scores:
    logits = torch.zeros(len(favoured), m)
    logits[torch.arange(len(favoured)), torch.as_tensor(favoured)] = 1.0
    return Scores(logits=logits, logprobs=logits.log_softmax(-1), top_token=torch.as_tensor(favoured) + 100)


def test_scoring_perfect_and_constant_answers():
    problems = make_problems(WEEKDAYS, "paper")
    gamma = np.array([p.gamma for p in problems])
    answers = list(range(100, 107))
    ctx = RunContext(model=None)
    _, correct, metrics = behaviour_metrics(ctx, fake_scores(gamma, 7), gamma, answers)
    assert metrics["accuracy"].value == 1.0 and correct.all() and metrics["accuracy_full_vocab"].value == 1.0
    _, _, metrics = behaviour_metrics(ctx, fake_scores(np.zeros(49, dtype=int), 7), gamma, answers)
    assert metrics["accuracy"].value == pytest.approx(1 / 7)


class FirstLetterTokenizer:
    """Gives each word the id of its first letter: Saturday and Sunday collide."""

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [ord(text.strip()[0])]}


def test_colliding_answer_tokens_are_refused():
    with pytest.raises(UsageError, match="same first token"):
        answer_token_ids(FirstLetterTokenizer(), WEEKDAYS)


@pytest.fixture(scope="module")
def tiny():
    return from_hf(tiny_model("llama"), tiny_tokenizer(), spec="tiny-llama")


def test_alpha_position_is_the_last_token_of_the_name(tiny):
    tok = tiny.tokenizer
    for problems in (make_problems(WEEKDAYS, "paper"), make_problems(MONTHS, "code")):
        positions = name_positions(tok, problems)
        for p, pos in zip(problems, positions):
            enc = tok(p.prompt, return_offsets_mapping=True)
            start, end = enc["offset_mapping"][pos]
            assert p.prompt[start:end] in p.name and end == p.prompt.rindex(p.name) + len(p.name)


def test_rotate_by_zero_leaves_logits_unchanged_and_edits_only_alpha(tiny):
    problems = make_problems(WEEKDAYS, "paper")
    prompts = [p.prompt for p in problems]
    alpha = np.array([p.alpha for p in problems])
    positions = name_positions(tiny.tokenizer, problems)
    ctx = RunContext(model=tiny, show_progress=False)
    answers = answer_token_ids(tiny.tokenizer, WEEKDAYS)
    H = ctx.collect(prompts, ["resid_post.1"], positions=positions)["resid_post.1"].numpy().astype(np.float64)
    probe = CircularProbe(7).fit(H, alpha)
    clean = ctx.score(prompts, answers).logits
    same = torch.as_tensor(probe.rotate(H, np.zeros(len(H))), dtype=torch.float32)
    with ctx.intervene([Edit("resid_post.1", "set", same, position=positions)]):
        rotated = ctx.score(prompts, answers).logits
    assert (rotated - clean).abs().max() < 1e-4
    moved = torch.as_tensor(probe.rotate(H, np.full(len(H), 2 * np.pi * 3 / 7)), dtype=torch.float32)
    full_before = ctx.collect(prompts, ["resid_post.1"], positions="all")["resid_post.1"]
    with ctx.intervene([Edit("resid_post.1", "set", moved, position=positions)]):
        full_after = ctx.collect(prompts, ["resid_post.1"], positions="all")["resid_post.1"]
        shifted = ctx.score(prompts, answers).logits
    assert (shifted - clean).abs().max() > 1e-4
    for i, pos in enumerate(positions):
        changed = (full_after[i] - full_before[i]).abs().amax(-1) > 1e-6
        assert changed.nonzero().flatten().tolist() == [pos]


def test_task_end_to_end_on_a_tiny_model(tiny, tmp_path):
    ctx = RunContext(model=tiny, artifacts_dir=tmp_path, show_progress=False, limit=14)
    config = WeekdayCircle.Config(offdist=True, irreducibility=True)
    result = WeekdayCircle().run(tiny, config, ctx)
    m = result.metrics
    assert m["accuracy"].n == 14 and m["intervention_success"].n == 14  # a problem with its 6 alpha' runs is one unit
    assert m["probe_r2"].n == 49  # probes always use every prompt
    assert m["angle_consistency"].n == 16 * 100  # the radii 0.5..2.0 of the (r, theta) grid, 100 angles each
    per_layer, best = result.details["per_layer"], result.details["best_layers"]
    for method in ("probe", "shuffled", "random_plane", "scrambled_order"):
        key = "probe_r2" + ("" if method == "probe" else f"_{method}")
        # each control at its own best layer, by the real probe's rule (highest held-out R^2, ties to the earliest)
        assert best[method] == int(np.argmax(per_layer[key]))
        assert m[key].value == pytest.approx(max(per_layer[key]), abs=1e-6)
        if method != "probe":
            assert m[f"probe_r2_minus_{method}"].value == pytest.approx(m["probe_r2"].value - m[key].value)
    assert any("their own best layer" in n for n in result.notes)
    assert {"circle.png", "probe_layers.png", "offdist.png"} <= set(ctx.artifacts)
    assert set(result.details["irreducibility"]) == {"separability_bits", "mixture_index"}
    assert len(result.details["per_layer"]["probe_r2"]) == tiny.n_layers
    assert result.details["intervention_layer"] < tiny.n_layers // 2 + 1
    assert "accuracy" in result.reference.metrics["mistralai/Mistral-7B-v0.1"]


def test_layer_option_is_checked_against_depth(tiny):
    with pytest.raises(UsageError, match="past the model's depth"):
        MonthCircle().run(tiny, MonthCircle.Config(layer=7), RunContext(model=tiny, show_progress=False))


@pytest.mark.parametrize("m", [7, 12])
def test_scrambled_order_is_never_a_rotation_or_reflection(m):
    alpha = np.repeat(np.arange(m), m)
    for seed in range(50):
        labels = scrambled_order(alpha, m, np.random.default_rng(seed))
        order = labels[::m]
        assert sorted(order) == list(range(m))
        steps = {(int(order[(i + 1) % m]) - int(order[i])) % m for i in range(m)}
        assert steps != {1} and steps != {m - 1}  # neither the cycle nor its mirror, from any start
    assert np.array_equal(
        scrambled_order(alpha, m, np.random.default_rng(1)), scrambled_order(alpha, m, np.random.default_rng(1))
    )


@pytest.mark.parametrize("task", [WeekdayCircle, MonthCircle])
def test_a_random_weight_model_earns_neither_the_representation_nor_the_causal_facet(tiny, tmp_path, task):
    """The null model of the finding: random weights know no calendar, so only chance can make a facet hold."""
    from dataclasses import asdict

    from harness.report.findings import HOLDS, parse_finding, verdict

    ctx = RunContext(model=tiny, artifacts_dir=tmp_path, show_progress=False, bootstrap=300)
    result = task().run(tiny, task.Config(intervention_problems=24), ctx)
    cell = verdict(parse_finding(asdict(task.finding)), result.metrics)
    facets = {f.kind: f for f in cell.facets}
    assert list(facets) == ["behaviour", "representation", "causal"]
    assert facets["representation"].verdict != HOLDS and facets["causal"].verdict != HOLDS, cell.reason
    assert cell.verdict != HOLDS
    gap = result.metrics["intervention_success_minus_random_plane"]
    assert gap.n == 24 and gap.value == pytest.approx(
        result.metrics["intervention_success"].value - result.metrics["intervention_success_random_plane"].value
    )
