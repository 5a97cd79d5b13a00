"""scrambled_text: scramblers (properties), metrics (pure), prompts (golden), loaders (local files), tiny-model runs."""

import json
import re
from collections import Counter

import numpy as np
import pytest
from tiny_models import tiny_model, tiny_tokenizer

from harness.api.context import RunContext
from harness.api.task import parse_config
from harness.engine.models import from_hf
from harness.errors import UsageError
from harness.results import Results
from probes.text_metrics import (
    edit_distance,
    pooled_recovery,
    probe_transfer,
    recovery_rates,
    relative_performance_gain,
    restoration_cosine,
    row_cosine,
    rpg_rows,
)
from tasks.scrambled_text import (
    AQUA_DEMOS,
    ScrambledText,
    aqua_prompt,
    clean_recovery,
    dialogue_prompt,
    evidence_prompt,
    is_word,
    last_token_positions,
    load_hub,
    load_realtimeqa,
    load_sample,
    parse_letter,
    rec_demos,
    rec_prompt,
    rec_prompt_fewshot,
    scramble,
    scramble_with_words,
    split_pieces,
)

TEXTS = [
    "The city council voted on Tuesday to extend the night bus service.",
    "Gerber's well-known café opened in 1999, at 7:30 a.m. sharp!",
    "Line one  has  double spaces.\nLine two, x y z: ok-ish_thing Zq.",
    "A I an is of to be Mississippi bookkeeper aardvark.",
]
SCRAMBLE_TYPES = ["random_20", "random_50", "random_100", "keepfirst", "keepfirstlast", "substituted"]


def words_of(text):
    return [p for p in split_pieces(text) if is_word(p)]


def aligned_words(text, scrambled):
    """Words of the original and the scrambled text, matched piece by piece (spaces collapsed in both)."""
    from tasks.scrambled_text import collapse_spaces

    a, b = words_of(collapse_spaces(text)), words_of(scrambled)
    assert len(a) == len(b)
    return list(zip(a, b))


# Scramblers ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", SCRAMBLE_TYPES)
def test_same_seed_same_output_other_seed_differs(kind):
    for text in TEXTS:
        assert scramble(text, kind, seed=10) == scramble(text, kind, seed=10)
    assert any(scramble(t, kind, seed=10) != scramble(t, kind, seed=11) for t in TEXTS)


@pytest.mark.parametrize("kind", ["random_20", "random_50", "random_100", "keepfirst", "keepfirstlast"])
def test_letter_multiset_kept_and_non_letters_in_place(kind):
    for seed in range(20):
        for text in TEXTS:
            out = scramble(text, kind, seed)
            for a, b in aligned_words(text, out):
                assert len(a) == len(b) and Counter(a) == Counter(b)
                assert [i for i, c in enumerate(a) if not c.isalpha()] == [i for i, c in enumerate(b) if not c.isalpha()]
                assert all(a[i] == b[i] for i, c in enumerate(a) if not c.isalpha())


def test_keepfirst_and_keepfirstlast_keep_those_letters_and_case_moves_with_letters():
    for seed in range(20):
        for text in TEXTS:
            for a, b in aligned_words(text, scramble(text, "keepfirst", seed)):
                letters_a = [c for c in a if c.isalpha()]
                letters_b = [c for c in b if c.isalpha()]
                assert letters_a[0] == letters_b[0]
            for a, b in aligned_words(text, scramble(text, "keepfirstlast", seed)):
                la, lb = [c for c in a if c.isalpha()], [c for c in b if c.isalpha()]
                assert la[0] == lb[0] and la[-1] == lb[-1]
                if len(la) < 4:
                    assert a == b
    # "Gerber" keeps one capital G wherever it lands
    out = scramble("Gerber", "random_100", 3)
    assert sorted(out) == sorted("Gerber") and out != "Gerber"


def test_random_rates_are_nested_and_honoured():
    text = "One two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen."
    n = len(words_of(text))
    for seed in range(30):
        sets = {}
        for kind, r in (("random_20", 0.2), ("random_50", 0.5), ("random_100", 1.0)):
            out, chosen = scramble_with_words(text, kind, seed)
            assert len(chosen) == round(r * n)
            sets[kind] = set(chosen)
            changed = {k for k, (a, b) in enumerate(aligned_words(text, out)) if a != b}
            assert changed <= sets[kind]  # only chosen words move
            # the permutation is the same at every rate: a word chosen at 20% reads the same at 50% and 100%
        assert sets["random_20"] <= sets["random_50"] <= sets["random_100"]
        w20 = words_of(scramble(text, "random_20", seed))
        w100 = words_of(scramble(text, "random_100", seed))
        assert all(w20[k] == w100[k] for k in sets["random_20"])


def test_every_chosen_permutation_moves_a_letter():
    # two-letter words with distinct letters must always change when chosen
    text = "ab cd ef gh ij kl mn op qr st"
    for seed in range(20):
        out, chosen = scramble_with_words(text, "random_100", seed)
        assert out == " ".join(w[::-1] for w in text.split())


def test_substituted_changes_every_letter_of_words():
    for seed in range(10):
        for text in TEXTS:
            for a, b in aligned_words(text, scramble(text, "substituted", seed)):
                for x, y in zip(a, b):
                    if x.isalpha():
                        assert x != y and y.isascii() and y.isalpha() and x.isupper() == y.isupper()
                    else:
                        assert x == y


def test_spaces_collapsed_and_single_letters_untouched():
    out = scramble("I  saw   a cat.\nA  dog", "random_100", 10)
    assert "  " not in out and out.count("\n") == 1
    assert out.split()[0] == "I" and out.split()[2] == "a"


# Metrics -----------------------------------------------------------------------------------


def test_edit_distance_known_cases():
    assert edit_distance("kitten", "sitting") == 3
    assert edit_distance("", "abc") == 3 and edit_distance("abc", "") == 3
    assert edit_distance("flaw", "lawn") == 2
    assert edit_distance("Abc", "abc") == 1  # case-sensitive
    assert edit_distance("same", "same") == 0


def test_recovery_rate_perfect_none_worse_and_skipped():
    orig = ["the cat sat", "a dog ran", "no change", "big red bus"]
    scr = ["teh cat sat", "a dgo ran", "no change", "big rde bus"]
    rec = ["the cat sat", "a dgo ran", "no change", "xxxxxxxxxxxxxxxx"]
    r = recovery_rates(orig, scr, rec)
    assert r.n_skipped == 1 and list(r.kept) == [0, 1, 3]
    assert r.rr[0] == 1.0 and r.rr[1] == 0.0 and r.rr[2] < 0
    rows = np.stack([r.ed_scrambled[r.kept], r.ed_recovered[r.kept]], 1)
    assert pooled_recovery(rows) == pytest.approx(100 * (rows[:, 0].sum() - rows[:, 1].sum()) / rows[:, 0].sum())
    assert pooled_recovery(np.array([[2.0, 0.0], [2.0, 0.0]])) == 100.0


def test_recovery_strips_before_measuring():
    r = recovery_rates(["abc"], ["bac"], ["  abc \n"])
    assert r.rr[0] == 1.0


def test_relative_performance_gain():
    assert relative_performance_gain(0.7, 0.5, 0.9) == pytest.approx(0.5)
    assert relative_performance_gain(0.7, 0.5, 0.54) is None
    rows = np.array([[1, 0, 1], [1, 0, 0], [1, 1, 1], [0, 0, 0]], dtype=float)  # orig .75, sub .25, scr .5
    assert rpg_rows(rows) == pytest.approx(0.5)
    assert np.isnan(rpg_rows(np.ones((3, 3))))


def test_cosines_have_known_values_and_restoration_is_a_difference():
    a = np.array([[1.0, 0.0], [3.0, 4.0], [0.0, 0.0], [2.0, 0.0]])
    b = np.array([[1.0, 1.0], [-3.0, -4.0], [1.0, 2.0], [0.0, 5.0]])
    assert np.allclose(row_cosine(a, b), [2**-0.5, -1.0, 0.0, 0.0])  # a zero row gives 0, not NaN
    c = np.array([[0.0, 1.0], [4.0, -3.0], [1.0, 0.0], [2.0, 2.0]])
    assert np.allclose(restoration_cosine(a, b, c), [2**-0.5 - 0.0, -1.0 - 0.0, 0.0, 0.0 - 2**-0.5])


def test_cross_fitting_reads_each_half_at_the_layer_the_other_half_chose():
    from tasks.scrambled_text.task import cross_fitted

    half = np.array([0, 0, 1, 1])
    rows = {0: np.array([0.9, 0.9, 0.1, 0.1]), 3: np.array([0.2, 0.2, 0.5, 0.5]), 5: np.array([0.0, 0.0, 0.4, 0.4])}
    values, layers = cross_fitted(rows, half)
    assert layers == [3, 0]  # half 0 read at half 1's best layer, half 1 at half 0's
    assert values.tolist() == [0.2, 0.2, 0.1, 0.1]


def test_cross_fitted_noise_is_centred_where_the_maximum_over_layers_is_not():
    """Pure noise at 20 layers: the in-sample best layer looks positive, the cross-fitted value does not."""
    from harness.results.stats import bootstrap_ci
    from tasks.scrambled_text.task import cross_fitted

    rng = np.random.default_rng(0)
    n_words, n_ctx = 40, 10
    word = np.repeat(np.arange(n_words), n_ctx)
    rows = {L: np.repeat(rng.normal(size=n_words), n_ctx) + 0.1 * rng.normal(size=n_words * n_ctx) for L in range(20)}
    in_sample = max(rows.values(), key=np.mean)
    _, lo_max, _ = bootstrap_ci(in_sample, units=word)
    values, _ = cross_fitted(rows, word % 2)
    _, lo, hi = bootstrap_ci(values, units=word)
    assert lo_max > 0  # the maximum over 20 noise layers excludes 0: the selection effect
    assert lo < 0 < hi


def test_probe_transfer_reads_shared_identity_and_not_noise():
    rng = np.random.default_rng(0)
    n_words, n_ctx, d = 4, 5, 8
    centres = rng.normal(size=(n_words, d)) * 3
    y = np.repeat(np.arange(n_words), n_ctx)
    g = np.tile(np.arange(n_ctx), n_words)
    X = centres[y] + rng.normal(size=(len(y), d)) * 0.5
    X_scr_same = centres[y] + rng.normal(size=(len(y), d)) * 0.5
    fit = probe_transfer(X, y, g, {"same": X_scr_same, "noise": rng.normal(size=X.shape) * 3})
    assert fit.correct_scrambled["same"].mean() > 0.9 and fit.correct_original.mean() > 0.9
    assert fit.correct_scrambled["noise"].mean() < 0.6


# Prompts -----------------------------------------------------------------------------------


def test_rec_prompts_golden():
    assert rec_prompt("Teh cat.") == (
        "The letters inside the words of this sentence are shuffled. Write the original sentence.\n"
        "Scrambled sentence: Teh cat.\nRecovered sentence:"
    )
    demos = rec_demos(10)
    assert demos.count("Scrambled Sentence: ") == 3 and demos.endswith("\n\n")
    first = demos.split("\n")[:2]
    assert first[1] == "Recovered Sentence: The old mill by the river was turned into a small museum last year."
    assert first[0] == "Scrambled Sentence: " + scramble(
        "The old mill by the river was turned into a small museum last year.", "random_50", 10
    )
    assert rec_prompt_fewshot("Teh cat.", "D\n\n") == "D\n\nScrambled Sentence: Teh cat.\nRecovered Sentence:"


def test_qa_prompts_golden():
    assert evidence_prompt("Who won?", ["Ann", "Bob", "Cy", "Di"], "Ann won.") == (
        "Question: Who won?\nChoices: (A)Ann (B)Bob (C)Cy (D)Di\nEvidence: Ann won.\n"
        "Answer: Based on the evidence, among A through D, the answer is"
    )
    assert dialogue_prompt("Who?", ["x", "y", "z"], "M: hi\nW: bye") == (
        "Dialogue:\nM: hi\nW: bye\nQuestion: Who?\nChoices: (A)x (B)y (C)z\n"
        "Answer: Based on the dialogue, among A through C, the answer is"
    )
    p = aqua_prompt("What is 1+1?", ["1", "2", "3", "4", "5"], likelihood=False)
    assert p.count("Question: ") == 5 and p.endswith("Question: What is 1+1?\nChoices: (A)1 (B)2 (C)3 (D)4 (E)5\nAnswer:")
    assert aqua_prompt("q", ["1", "2"], likelihood=True).endswith("Answer: The answer is (")


def test_aqua_demos_answers_are_consistent():
    for q, choices, answer in AQUA_DEMOS:
        letter = re.search(r"The answer is \(([A-E])\)\.$", answer).group(1)
        assert choices["ABCDE".index(letter)] in answer


def test_clean_recovery_and_letter_parsing():
    assert clean_recovery(" The cat sat.\nScrambled sentence: x") == "The cat sat."
    assert clean_recovery(" The cat sat. Scrambled sentence: Teh") == "The cat sat."
    assert clean_recovery("\n\n The cat.\nmore") == "The cat."
    assert parse_letter(" B, because", 3) == "B"
    assert parse_letter(" (C)", 3) == "C" and parse_letter(" D", 3) is None
    assert parse_letter("So x = 6. The answer is (C). Next the answer is (D).", 5, after_answer_is=True) == "D"
    assert parse_letter("no verdict", 5, after_answer_is=True) is None


# Data --------------------------------------------------------------------------------------


def test_shipped_sample_shape():
    data = load_sample()
    assert len(data.sentences) == 200 and len(set(data.sentences)) == 200
    assert all(8 <= len(s.split()) <= 30 for s in data.sentences)
    assert len(data.qa) == 60
    for q in data.qa:
        assert len(q.choices) == 3 and q.answer in "ABC" and q.context in data.sentences
    assert len({q.answer for q in data.qa}) == 3


def test_dream_loader_on_a_local_file(tmp_path):
    records = [
        {
            "id": 0,
            "dialogue_id": "5-510",
            "dialogue": ["M: Is the shop open?", "W: Yes, until nine."],
            "question": "Until when is the shop open?",
            "choice": ["Eight", "Nine", "Ten"],
            "answer": "Nine",
        },
        {
            "id": 1,
            "dialogue_id": "5-511",
            "dialogue": ["W: Tea?", "M: Coffee, please."],
            "question": "What does the man want?",
            "choice": ["Coffee", "Tea", "Water"],
            "answer": "Coffee",
        },
    ]
    path = tmp_path / "dream.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    data = load_hub("dream", data_files=str(path))
    assert [q.answer for q in data.qa] == ["B", "A"]
    assert data.qa[0].context == "M: Is the shop open?\nW: Yes, until nine." and data.qa[0].style == "dialogue"
    assert data.sentences[1] == "W: Tea?\nM: Coffee, please."
    assert (
        data.qa[0]
        .prompt("CTX")
        .startswith("Dialogue:\nCTX\nQuestion: Until when is the shop open?\nChoices: (A)Eight (B)Nine (C)Ten\n")
    )


def test_aqua_loader_on_a_local_file(tmp_path):
    records = [
        {
            "question": "A car goes 60 km in 1.5 hours. Speed?",
            "options": ["A)30", "B)40", "C)45", "D)50", "E)90"],
            "rationale": "60/1.5 = 40",
            "correct": "B",
        }
    ]
    path = tmp_path / "aqua.jsonl"
    path.write_text(json.dumps(records[0]) + "\n")
    data = load_hub("aqua", data_files=str(path))
    q = data.qa[0]
    assert q.choices == ["30", "40", "45", "50", "90"] and q.answer == "B" and q.style == "aqua"
    assert q.prompt("SCR Q?", likelihood=False).endswith("Question: SCR Q?\nChoices: (A)30 (B)40 (C)45 (D)50 (E)90\nAnswer:")


def test_realtimeqa_file_loader(tmp_path):
    lines = [
        {
            "question_id": "1",
            "question_sentence": "Which city hosted the fair?",
            "choices": ["Oslo", "Rome", "Lima", "Kyiv"],
            "answer": ["2"],
            "evidence": "<p>The fair took place in   Lima</p> this week",
        },
        {"question_id": "2", "question_sentence": "Skipped?", "choices": ["a", "b", "c", "d"], "answer": ["0"], "evidence": ""},
    ]
    path = tmp_path / "20230317_qa.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    for src in (str(path), str(tmp_path)):
        data = load_realtimeqa(src)
        assert data.sentences == ["The fair took place in Lima this week."]
        assert len(data.qa) == 1 and data.qa[0].answer == "C" and data.qa[0].choices[2] == "Lima"
    with pytest.raises(UsageError, match="RealtimeQA"):
        load_realtimeqa(str(tmp_path / "missing.jsonl"))


@pytest.mark.parametrize(
    "content,message",
    [
        (b"\x89PNG\r\n\x1a\n\x00\xff\xfe", "not a text file"),
        (b"question,choices,answer\nWho?,a|b,0\n", "not JSON lines"),
        (b"[1, 2, 3]\n", "must be a JSON object"),
        (json.dumps({"question_sentence": "Who?", "evidence": "Some text."}).encode() + b"\n", "record 1 of"),
        (json.dumps({"title": "no evidence here"}).encode() + b"\n", "no record with an evidence text"),
    ],
)
def test_a_file_source_that_is_not_realtimeqa_is_a_one_line_usage_error(tmp_path, content, message):
    path = tmp_path / "data.jsonl"
    path.write_bytes(content)
    with pytest.raises(UsageError, match=re.escape(message)) as e:
        load_realtimeqa(str(path))
    assert "\n" not in str(e.value)


def test_config_errors_are_one_line_usage_errors():
    with pytest.raises(UsageError, match="types"):
        parse_config(ScrambledText, ["types=random_30"])
    with pytest.raises(UsageError, match="shots"):
        parse_config(ScrambledText, ["shots=2"])
    with pytest.raises(UsageError, match="source"):
        parse_config(ScrambledText, ["source=web"])
    cfg = parse_config(ScrambledText, ["types=keepfirst,random_100", "subtasks=rec", "n_max=3"])
    assert cfg.types == ["keepfirst", "random_100"] and cfg.subtasks == ["rec"] and cfg.n_max == 3


# Tiny models -------------------------------------------------------------------------------


def tiny(kind):
    # Scrambled words tokenise into many pieces with the tiny tokenizer: give the models room.
    longer = {"gpt2": {"n_positions": 1024}}.get(kind, {"max_position_embeddings": 1024})
    return from_hf(tiny_model(kind, **longer), tiny_tokenizer(), spec=f"tiny-{kind}")


def test_word_positions_are_the_last_token_of_the_word():
    tok = tiny_tokenizer()
    prompts = ["Yesterday I saw the kitchen near the old station.", "Yesterday I saw the ktchein near the old station."]
    spans = [(20, 27), (20, 27)]
    for p, pos, (a, b) in zip(prompts, last_token_positions(tok, prompts, spans), spans):
        s, e = tok(p, return_offsets_mapping=True)["offset_mapping"][pos]
        assert e == b and a <= s < b


@pytest.mark.parametrize("kind", ["llama", "gpt2", "gpt_neox", "qwen2"])
def test_all_subtasks_on_tiny_models(kind, tmp_path):
    model = tiny(kind)
    ctx = RunContext(model=model, show_progress=False, artifacts_dir=tmp_path, log_samples=True)
    config = ScrambledText.Config(n_max=6, max_new_tokens=6, probe_words=4, types=["random_100", "keepfirstlast"])
    result = ScrambledText().run(model, config, ctx)
    m = result.metrics
    for t in config.types:
        assert m[f"recovery_rate_{t}"].n == 6 and np.isfinite(m[f"recovery_rate_{t}"].value)
        assert m[f"prefer_original_{t}"].n == 6 and m[f"recovery_pref_{t}"].n == 6
        assert t in result.details["qa_rpg"]
        rpg = result.details["qa_rpg"][t]
        assert (rpg is None and f"qa_rpg_{t}" not in m) or (np.isfinite(rpg) and m[f"qa_rpg_{t}"].value == pytest.approx(rpg))
    for c in ("original", "substituted"):
        assert m[f"qa_accuracy_{c}"].n == 6
    probe = result.details["probe"]
    for key, curve in probe["per_layer"].items():
        assert len(curve) == model.n_layers and all(np.isfinite(curve))
    for v in ("keepfirstlast", "random_100"):
        assert all(L in range(model.n_layers) for L in probe["layer_by_half"][f"restoration_cos_{v}"])
        assert m[f"restoration_probe_acc_{v}"].n == 4  # a word in its 10 contexts is one unit
    assert {"recovery_rate.png", "restoration_layers.png"} <= set(ctx.artifacts)
    assert any(s["subtask"] == "rec" and "recovered" in s for s in ctx.samples)


def test_results_file_written_by_the_runner_validates_and_carries_the_reference(tmp_path):
    import jsonschema

    from harness.results import SCHEMA_PATH
    from harness.run.runner import RunSpec, run_task

    model = tiny("llama")
    config = ScrambledText.Config(n_max=4, max_new_tokens=4, probe_words=4, probe_layers=[0, 1], types=["random_100"])
    path = tmp_path / "scrambled_text.json"
    run_task(model, ScrambledText, config, path, RunSpec(models=["tiny"], tasks=["scrambled_text"], bootstrap=200))
    data = json.loads(path.read_text())
    jsonschema.validate(data, json.loads(SCHEMA_PATH.read_text()))
    results = Results.model_validate(data)
    assert data["task"]["name"] == "scrambled_text" and data["task"]["config"]["probe_words"] == 4
    assert {
        "recovery_rate_random_100",
        "qa_accuracy_original",
        "prefer_original_random_100",
        "restoration_cos_random_100",
    } <= set(results.metrics)
    assert results.metrics["restoration_cos_random_100"].n == 4  # a word is one unit
    assert any("layer that scored best on the other half" in n for n in results.notes)
    assert results.reference.metrics["gpt-4-0314"]["recovery_rate_random_100"] == 96.0
    assert results.reference.metrics["meta-llama/Llama-2-7b-hf"]["recovery_rate_random_50"] == -64.2
    assert "qa_rpg_random_100" in results.reference.metrics["gpt-4-0314@dream"]
    assert (tmp_path / "scrambled_text" / "restoration_layers.png").exists()


def test_unparsed_generated_answers_are_counted_in_the_notes():
    """A model that ends every answer at once names no letter: every answer counts as wrong, and the notes say how many."""
    import torch

    model = tiny("llama")
    eos = model.tokenizer.eos_token_id
    hook = model.hf.lm_head.register_forward_hook(
        lambda m, i, o: o.index_add(-1, torch.tensor([eos]), torch.full((*o.shape[:-1], 1), 1e4))
    )
    try:
        ctx = RunContext(model=model, show_progress=False)
        config = ScrambledText.Config(n_max=5, subtasks=["qa"], types=["random_100"], qa_scoring="generate")
        result = ScrambledText().run(model, config, ctx)
    finally:
        hook.remove()
    assert result.details["qa_unparsed"] == {"original": 5, "random_100": 5, "substituted": 5}
    assert result.metrics["qa_accuracy_original"].value == 0
    assert any(n.startswith("qa_scoring=generate: 15 of 15 answers name no option letter") for n in result.notes)


def test_qa_scores_the_answer_letter_by_likelihood():
    """With an extreme bias toward one letter, accuracy equals that letter's share of the answers."""
    import torch

    model = tiny("llama")
    from tasks.scrambled_text import option_tokens

    ids, _ = option_tokens(model.tokenizer, 3)
    # push the B logit far up whatever the state
    hook = model.hf.lm_head.register_forward_hook(
        lambda m, i, o: o.index_add(-1, torch.tensor([ids[1]]), torch.full((*o.shape[:-1], 1), 1e4))
    )
    try:
        ctx = RunContext(model=model, show_progress=False)
        result = ScrambledText().run(model, ScrambledText.Config(n_max=30, subtasks=["qa"], types=["random_100"]), ctx)
    finally:
        hook.remove()
    share_b = np.mean([q.answer == "B" for q in load_sample().qa[:30]])
    assert result.metrics["qa_accuracy_original"].value == pytest.approx(share_b)
    assert result.metrics["qa_accuracy_substituted"].value == pytest.approx(share_b)
