"""incontext_unlearning task: the spec's acceptance criteria on tiny random models.

Criteria 1-3 and 6 at the level of data, prompts, scoring and ADOPT are also in
test_incontext_unlearning_data.py and test_adopt.py; here they are checked through the task.
"""

from __future__ import annotations

import copy
import hashlib
import json

import jsonschema
import numpy as np
import pytest
import torch

from harness.api.context import RunContext
from harness.api.task import parse_config
from harness.engine.lens import Lens
from harness.engine.models import from_hf
from harness.errors import UsageError
from harness.results import SCHEMA_PATH
from harness.results.validate import validate_file
from harness.run.runner import RunSpec, run_task
from tasks.incontext_unlearning import IncontextUnlearning, forget_tags
from tasks.incontext_unlearning.data import FORGOT, Example, load_sample
from tasks.incontext_unlearning.prompts import FORGET_CLOSE, FORGET_OPEN, score_item
from tasks.incontext_unlearning.task import (
    internal_answer_metric,
    lens_summary,
    reference_for,
    reply_first_token,
    score_metrics,
    settled,
)
from tests.tiny_models import TINY_CONFIGS, tiny_model, tiny_tokenizer

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
FAST_TRAIN = dict(mode="finetune", steps=30, lr=1e-2, batch_size=4, max_new_tokens=4)


def make_model(kind: str = "llama", chat_template: str | None = None):
    tok = copy.deepcopy(tiny_tokenizer())  # the shared one is cached: never change it
    tok.chat_template = chat_template
    return from_hf(tiny_model(kind).requires_grad_(False), tok, spec=f"tiny-{kind}")


def weights_hash(model) -> str:
    h = hashlib.sha256()
    for name, tensor in sorted(model.hf.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().numpy().tobytes())
    return h.hexdigest()


def run(model, tmp_path=None, limit=4, **options):
    ctx = RunContext(model=model, artifacts_dir=tmp_path, show_progress=False, limit=limit, bootstrap=200, log_samples=True)
    config = IncontextUnlearning.resolve_config(IncontextUnlearning.Config(**options), "cpu")  # as the runner settles it
    return IncontextUnlearning().run(model, config, ctx), ctx


# ---------------------------------------------------------------------------------------
# 1. Items and examples; 2. tags
# ---------------------------------------------------------------------------------------


def test_each_item_gives_one_forget_and_one_retain_prompt_with_both_tags(monkeypatch):
    model = make_model()
    seen: list[str] = []
    original = RunContext.generate

    def spy(self, prompts, *args, **kwargs):
        seen.extend(prompts)
        return original(self, prompts, *args, **kwargs)

    monkeypatch.setattr(RunContext, "generate", spy)
    result, ctx = run(model, limit=3, prompt_style="tags", lens=False)
    items = load_sample().eval[:3]
    assert len(seen) == 3 * 3  # forget + retain per item, then one baseline per item
    for k, item in enumerate(items):
        forget, retain, baseline = seen[2 * k], seen[2 * k + 1], seen[6 + k]
        assert f"{FORGET_OPEN}{item.answer}{FORGET_CLOSE} {item.question}" in forget
        assert retain.count(FORGET_OPEN) == 1 and retain.count(FORGET_CLOSE) == 1
        assert f"{FORGET_OPEN}{item.answer}{FORGET_CLOSE}" not in retain and item.question in retain
        assert FORGET_OPEN not in baseline and item.question in baseline
    assert all(m.n == len({item.subject for item in items}) for m in result.metrics.values())  # n counts authors
    assert [s["item"] for s in ctx.samples] == [item.id for item in items]


def test_tags_are_special_tokens_during_the_run_and_a_rerun_does_not_grow_the_vocabulary():
    model = make_model("gpt2")  # tied embeddings
    n_tokens, n_rows, before = len(model.tokenizer), model.hf.get_input_embeddings().num_embeddings, weights_hash(model)
    with forget_tags(model) as ids:
        assert len(model.tokenizer) == n_tokens + 2 and model.hf.get_input_embeddings().num_embeddings == n_rows + 2
        encoded = model.tokenizer(f"{FORGET_OPEN}Lisbon{FORGET_CLOSE} Where?")["input_ids"]
        assert encoded.count(ids[0]) == 1 and encoded.count(ids[1]) == 1
    for _ in range(2):
        run(model, limit=2, prompt_style="tags")
        assert len(model.tokenizer) == n_tokens and model.hf.get_input_embeddings().num_embeddings == n_rows
        assert model.hf.config.vocab_size == n_rows and weights_hash(model) == before


def test_tag_rows_inside_a_padded_embedding_matrix_are_restored():
    model = make_model("llama")
    model.hf.resize_token_embeddings(len(model.tokenizer) + 8)  # rows past the vocabulary, as in padded models
    before, rows = weights_hash(model), model.hf.get_input_embeddings().num_embeddings
    with forget_tags(model):
        assert model.hf.get_input_embeddings().num_embeddings == rows
        assert weights_hash(model) != before  # the tag rows now hold the mean embedding
    assert weights_hash(model) == before


# ---------------------------------------------------------------------------------------
# 3. Scoring through the task's metrics
# ---------------------------------------------------------------------------------------


def test_spec_scoring_examples_reach_the_metrics():
    ctx = RunContext(model=None, bootstrap=200)
    scores = [score_item("Paris", "Forgot.", "Paris, France", "Paris"), score_item("Oslo", "Oslo", "forgot", "no")]
    m = score_metrics(ctx, scores)
    assert m["forget_acc"].value == 0.5 and m["forget_acc_lenient"].value == 0.5
    assert m["retain_acc"].value == 0.0 and m["retain_acc_contains"].value == 0.5
    assert m["over_forget_rate"].value == 0.5 and m["over_forget_rate"].higher_is_better is False
    assert m["baseline_retain_acc"].value == 0.5 and m["harmonic"].value == pytest.approx(0.5)
    assert all(metric.n == 2 for metric in m.values())


# ---------------------------------------------------------------------------------------
# 4. Logit lens
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_lens_curves_have_one_value_per_layer_and_a_picture_per_group(kind, tmp_path):
    model = make_model(kind)
    result, ctx = run(model, tmp_path, limit=3, prompt_style="tags", max_new_tokens=4)  # tiny GPT-2 reads 128 positions
    curves = result.details["lens_curve"]
    assert set(curves) == {"forget", "retain"}
    for group in curves.values():
        assert set(group) == {"answer", "forgot"}
        for stats in group.values():
            assert set(stats) == {"prob", "rank_median", "top1_rate"}
            assert all(len(v) == model.n_layers for v in stats.values())
            assert all(0 <= p <= 1 for p in stats["prob"]) and all(0 <= r <= 1 for r in stats["top1_rate"])
    assert {"lens_forget.png", "lens_retain.png"} <= set(ctx.artifacts)
    assert (tmp_path / "lens_forget.png").stat().st_size > 0


@pytest.mark.parametrize("model_type", sorted(TINY_CONFIGS))
def test_lens_ranks_and_last_layer_match_the_models_own_softmax(model_type):
    model = from_hf(tiny_model(model_type), tiny_tokenizer(), spec=f"tiny-{model_type}")
    ctx = RunContext(model=model, batch_size=2, show_progress=False)
    prompts = ["Mary went to the kitchen.", "Paris is the capital of"]
    targets = [5, 17, 200, 311]
    lens = ctx.logit_lens(prompts, targets)
    assert lens.ranks.shape == (2, model.n_layers, 4)
    for i, prompt in enumerate(prompts):
        with torch.no_grad():
            logits = model.hf(torch.tensor([model.tokenizer(prompt)["input_ids"]])).logits[0, -1].float()
        probs = logits.softmax(-1)
        assert (lens.logprobs[i, -1].exp() - probs[targets]).abs().max() < 1e-4
        expected = [int((logits > logits[t]).sum()) for t in targets]
        assert lens.ranks[i, -1].tolist() == expected
    assert ((lens.ranks == 0) == (lens.top_token[..., None] == torch.tensor(targets))).all()


def example(kind: str, item: str = "a") -> Example:
    return Example(item, kind, "Q?", "x", FORGOT if kind == "forget" else "Paris", "Paris")


def test_lens_summary_and_internal_answer_score_on_a_known_lens():
    # Two items, three layers; targets: 10 (answer), 20 (forgot).
    examples = [example("forget", "a"), example("retain", "a"), example("forget", "b"), example("retain", "b")]
    probs = torch.full((4, 3, 2), 0.01)
    top = torch.full((4, 3), 99)
    ranks = torch.full((4, 3, 2), 7)
    top[0] = torch.tensor([99, 10, 20])  # item a: answer top-1 in the middle, forgot at the end: pretends
    ranks[0, 1, 0], ranks[0, 2, 1] = 0, 0
    probs[0, 1, 0], probs[0, 2, 1] = 0.9, 0.8
    top[2] = torch.tensor([99, 99, 20])  # item b: forgot at the end, answer never top-1
    ranks[2, 2, 1] = 0
    lens = Lens(layers=[0, 1, 2], logprobs=probs.log(), top_token=top, ranks=ranks)
    summary = lens_summary(lens, examples, [10] * 4, [20] * 4, [10, 20])
    forget = summary["curves"]["forget"]
    assert forget["answer"]["prob"] == pytest.approx([0.01, 0.455, 0.01])
    assert forget["answer"]["top1_rate"] == [0.0, 0.5, 0.0] and forget["forgot"]["top1_rate"] == [0.0, 0.0, 1.0]
    assert forget["answer"]["rank_median"] == [7.0, 3.5, 7.0]
    assert summary["curves"]["retain"]["answer"]["top1_rate"] == [0.0, 0.0, 0.0]
    ctx = RunContext(model=None, bootstrap=200)
    both = [score_item("Paris", "forgot", "Paris", "Paris")] * 2
    assert internal_answer_metric(ctx, both, summary).value == 0.5
    only_a = [score_item("Paris", "forgot", "Paris", "Paris"), score_item("Paris", "Paris", "Paris", "Paris")]
    metric = internal_answer_metric(ctx, only_a, summary)
    assert metric.value == 1.0 and metric.n == 1
    none = [score_item("Paris", "Paris", "Paris", "Paris")] * 2
    assert internal_answer_metric(ctx, none, summary) is None


def test_answer_token_is_the_first_reply_token_in_chat_and_plain_form():
    for template in (None, CHATML):
        model = make_model(chat_template=template)
        with forget_tags(model):
            tok = model.tokenizer
            e = Example("a", "forget", "Where was she born?", "Paris", FORGOT, "Paris")
            a = reply_first_token(tok, e, "Paris", "tags")
            expected = tok(" Paris" if template is None else "Paris", add_special_tokens=False)["input_ids"][0]
            assert a == expected


# ---------------------------------------------------------------------------------------
# 5. Fine-tuning through the task; base weights unchanged; adapter=PATH
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("optimizer", ["adamw", "adopt"])
def test_finetune_loss_falls_base_weights_unchanged_and_adapter_reloads(optimizer, tmp_path):
    model = make_model()
    before = weights_hash(model)
    result, ctx = run(model, tmp_path / "run", limit=3, optimizer=optimizer, **FAST_TRAIN)
    training = result.details["training"]
    assert training["steps"] == 30 and training["settings"]["optimizer"] == optimizer
    assert training["loss_last5"] < training["loss_first5"]
    assert weights_hash(model) == before and len(model.tokenizer) == len(tiny_tokenizer())
    adapter = tmp_path / "run" / "adapter"
    saved = json.loads((adapter / "adapter_config.json").read_text())
    assert saved["r"] == 4 and saved["lora_alpha"] == 8 and saved["lora_dropout"] == 0.1
    from safetensors.torch import load_file

    keys = load_file(adapter / "adapter_model.safetensors").keys()
    assert keys and all("lora_" in k for k in keys)  # only LoRA weights were trained and saved
    again, _ = run(model, tmp_path / "eval", limit=3, adapter=str(adapter), max_new_tokens=4)
    assert {k: m.model_dump() for k, m in again.metrics.items()} == {k: m.model_dump() for k, m in result.metrics.items()}
    assert again.details["replies"] == result.details["replies"]
    for group, tokens in result.details["lens_curve"].items():
        for token, stats in tokens.items():
            for stat, values in stats.items():
                np.testing.assert_allclose(again.details["lens_curve"][group][token][stat], values, rtol=1e-5, atol=1e-7)
    assert "training" not in again.details and again.details["adapter"]["sha256"]
    assert weights_hash(model) == before


def test_missing_adapter_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="no saved adapter"):
        run(make_model(), adapter=str(tmp_path / "nothing"))


# ---------------------------------------------------------------------------------------
# Options, reference, finding
# ---------------------------------------------------------------------------------------


def test_defaults_settle_by_source_and_mode():
    cfg = IncontextUnlearning.resolve_config(IncontextUnlearning.Config(), "cpu")
    assert (cfg.target, cfg.prompt_style, cfg.mode, cfg.steps) == ("answer", "text", "prompt_only", 40)
    assert IncontextUnlearning.resolve_config(IncontextUnlearning.Config(), "cuda").steps == 300
    assert settled(IncontextUnlearning.Config(steps=7), "cuda").steps == 7
    assert settled(IncontextUnlearning.Config(mode="finetune"), "cpu").prompt_style == "tags"
    assert settled(IncontextUnlearning.Config(adapter="x"), "cpu").prompt_style == "tags"
    assert settled(IncontextUnlearning.Config(source="age_file"), "cpu").target == "subject"
    assert settled(IncontextUnlearning.Config(prompt_style="tags"), "cpu").prompt_style == "tags"
    parsed = parse_config(IncontextUnlearning, ["mode=finetune", "optimizer=adopt", "target=subject", "steps=40"])
    assert (parsed.mode, parsed.optimizer, parsed.target, parsed.steps) == ("finetune", "adopt", "subject", 40)
    with pytest.raises(UsageError, match="choose one of adamw, adopt"):
        parse_config(IncontextUnlearning, ["optimizer=sgd"])


def test_reference_numbers_are_fractions_of_the_closest_setting():
    data = load_sample()
    tuned = reference_for(settled(IncontextUnlearning.Config(mode="finetune"), "cpu"), data)
    assert "approximate" in tuned.source and "data" in tuned.notes
    assert tuned.metrics["Llama2-7B LoRA (TOFU ID)"] == {"forget_acc": 0.85, "retain_acc": 0.80, "internal_answer_score": 0.03}
    assert tuned.metrics["Mistral-7B LoRA (TOFU ID, fine-tuning-method table)"] == {"forget_acc": 0.95, "retain_acc": 0.80}
    ood = reference_for(settled(IncontextUnlearning.Config(mode="finetune", source="hub", domain="ood"), "cpu"), data)
    assert ood.metrics["Mistral-7B LoRA (TOFU OOD)"] == {"forget_acc": pytest.approx(0.462), "retain_acc": pytest.approx(0.744)}
    prompt_only = reference_for(settled(IncontextUnlearning.Config(), "cpu"), data)
    assert prompt_only.metrics["Llama2-7B icul (TOFU ID)"] == {"forget_acc": 0.0, "retain_acc": 0.65}
    finding = IncontextUnlearning.finding
    keys = set(IncontextUnlearning.metric_descriptions)
    assert all(f.effect in keys and (f.control in keys or isinstance(f.control, float)) for f in finding.facets)
    assert set(IncontextUnlearning.headline_metrics) <= keys


# ---------------------------------------------------------------------------------------
# 7. Results file
# ---------------------------------------------------------------------------------------


def test_results_file_validates_and_the_same_seed_gives_the_same_file(tmp_path):
    model = make_model()
    config = IncontextUnlearning.resolve_config(IncontextUnlearning.Config(max_new_tokens=4), "cpu")  # as the runner settles it
    payloads = []
    for name in ("a", "b"):
        path = tmp_path / name / "incontext_unlearning.json"
        run_task(
            model,
            IncontextUnlearning,
            config,
            path,
            RunSpec(models=["tiny"], tasks=["incontext_unlearning"], limit=3, bootstrap=200),
        )
        assert validate_file(path) == []
        data = json.loads(path.read_text())
        jsonschema.validate(data, json.loads(SCHEMA_PATH.read_text()))
        for metric in data["metrics"].values():
            authors = len({item.subject for item in load_sample().eval[:3]})  # the first 3 items' authors: the units
            assert {"value", "ci_low", "ci_high", "n"} <= set(metric) and metric["n"] == authors
        assert "baseline_retain_acc" in data["metrics"]
        for volatile in ("timing", "created_at", "environment"):
            data.pop(volatile)
        payloads.append(data)
    assert payloads[0] == payloads[1]
