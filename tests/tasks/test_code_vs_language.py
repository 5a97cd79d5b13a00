"""code_vs_language on tiny random models: the spec's acceptance criteria 1-8 (9 is the slow test).

The data side (criteria 1, 2, 4, 5 in depth: entailment, simulation, parse rule, loaders) is
tested in tests/tasks/test_code_vs_language_data.py; here the same criteria are checked through the
task: what it loads, scores, parses, probes and writes.
"""

from __future__ import annotations

import json
from dataclasses import asdict

import jsonschema
import numpy as np
import pytest
import torch

from harness import Edit, UsageError
from harness.api.context import RunContext
from harness.api.task import parse_config
from harness.results import SCHEMA_PATH, TIMING_FIELDS
from harness.results.compare import read_comparison
from harness.results.validate import validate_file
from harness.run.runner import RunSpec, run, run_task
from tasks.code_vs_language import CodeVsLanguage, CodeVsLanguageConfig
from tasks.code_vs_language import task as cvl
from tasks.code_vs_language.generators import LABELS, generate_fld
from tasks.code_vs_language.prompts import build_prompt, pick_shots
from tests.tasks.test_multiplication import tiny
from tests.tiny_models import save_tiny_model


@pytest.fixture(scope="module")
def llama():
    return tiny("llama", split_digits=True)


def ctx_for(model, tmp_path=None, **kw) -> RunContext:
    return RunContext(model=model, show_progress=False, artifacts_dir=tmp_path, **kw)


def config(**kw) -> CodeVsLanguageConfig:
    return cvl.settled(CodeVsLanguageConfig(**kw), "cpu")


# Options ------------------------------------------------------------------------------------------


def test_defaults_depend_on_the_device_and_are_settled_before_hashing():
    cpu, gpu = (
        CodeVsLanguage.resolve_config(CodeVsLanguageConfig(), "cpu"),
        CodeVsLanguage.resolve_config(CodeVsLanguageConfig(), "cuda"),
    )
    assert (cpu.n_items, gpu.n_items) == (cvl.CPU_ITEMS, 300) and gpu.subtasks == cvl.GEN_SUBTASKS
    assert CodeVsLanguage.resolve_config(CodeVsLanguageConfig(source="hub"), "cpu").subtasks == cvl.HUB_SUBTASKS
    assert CodeVsLanguage.resolve_config(CodeVsLanguageConfig(n_items=7), "cuda").n_items == 7


@pytest.mark.parametrize(
    "arg,message",
    [
        ("subtasks=fld_gen,babi_gen_4", "babi_gen_4 has no generator"),
        ("subtasks=fld", "unknown sub-task"),
        ("subtasks=babi_hub_21", "tasks 1 to 20"),
        ("subtasks=fld_gen,fld_gen", "listed twice"),
        ("babi_repo=me/babi", "babi_repo"),
        ("fld_depths=1,4", "fld_depths"),
        ("scoring=logits", "choose one of"),
    ],
)
def test_bad_options_are_usage_errors(arg, message):
    with pytest.raises(UsageError, match=message):
        parse_config(CodeVsLanguage, [arg])


# 1, 2. The task's items: deterministic, balanced, shots unlike every query ---------------------------


def test_items_are_deterministic_for_a_seed_and_fld_labels_balanced():
    a, b, c = (cvl.load_subtask("fld_gen", config(n_items=300, seed=s)) for s in (0, 0, 1))
    assert [asdict(i) for i in a.items] == [asdict(i) for i in b.items] and a.items != c.items
    shares = [sum(i.answer == label for i in a.items) / 300 for label in LABELS]
    assert all(abs(s - 1 / 3) <= 0.02 for s in shares)
    assert all(len(i.proof) == i.depth for i in a.items if i.answer != "UNKNOWN")


@pytest.mark.parametrize("name", cvl.GEN_SUBTASKS)
def test_shots_never_equal_a_query_and_answers_are_candidates(name):
    data = cvl.load_subtask(name, config(n_items=60))
    shots = pick_shots(data.pool, data.items, 3, 0)
    queries = {build_prompt(i, []) for i in data.items}
    assert len(shots) == 3 and not any(build_prompt(s, []) in queries for s in shots)
    assert all(i.answer in data.candidates for i in data.items)
    if name in ("babi_gen_1", "babi_gen_2", "babi_gen_3"):
        assert all(i.answer in " ".join(i.story) for i in data.items)


# 3. Choice scoring ------------------------------------------------------------------------------------


class FavourTokens:
    """Adds `bonus` to the logits of `ids` at every position (a stub whose scores favour one answer)."""

    def __init__(self, model, ids: list[int], bonus: float):
        self.ids, self.bonus = sorted(set(ids)), bonus
        self.handle = model.hf.get_output_embeddings().register_forward_hook(self.hook)

    def hook(self, module, args, output):
        output = output.clone()
        output[..., self.ids] += self.bonus
        return output


def test_a_model_favouring_unknown_predicts_unknown_everywhere(llama, tmp_path):
    tokens = llama.tokenizer(" UNKNOWN", add_special_tokens=False)["input_ids"]
    stub = FavourTokens(llama, tokens, 40.0)
    try:
        result = CodeVsLanguage().run(
            llama,
            config(subtasks=["fld_gen"], n_items=30, scoring="choice", shots=1),
            ctx := ctx_for(llama, tmp_path, log_samples=True),
        )
    finally:
        stub.handle.remove()
    assert {s["choice"] for s in ctx.samples} == {"UNKNOWN"}
    unknown_share = np.mean([s["gold"] == "UNKNOWN" for s in ctx.samples])
    assert result.metrics["fld_gen_acc"].value == pytest.approx(unknown_share) == pytest.approx(1 / 3)


def hand_choices(model, items) -> tuple[list[str], list[str]]:
    """Per item, the label of the largest summed log-probability and of the largest first-token one, by hand."""
    tok = model.tokenizer
    by_sum, by_first = [], []
    for item in items:
        prompt = tok(build_prompt(item, []))["input_ids"]
        sums, firsts = [], []
        for label in LABELS:
            cont = tok(build_prompt(item, []) + " " + label)["input_ids"][len(prompt) :]
            with torch.no_grad():
                logp = torch.log_softmax(model.hf(torch.tensor([prompt + cont])).logits[0].float(), -1)
            steps = [logp[len(prompt) - 1 + j, t].item() for j, t in enumerate(cont)]
            sums.append(sum(steps))
            firsts.append(steps[0])
        by_sum.append(LABELS[int(np.argmax(sums))])
        by_first.append(LABELS[int(np.argmax(firsts))])
    return by_sum, by_first


def test_choice_scores_sum_every_token_of_a_candidate(tmp_path):
    """The task's choices equal the argmax of sums computed by hand over every continuation token, on a model
    where they differ from a first-token-only choice on some items (so the test tells the two apart)."""
    cfg = config(subtasks=["fld_gen"], n_items=24, scoring="choice", shots=0)
    items = cvl.load_subtask("fld_gen", cfg).items
    for seed in range(6):  # random weights: the first seed on which summing changes some choice
        model = tiny("llama", split_digits=True, seed=seed)
        by_hand, first_only = hand_choices(model, items)
        if by_hand != first_only:
            break
    assert by_hand != first_only, "no tiny model on which summing matters"
    ctx = ctx_for(model, tmp_path, log_samples=True)
    CodeVsLanguage().run(model, cfg, ctx)
    assert [s["choice"] for s in ctx.samples] == by_hand


# 4. Parsing through the task ------------------------------------------------------------------------


def test_generations_are_parsed_and_invalid_ones_lower_the_format_rate(llama, monkeypatch):
    cfg = config(subtasks=["fld_gen"], n_items=6, scoring="generate", shots=0)
    data = cvl.load_subtask("fld_gen", cfg)
    texts = [" proved.", "I think", " DISPROVED", " unknown\nmore", "", " Proved"]
    ctx = ctx_for(llama, log_samples=True)
    monkeypatch.setattr(ctx, "generate", lambda prompts, **kw: texts[: len(prompts)])
    result = CodeVsLanguage().run(llama, cfg, ctx)
    parsed = ["PROVED", None, "DISPROVED", "UNKNOWN", None, "PROVED"]
    gold = [i.answer for i in data.items]
    m = result.metrics
    assert m["fld_gen_format_rate"].value == pytest.approx(4 / 6) and m["format_rate"].value == pytest.approx(4 / 6)
    assert m["fld_gen_gen_acc"].value == pytest.approx(np.mean([p == g for p, g in zip(parsed, gold)]))
    assert m["fld_gen_acc"].value == m["fld_gen_gen_acc"].value  # scoring=generate: the headline is the generation's
    assert [s["generation"] for s in ctx.samples] == texts


# 5. Hub sub-tasks through the task, from local files --------------------------------------------


def test_hub_subtasks_run_from_local_files(llama, tmp_path, monkeypatch):
    from tasks.code_vs_language import loaders

    for split, seed in (("test", 3), ("train", 4)):
        rows = [
            {"context": i.context, "hypothesis": i.hypothesis, "world_assump_label": i.answer, "depth": i.depth}
            for i in generate_fld(12, seed=seed)
        ]
        (tmp_path / f"fld_{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    story = [
        {"type": "context", "text": "Mary went to the kitchen.", "answer": ""},
        {"type": "question", "text": "Where is Mary?", "answer": "kitchen"},
        {"type": "context", "text": "Mary went to the garden.", "answer": ""},
        {"type": "question", "text": "Where is Mary?", "answer": "garden"},
    ]
    babi_file = tmp_path / "babi.jsonl"
    babi_file.write_text(json.dumps({"story": story}) + "\n")
    monkeypatch.setattr(
        cvl, "load_fld_hub", lambda c, split, limit: loaders.load_fld_hub(c, split, limit, str(tmp_path / f"fld_{split}.jsonl"))
    )
    monkeypatch.setattr(
        cvl, "load_babi_hub", lambda t, split, limit, repo: loaders.load_babi_hub(t, split, limit, repo, str(babi_file))
    )
    result = CodeVsLanguage().run(llama, config(subtasks=["fld_hub", "babi_hub_1"], shots=0, limit=10), ctx_for(llama))
    # Two questions of one story: one unit (the story), resampled whole.
    assert result.metrics["fld_hub_acc"].n == 10 and result.metrics["babi_hub_1_acc"].n == 1
    assert len(set(result.details["item_units"]["babi_hub_1"])) == 1
    assert result.details["subtasks"]["babi_hub_1"]["candidates"] == ["garden", "kitchen"]


# 6. Two models, two results files, one comparison ---------------------------------------------------


def test_two_models_give_two_results_files_and_one_comparison(tmp_path):
    a, b = save_tiny_model("llama", tmp_path / "m-a", seed=1), save_tiny_model("llama", tmp_path / "m-b", seed=2)
    out = tmp_path / "out"
    spec = RunSpec(
        models=[str(a), str(b)],
        tasks=["code_vs_language"],
        output_dir=out,
        show_progress=False,
        task_args=["subtasks=fld_gen", "n_items=300", "scoring=choice", "shots=0"],
        bootstrap=500,
    )
    outcomes = run(spec, lambda _: None)
    assert len(outcomes) == 2 and all(o.path.is_file() for o in outcomes)
    for o in outcomes:  # a random model's accuracy is chance on balanced labels
        m = o.results.metrics["fld_acc"]
        assert m.n == 300 and m.ci_low <= 1 / 3 <= m.ci_high
    made = list((out / "_compare").glob("code_vs_language-*.json"))
    assert len(made) == 1 and validate_file(made[0]) == []
    comparison = read_comparison(made[0])
    assert [m.spec for m in comparison.models] == [str(a), str(b)]
    diff = next(d for d in comparison.differences if d.metric == "fld_acc")
    a_items = np.array(outcomes[0].results.details["items"]["fld_gen"]["fld_gen_acc"])
    b_items = np.array(outcomes[1].results.details["items"]["fld_gen"]["fld_gen_acc"])
    assert diff.n == 300 and diff.value == pytest.approx((a_items - b_items).mean())
    # The interval is the paired one: items resampled once for both models (generated items are their own units).
    from harness.results.stats import bootstrap_ci

    assert (diff.ci_low, diff.ci_high) == pytest.approx(bootstrap_ci(a_items - b_items, seed=spec.seed, n_boot=500)[1:])
    from dataclasses import asdict

    from harness.report.findings import HOLDS, parse_finding, verdict

    for o in outcomes:  # random weights: the finding's behaviour facet must not hold
        assert verdict(parse_finding(asdict(CodeVsLanguage.finding)), o.results.metrics).verdict != HOLDS
    table = made[0].with_suffix(".md").read_text().splitlines()
    assert sum(line.startswith(f"| {a} |") or line.startswith(f"| {b} |") for line in table) == 2
    assert any(line.startswith(f"| {a} − {b} |") for line in table)


# 7. Probe ------------------------------------------------------------------------------------------


def test_probe_reads_a_label_written_into_the_residual_stream_and_shuffled_labels_do_not(llama):
    cfg = config(subtasks=["fld_gen"], n_items=90, probe=True)
    data = cvl.load_subtask("fld_gen", cfg)
    gold = np.array([LABELS.index(i.answer) for i in data.items])
    directions = torch.zeros(3, llama.d_model)
    directions[np.arange(3), np.arange(3) * 7] = 30.0
    ctx = ctx_for(llama)
    with ctx.intervene([Edit("resid_post.0", "add", directions[gold], position="last")]):
        metrics = CodeVsLanguage().probe(ctx, llama, data, cfg, details := {}, curves := [])
    by_layer = details["probe"]["fld_gen"]["acc_by_layer"]
    assert len(by_layer["probe"]) == len(by_layer["shuffled"]) == llama.n_layers
    assert metrics["fld_gen_probe_best_acc"].value > 0.95 and min(by_layer["probe"]) > 0.95
    assert abs(metrics["fld_gen_probe_shuffled_best_acc"].value - 1 / 3) < 0.2
    assert details["probe"]["fld_gen"]["best_layer"]["shuffled"] == int(metrics["fld_gen_probe_shuffled_best_layer"].value)
    assert {c.label for c in curves} == {"probe", "shuffled"}


def test_probe_run_writes_curves_and_a_plot_and_drops_rare_babi_answers(llama, tmp_path):
    ctx = ctx_for(llama, tmp_path)
    result = CodeVsLanguage().run(
        llama,
        config(subtasks=["babi_gen_1", "fld_gen"], n_items=30, shots=0, probe=True, probe_depth=True, scoring="choice"),
        ctx,
    )
    probe = result.details["probe"]
    classes = np.unique([i.answer for i in cvl.load_subtask("babi_gen_1", config(n_items=30)).items], return_counts=True)
    assert probe["babi_gen_1"]["classes"] == sorted(c for c, n in zip(*classes) if n >= cvl.MIN_PROBE_CLASS)
    assert "fld_gen_probe_depth_best_acc" in result.metrics and "probe_layers.png" in ctx.artifacts
    assert all(c.layers == list(range(llama.n_layers)) and len(c.values) == llama.n_layers for c in result.curves)
    assert {c.metric for c in result.curves} >= {"fld_gen_probe_acc", "fld_gen_probe_shuffled_acc"}


# 8. Determinism and schema ------------------------------------------------------------------------


def test_same_seed_gives_the_same_results_file_and_it_validates(llama, tmp_path):
    cfg = config(subtasks=["fld_gen", "babi_gen_15"], n_items=12, shots=1)
    spec = RunSpec(models=["tiny"], tasks=["code_vs_language"], bootstrap=200)
    files = []
    for k in range(2):
        path = tmp_path / f"r{k}" / "code_vs_language.json"
        run_task(llama, CodeVsLanguage, cfg, path, spec)
        data = json.loads(path.read_text())
        jsonschema.validate(data, json.loads(SCHEMA_PATH.read_text()))
        files.append({k: v for k, v in data.items() if k not in TIMING_FIELDS})
    assert files[0] == files[1]
    items = files[0]["details"]["items"]
    assert set(items) == {"fld_gen", "babi_gen_15"} and len(items["fld_gen"]["id"]) == 12
    assert files[0]["details"]["pooled"]["fld_acc"] == ["fld_gen_acc"]
