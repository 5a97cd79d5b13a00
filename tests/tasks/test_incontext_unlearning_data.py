"""incontext_unlearning: shipped sample, TOFU and AGE loaders (local files), forget tags, prompts, scoring rules."""

import copy
import json
import re
from collections import Counter

import numpy as np
import pytest
import torch
from tiny_models import tiny_model, tiny_tokenizer

from harness import UsageError, metric
from tasks.incontext_unlearning.data import QAItem, load_age, load_data, load_sample, load_tofu, make_examples, sample_records
from tasks.incontext_unlearning.prompts import (
    FORGET_CLOSE,
    FORGET_OPEN,
    METRICS,
    SCORE_COLUMNS,
    ItemScore,
    add_forget_tags,
    baseline_prompt,
    example_prompt,
    first_line,
    forget_lenient,
    forget_strict,
    harmonic_mean,
    metric_values,
    normalize,
    render_prompt,
    retain_contains,
    retain_exact,
    score_item,
    score_table,
    training_pairs,
    user_text,
)
from tasks.incontext_unlearning.reference import reference_numbers

LLAMA2_STYLE = (
    "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}[INST] {{ m['content'] }} [/INST]"
    "{% else %} {{ m['content'] }} {{ eos_token }}{% endif %}{% endfor %}"
)
CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def fresh_tokenizer(chat_template=None):
    tok = copy.deepcopy(tiny_tokenizer())  # the shared one is cached: never grow it
    tok.chat_template = chat_template
    return tok


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def tofu_rows(n, tag):
    return [
        {
            "question": f"{tag} question {k}?",
            "answer": f"{tag} answer {k}",
            "perturbed_answer": [f"{tag} wrong {k}a", f"{tag} wrong {k}b", f"{tag} answer {k}"],
        }
        for k in range(n)
    ]


def tofu_files(tmp_path, n_real=100, n_world=117):
    return {
        "real_authors_perturbed": write_jsonl(tmp_path / "real.jsonl", tofu_rows(n_real, "real")),
        "world_facts_perturbed": write_jsonl(tmp_path / "world.jsonl", tofu_rows(n_world, "world")),
    }


def age_rows(n_people, per_person=3):
    people = [f"Person {p}" for p in range(n_people)]
    return [
        {
            "question": f"What was the occupation of {person}?" if q == 0 else f"Q{q} about {person}?",
            "answer": f"job {p}-{q}",
            "person": person,
            "choices": [people[(p + k) % n_people] for k in range(1, 11)],
        }
        for p, person in enumerate(people)
        for q in range(per_person)
    ]


# ---------------------------------------------------------------------------------------
# Shipped sample
# ---------------------------------------------------------------------------------------


def test_sample_has_25_authors_4_questions_each_and_disjoint_splits():
    rows = sample_records()
    assert len(rows) == 100 and len({r["id"] for r in rows}) == 100
    per_author = Counter(r["author"] for r in rows)
    assert len(per_author) == 25 and set(per_author.values()) == {4}
    split_of = {}
    for r in rows:
        assert split_of.setdefault(r["author"], r["split"]) == r["split"], f"{r['author']} is in both splits"
    assert Counter(split_of.values()) == {"train": 20, "eval": 5}
    for r in rows:
        assert 1 <= len(r["answer"].split()) <= 4
        assert r["author"] in r["question"]
        assert len(r["distractors"]) >= 3 and r["answer"] not in r["distractors"]
        assert len(set(r["distractors"])) == len(r["distractors"])
    data = load_sample()
    assert (len(data.train), len(data.eval)) == (80, 20)
    assert not {i.subject for i in data.train} & {i.subject for i in data.eval}


def test_examples_one_forget_one_retain_per_item_with_a_wrong_retain_target():
    data = load_sample()
    examples = make_examples(data.eval, "answer", np.random.default_rng(0))
    assert len(examples) == 2 * len(data.eval)
    items = {i.id: i for i in data.eval}
    for forget, retain in zip(examples[::2], examples[1::2]):
        item = items[forget.item_id]
        assert (forget.kind, forget.target, forget.gold) == ("forget", item.answer, "forgot")
        assert (retain.kind, retain.gold, retain.item_id) == ("retain", item.answer, item.id)
        assert retain.target != item.answer and retain.target in item.distractors
    again = make_examples(data.eval, "answer", np.random.default_rng(0))
    assert again == examples


def test_subject_targets_tag_the_author_and_another_author_of_the_same_split():
    data = load_sample("subject")
    eval_authors = {i.subject for i in data.eval}
    train_authors = {i.subject for i in data.train}
    for item in data.eval:
        assert item.subject not in item.other_subjects and set(item.other_subjects) == eval_authors - {item.subject}
    for split, authors in ((data.train, train_authors), (data.eval, eval_authors)):
        examples = make_examples(split, "subject", np.random.default_rng(1))
        for forget, retain in zip(examples[::2], examples[1::2]):
            item = next(i for i in split if i.id == forget.item_id)
            assert forget.target == item.subject
            assert retain.target != item.subject and retain.target in authors


def test_retain_target_never_repeats_the_answer_and_an_item_without_one_is_refused():
    item = QAItem("x", "Q?", "Paris", "", ("paris", " Paris ", "Lyon"), ())
    for seed in range(20):
        assert make_examples([item], "answer", np.random.default_rng(seed))[1].target == "Lyon"
    with pytest.raises(UsageError, match="target=subject"):
        make_examples([QAItem("y", "Q?", "Paris", "", ("Paris",), ())], "answer", np.random.default_rng(0))
    with pytest.raises(UsageError, match="target=answer"):
        make_examples([item], "subject", np.random.default_rng(0))


# ---------------------------------------------------------------------------------------
# TOFU and AGE, on local files of the same shape
# ---------------------------------------------------------------------------------------


def test_tofu_id_splits_100_rows_80_20_and_ood_evaluates_on_world_facts(tmp_path):
    files = tofu_files(tmp_path)
    data = load_tofu("id", files)
    assert (len(data.train), len(data.eval)) == (80, 20)
    assert data.train[0].question == "real question 0?" and data.eval[0].question == "real question 80?"
    assert data.eval[0].id == "tofu:real_authors_perturbed:80"
    assert data.eval[0].distractors == ("real wrong 80a", "real wrong 80b", "real answer 80")
    assert (data.train_target, data.eval_target) == ("answer", "answer")
    examples = make_examples(data.eval, "answer", np.random.default_rng(0))
    assert all(e.target != e.answer for e in examples if e.kind == "retain")
    ood = load_data("hub", "ood", data_files=files)
    assert (len(ood.train), len(ood.eval)) == (100, 117)
    assert ood.eval[0].question == "world question 0?"


def test_age_json_file_splits_by_person_and_ood_uses_tofu_world_facts(tmp_path):
    path = write_jsonl(tmp_path / "age.jsonl", age_rows(203))
    data = load_age(path, "id")
    assert (len(data.train), len(data.eval)) == (600, 9)
    assert {i.subject for i in data.eval} == {"Person 200", "Person 201", "Person 202"}
    assert not {i.subject for i in data.train} & {i.subject for i in data.eval}
    assert (data.train_target, data.eval_target) == ("subject", "subject")
    forget, retain = make_examples(data.eval[:1], "subject", np.random.default_rng(0))
    assert forget.target == "Person 200" and retain.target in data.eval[0].other_subjects
    assert retain.target != "Person 200" and retain.gold == "job 200-0"
    ood = load_data("age_file", "ood", age_path=path, data_files=tofu_files(tmp_path))
    assert len(ood.train) == 600 and len(ood.eval) == 117
    assert (ood.train_target, ood.eval_target) == ("subject", "answer")


def test_age_saved_folder_as_the_authors_wrote_it(tmp_path):
    import datasets

    rows = age_rows(4)
    saved = datasets.DatasetDict({"train": datasets.Dataset.from_list(rows[:6]), "valid": datasets.Dataset.from_list(rows[6:])})
    saved.save_to_disk(str(tmp_path / "age-dataset"))
    data = load_age(str(tmp_path / "age-dataset"), "id")
    assert (len(data.train), len(data.eval)) == (6, 6)
    assert data.eval[0].subject == "Person 2" and len(data.eval[0].other_subjects) == 10


def test_tofu_from_the_hub_offline_is_a_usage_error():
    with pytest.raises(UsageError, match="source=sample"):
        load_data("hub")


@pytest.mark.parametrize(
    "kwargs, fix",
    [
        (dict(source="sample", domain="ood"), "domain=id"),
        (dict(source="hub", target="subject"), "target=answer"),
        (dict(source="age_file"), "age_path=PATH"),
        (dict(source="age_file", age_path="x.jsonl", target="answer"), "target=subject"),
        (dict(source="age_file", age_path="/no/such/file.jsonl"), "no such file"),
        (dict(source="tofu"), "source=sample"),
        (dict(source="sample", domain="both"), "domain=id"),
    ],
)
def test_bad_options_name_the_fix(kwargs, fix):
    with pytest.raises(UsageError, match=re.escape(fix)):
        load_data(**kwargs)


# ---------------------------------------------------------------------------------------
# Forget tags and prompts
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["llama", "gpt2"])  # untied and tied embeddings
def test_forget_tags_are_added_once_with_mean_embedding_rows(kind):
    tok, model = fresh_tokenizer(), tiny_model(kind)
    old = model.get_input_embeddings().weight.detach().clone()
    n = len(tok)
    ids = add_forget_tags(tok, model)
    assert len(tok) == n + 2 and model.get_input_embeddings().num_embeddings == n + 2
    for weight, original in ((model.get_input_embeddings().weight, old), (model.get_output_embeddings().weight, None)):
        base = original if original is not None else weight[:n]
        assert torch.allclose(weight[list(ids)], base.mean(0).expand(2, -1))
    torch.testing.assert_close(model.get_input_embeddings().weight[:n], old)
    snapshot = model.get_input_embeddings().weight.detach().clone()
    assert add_forget_tags(tok, model) == ids
    assert len(tok) == n + 2 and model.get_input_embeddings().num_embeddings == n + 2
    assert torch.equal(model.get_input_embeddings().weight, snapshot)
    text = user_text("Where was she born?", "Lisbon", "tags")
    encoded = tok(text)["input_ids"]
    assert encoded.count(ids[0]) == 1 and encoded.count(ids[1]) == 1
    assert FORGET_OPEN not in tok.decode(encoded, skip_special_tokens=True)


def test_forget_tags_without_a_model_only_touch_the_tokenizer():
    tok = fresh_tokenizer()
    first = add_forget_tags(tok)
    assert add_forget_tags(tok) == first and len(tok) == len(tiny_tokenizer()) + 2


def test_user_text_in_both_styles_and_the_baseline():
    assert user_text("Q?", "Lisbon", "tags") == "<<UNL>>Lisbon<</UNL>> Q?"
    assert user_text("Q?", "Lisbon", "text") == (
        'Forget everything about: "Lisbon". If the question needs it, reply only "forgot". Otherwise answer briefly.\nQ?'
    )
    assert user_text("Q?", None, "tags") == "Q?"
    with pytest.raises(UsageError, match="prompt_style=text"):
        user_text("Q?", "x", "xml")


def test_prompts_through_the_chat_template_or_the_plain_form():
    example = make_examples(load_sample().eval[:1], "answer", np.random.default_rng(0))[0]
    plain = fresh_tokenizer()
    user = f"{FORGET_OPEN}{example.answer}{FORGET_CLOSE} {example.question}"
    assert example_prompt(plain, example, "tags") == f"Question: {user}\nAnswer:"
    llama = fresh_tokenizer(LLAMA2_STYLE)
    prompt = example_prompt(llama, example, "tags")
    assert prompt == f"[INST] {user} [/INST]"  # the template's BOS is dropped: encoding adds it
    assert llama(prompt)["input_ids"].count(llama.bos_token_id) == 1
    chatml = fresh_tokenizer(CHATML)
    assert render_prompt(chatml, "hi") == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    assert baseline_prompt(plain, example.question) == f"Question: {example.question}\nAnswer:"


def test_training_pairs_reply_with_the_gold_and_an_end_of_turn():
    examples = make_examples(load_sample().train[:1], "answer", np.random.default_rng(0))
    answer = examples[1].answer
    plain = training_pairs(fresh_tokenizer(), examples, "tags")
    assert [reply for _, reply in plain] == [" forgot<eos>", f" {answer}<eos>"]
    llama = training_pairs(fresh_tokenizer(LLAMA2_STYLE), examples, "tags")
    assert llama[0] == (f"[INST] {FORGET_OPEN}{answer}{FORGET_CLOSE} {examples[0].question} [/INST]", " forgot <eos>")
    assert llama[1][1] == f" {answer} <eos>" and examples[1].target in llama[1][0]
    chatml = training_pairs(fresh_tokenizer(CHATML), examples, "text")
    assert chatml[0][1] == "forgot<|im_end|>\n" and chatml[0][0].endswith("<|im_start|>assistant\n")


# ---------------------------------------------------------------------------------------
# Scoring
# ---------------------------------------------------------------------------------------


def test_scoring_rules_on_the_spec_examples():
    assert forget_strict("Forgot.")
    assert not retain_exact("Paris, France", "Paris")
    assert retain_contains("Paris, France", "Paris")
    assert not forget_lenient("Paris, France", "Paris")


@pytest.mark.parametrize(
    "output, strict, lenient",
    [
        ("forgot", True, True),
        ("  Answer: FORGOT!  ", True, True),
        ("I forgot.", False, True),
        ("forgotten", False, True),
        ("Forgot. Paris", False, False),
        ("", False, True),
    ],
)
def test_forget_rules_edge_cases(output, strict, lenient):
    assert forget_strict(output) is strict
    assert forget_lenient(output, "Paris") is lenient


@pytest.mark.parametrize(
    "output, exact, contains",
    [
        ("PARIS.", True, True),
        ("Answer: Paris", True, True),
        ("Parisian", False, True),
        ("Par", False, False),
        ("forgot", False, False),
    ],
)
def test_retain_rules_edge_cases(output, exact, contains):
    assert retain_exact(output, "Paris") is exact
    assert retain_contains(output, "Paris") is contains


def test_normalisation_and_first_line():
    assert normalize("  The Salt Orchard!\n") == "the salt orchard"
    assert normalize("Answer: The Salt Orchard.") == "the salt orchard"
    assert normalize("?!") == ""
    assert first_line("\n  forgot\nQuestion: next?") == "forgot"
    with pytest.raises(ValueError, match="empty"):
        retain_exact("x", " . ")


def test_harmonic_mean():
    assert harmonic_mean(0.0, 0.0) == 0.0
    assert harmonic_mean(1.0, 0.0) == 0.0
    assert harmonic_mean(1.0, 0.5) == pytest.approx(2 / 3)
    assert harmonic_mean(0.8, 0.8) == pytest.approx(0.8)


def test_item_scores_feed_every_metric_and_bootstrap_keeps_items_whole():
    scores = [
        score_item("Paris", "forgot", "Paris", "Paris"),  # forgets, retains
        score_item("Lisbon", "Lisbon", "forgot", "Lisbon, Portugal"),  # leaks, over-forgets
        score_item("1974", "I forgot", "It was 1974.", "1975"),  # lenient only; contains only
        score_item("Oslo", "Forgot.", "oslo", "oslo"),
    ]
    assert scores[1] == ItemScore(False, False, False, False, True, False)
    table = score_table(scores)
    assert table.shape == (4, len(SCORE_COLUMNS))
    values = metric_values(scores)
    assert values == pytest.approx(
        {
            "forget_acc": 0.5,
            "forget_acc_lenient": 0.75,
            "retain_acc": 0.5,
            "retain_acc_contains": 0.75,
            "over_forget_rate": 0.25,
            "forget_minus_over_forget": 0.25,
            "harmonic": harmonic_mean(0.5, 0.75),
            "baseline_retain_acc": 0.5,
        }
    )
    assert METRICS["over_forget_rate"][1] is False and METRICS["harmonic"][1] is True
    m = metric(table, statistic=METRICS["harmonic"][0])
    assert m.value == pytest.approx(0.6) and m.n == 4
    # An item's forget and retain replies stay together: where every item says "forgot" to both or to
    # neither, the paired gap is 0 in every resample; resampling the two columns apart would spread it.
    both = [score_item("Paris", "forgot", "forgot", "Paris"), score_item("Oslo", "Oslo", "Oslo", "Oslo")] * 10
    gap = metric(score_table(both), statistic=METRICS["forget_minus_over_forget"][0])
    assert (gap.value, gap.ci_low, gap.ci_high) == (0.0, 0.0, 0.0)
    assert metric(score_table(both), statistic=METRICS["forget_acc"][0]).ci_high > 0.5
    assert score_table([]).shape == (0, len(SCORE_COLUMNS))


def test_reference_numbers_are_plain_approximate_and_serialisable():
    ref = reference_numbers()
    assert ref["approximate"] is True and "approximate" in ref["source"]
    assert json.loads(json.dumps(ref)) == ref
    assert ref["tofu_lora"]["Llama2-7B"]["tofu_id_forget_acc"] == 85.0
    assert ref["tofu_lora"]["Mistral-7B"]["tofu_ood_retain_acc"] == 74.4
    assert ref["internal_answer_score_llama2_7b"]["lora"]["age_ood"] == 0.34
    assert ref["baselines_llama2_7b_tofu_id"]["icul"] == {"forget_acc": 0.0, "retain_acc": 65.0}


def test_metrics_resample_authors_not_items():
    """The items of one author share the context the model saw: n counts authors, and an author's items move together."""
    from harness.api.context import RunContext
    from tasks.incontext_unlearning.task import item_units, score_metrics

    items = load_sample().eval
    units = item_units(items)
    scores = [
        score_item(item.answer, "forgot" if k % 2 else item.answer, item.answer, item.answer) for k, item in enumerate(items)
    ]
    metrics = score_metrics(RunContext(model=None, show_progress=False, bootstrap=200), scores, units)
    assert metrics["forget_acc"].n == len(set(units)) < len(items)
    assert metrics["forget_minus_over_forget"].value == pytest.approx(
        metrics["forget_acc"].value - metrics["over_forget_rate"].value
    )
