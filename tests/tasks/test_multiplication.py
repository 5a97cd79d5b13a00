"""multiplication_digits: generator, digit tokenisation, teacher forcing, oracle stubs, end to end on tiny models."""

from __future__ import annotations

import functools
import json
import re

import jsonschema
import numpy as np
import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from harness.api.context import RunContext
from harness.api.task import parse_config
from harness.engine.models import from_hf
from harness.errors import UsageError
from harness.results import SCHEMA_PATH
from harness.run.cli import main
from harness.run.runner import RunSpec, run_task
from tasks.multiplication import (
    DigitTokenError,
    MultiplicationDigits,
    check_prompts_end_in_equals,
    digit_token_ids,
    forced_context,
    make_problems,
    parse_cells,
    parse_digits,
    render_answer,
    render_prompt,
    resolve_mode,
)
from tests.tiny_models import SPECIAL_TOKENS, tiny_model

BOS = SPECIAL_TOKENS["bos_token"]


def _corpus() -> list[str]:
    rng = np.random.default_rng(123)
    lines = ["The answer is yes. The product of two numbers is a number.", "0123456789 9876543210 =9876543210"] * 20
    for _ in range(600):
        a, b = (int(x) for x in rng.integers(1, 10 ** rng.integers(1, 6, size=2)))
        lines.append(f"{a}*{b}={a * b}")
        lines.append(f"{a} times {b} is {a * b}.")
    return lines


@functools.cache
def _tokenizer_json(split_digits: bool) -> str:
    """A byte-level BPE; split_digits: Llama/Gemma style (each digit a token), else GPT-2 style (digits merge)."""
    tok = Tokenizer(models.BPE(unk_token=SPECIAL_TOKENS["unk_token"]))
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.pre_tokenizer = (
        pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level]) if split_digits else byte_level
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=list(SPECIAL_TOKENS.values()),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(), trainer=trainer)
    tok.post_processor = processors.Sequence(
        [
            processors.ByteLevel(trim_offsets=True),
            processors.TemplateProcessing(single=f"{BOS} $A", special_tokens=[(BOS, tok.token_to_id(BOS))]),
        ]
    )
    return tok.to_str()


def make_tokenizer(split_digits: bool) -> PreTrainedTokenizerFast:
    return PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(_tokenizer_json(split_digits)), padding_side="left", **SPECIAL_TOKENS
    )


def tiny(model_type: str, split_digits: bool, seed: int = 0):
    tok = make_tokenizer(split_digits)
    ids = dict(vocab_size=len(tok), bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    return from_hf(tiny_model(model_type, seed, **ids), tok, spec=f"tiny-{model_type}")


@pytest.fixture(scope="module")
def llama():
    return tiny("llama", split_digits=True)


@pytest.fixture(scope="module")
def gpt2():
    return tiny("gpt2", split_digits=False)


def ctx_for(model, tmp_path=None, **kw) -> RunContext:
    return RunContext(model=model, show_progress=False, artifacts_dir=tmp_path, **kw)


# 1. Generator.
def test_generator_is_deterministic_with_exact_digit_lengths():
    for n, m in parse_cells(["grid"]):
        problems = make_problems(n, m, 300, np.random.default_rng([0, n, m]))
        assert problems == make_problems(n, m, 300, np.random.default_rng([0, n, m]))
        for p in problems:
            assert len(str(p.a)) == n and len(str(p.b)) == m
            assert p.product == str(p.a * p.b) and len(p.product) >= 2
    ones = make_problems(1, 1, 300, np.random.default_rng(0))
    assert min(p.a * p.b for p in ones) >= 10 and len({(p.a, p.b) for p in ones}) > 30
    assert make_problems(3, 3, 50, np.random.default_rng(1)) != make_problems(3, 3, 50, np.random.default_rng(2))
    assert len(parse_cells(["grid"])) == 25 and parse_cells(["2x2", "5x5"]) == [(2, 2), (5, 5)]


def test_cells_keep_their_problems_whatever_else_is_run(llama):
    config = MultiplicationDigits.Config(cells=["3x3"], n_per_cell=4, probe=False)
    alone = MultiplicationDigits().run(llama, config, ctx_for(llama, log_samples=True))
    ctx = ctx_for(llama, log_samples=True)
    MultiplicationDigits().run(llama, MultiplicationDigits.Config(cells=["2x2", "3x3"], n_per_cell=4, probe=False), ctx)
    both = [(s["a"], s["b"]) for s in ctx.samples if s["cell"] == "3x3"]
    assert both == [(e["a"], e["b"]) for e in _samples(llama, config)]
    assert alone.details["cells"] == ["3x3"]


def _samples(model, config, seed=0):
    ctx = ctx_for(model, log_samples=True, seed=seed)
    MultiplicationDigits().run(model, config, ctx)
    return ctx.samples


def test_run_seed_changes_the_problems(llama):
    config = MultiplicationDigits.Config(cells=["4x4"], n_per_cell=5, probe=False)
    assert _samples(llama, config, 0) == _samples(llama, config, 0)
    assert [s["a"] for s in _samples(llama, config, 0)] != [s["a"] for s in _samples(llama, config, 1)]


@pytest.mark.parametrize(
    "arg,message",
    [
        ("cells=3by3", "is not NxM"),
        ("template={a}*{b}", "must end with '='"),
        ("template={a}=", "missing {b}"),
        ("template={a}*{b}*{c}=", "unknown field(s) {c}"),
        ("template={a}*{b}}=", "Single '}'"),
        ("probe_n=5", "needs probe_n >= 10"),
        ("probe_layers=first", "expected all or list of int"),
        ("digit_scoring=chars", "choose one of"),
        ("batch_size=big", "has no option 'batch_size'"),
        ("mc_dropout_p=1.5", "needs mc_dropout_p < 1"),
        ("mc_dropout_p=nan", "finite"),
        ("n_per_cell=0", "needs n_per_cell >= 1"),
        ("cells=2x2,,3x3", "without empty items"),
    ],
)
def test_bad_options_are_one_line_errors(arg, message):
    with pytest.raises(UsageError, match=re.escape(message)) as e:
        parse_config(MultiplicationDigits, [arg])
    assert "\n" not in str(e.value)


def test_template_error_exits_2_on_the_command_line(capsys, tmp_path):
    code = main(["run", "--task", "multiplication_digits", "--task-arg", "template={a} times {b}", "--output-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and "must end with '='" in err and len(err.strip().splitlines()) == 1


def test_prompt_must_end_in_an_equals_token(llama):
    check_prompts_end_in_equals(llama.tokenizer, ["12*34=", "1 2 * 3 4 ="])
    with pytest.raises(UsageError, match="does not end in a '=' token"):
        check_prompts_end_in_equals(llama.tokenizer, ["12*34"])


# 2. Tokenisation modes.
def test_auto_resolves_by_tokenizer(llama, gpt2):
    assert resolve_mode(llama.tokenizer, "auto")[0] == "teacher_forced"
    assert resolve_mode(gpt2.tokenizer, "auto")[0] == "generate"
    assert len(set(resolve_mode(llama.tokenizer, "auto")[1])) == 10
    with pytest.raises(UsageError, match="digit_scoring=spaced or generate"):
        resolve_mode(gpt2.tokenizer, "teacher_forced")


def test_auto_falls_back_when_products_merge_although_the_digit_strings_split():
    # A BPE that learnt only "00" and "000": "0123456789" and "=9876543210" split, 100*10=1000 does not.
    bpe = Tokenizer(models.BPE(unk_token=SPECIAL_TOKENS["unk_token"]))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=263,
        special_tokens=list(SPECIAL_TOKENS.values()),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(["1000 2000 3000000"] * 50, trainer=trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, **SPECIAL_TOKENS)
    assert digit_token_ids(tok, spaced=False) is not None
    assert resolve_mode(tok, "auto")[0] == "teacher_forced"  # the two digit strings alone would allow it
    prompts, products = ["12*34=", "100*10="], ["408", "1000"]
    assert resolve_mode(tok, "auto", prompts[:1], products[:1])[0] == "teacher_forced"
    assert resolve_mode(tok, "auto", prompts, products)[0] == "generate"
    with pytest.raises(UsageError, match="inside token"):
        resolve_mode(tok, "teacher_forced", prompts, products)


def test_spaced_gives_gpt2_one_token_per_answer_digit(gpt2):
    tok = gpt2.tokenizer
    mode, ids = resolve_mode(tok, "spaced")
    assert mode == "spaced" and len(set(ids)) == 10
    rng = np.random.default_rng(7)
    for n, m in [(2, 3), (4, 4), (5, 5), (1, 5)]:
        for p in make_problems(n, m, 25, rng):
            prompt = render_prompt("{a}*{b}=", "", p.a, p.b, spaced=True)
            assert prompt.endswith(" =") and " * " in prompt
            text = prompt + render_answer(p.product, spaced=True)
            enc = tok(text, return_offsets_mapping=True)
            answer_tokens = [i for i, (s, e) in zip(enc["input_ids"], enc["offset_mapping"]) if s >= len(prompt) and e > s]
            assert [tok.decode([i]).strip() for i in answer_tokens] == list(p.product)
            for k in range(len(p.product)):
                forced_context(tok, prompt, p.product, k, True, ids)


def test_a_merged_token_is_never_scored_as_a_digit(gpt2):
    tok = gpt2.tokenizer
    ids = digit_token_ids(tok, spaced=True)  # the spaced digit tokens exist; unspaced answers merge
    rng = np.random.default_rng(3)
    refused = 0
    for p in make_problems(3, 3, 40, rng):
        for k in range(len(p.product)):
            try:
                ctx = forced_context(tok, f"{p.a}*{p.b}=", p.product, k, False, ids)
            except DigitTokenError:
                refused += 1
                continue
            # Accepted only when the digit really is a token of its own, written with no space.
            enc = tok(f"{p.a}*{p.b}={p.product}", return_offsets_mapping=True)
            assert any(s == len(ctx) and e == len(ctx) + 1 for s, e in enc["offset_mapping"])
    assert refused > 20


# 3. Teacher forcing feeds prompt + P[:-1] and scores its last position.
def test_teacher_forced_contexts_are_the_prefix_and_score_its_last_token(llama):
    tok = llama.tokenizer
    _, ids = resolve_mode(tok, "teacher_forced")
    problems = make_problems(3, 4, 50, np.random.default_rng(11))
    prompts = [render_prompt("{a}*{b}=", "", p.a, p.b, False) for p in problems]
    contexts = [forced_context(tok, q, p.product, len(p.product) - 1, False, ids) for q, p in zip(prompts, problems)]
    for q, p, c in zip(prompts, problems, contexts):
        fed = tok(c)["input_ids"]
        assert c == q + p.product[:-1] and tok.decode(fed, skip_special_tokens=True) == q + p.product[:-1]
        assert fed == tok(q + p.product)["input_ids"][:-1]  # everything but the units-digit token
    scores = ctx_for(llama).score(contexts, ids)
    for i in (0, 17, 49):
        full = torch.tensor([tok(prompts[i] + problems[i].product)["input_ids"]])
        with torch.no_grad():
            logits = llama.hf(full).logits[0, -2, ids]  # the position that predicts the last token
        assert torch.allclose(scores.logits[i], logits, atol=1e-4)


# 4. Oracle stubs: a model that knows the answer, and one that always says 0.
class Oracle:
    """Hooks a tiny model so its logits put +20 on the right next digit of 'a*b=' + prefix (EOS when done)."""

    def __init__(self, model, always: str | None = None):
        self.model, self.always, self.history = model, always, None
        tok = model.tokenizer
        self.digit = {d: tok.convert_tokens_to_ids(d) for d in "0123456789"}
        self.handles = [model.hf.register_forward_pre_hook(self.pre, with_kwargs=True), model.hf.register_forward_hook(self.post)]

    def pre(self, module, args, kwargs):
        ids = kwargs["input_ids"]
        cache = kwargs.get("past_key_values", kwargs.get("cache"))  # renamed in transformers 5
        cached = cache is not None and cache.get_seq_length() > 0
        self.history = torch.cat([self.history, ids], 1) if cached else ids

    def next_token(self, row: torch.Tensor) -> int:
        tok = self.model.tokenizer
        if self.always is not None:
            return tok.convert_tokens_to_ids(self.always)
        text = tok.decode(row, skip_special_tokens=True)
        match = re.search(r"(\d+)\*(\d+)=(\d*)$", text)
        if not match:
            return tok.eos_token_id
        product, prefix = str(int(match.group(1)) * int(match.group(2))), match.group(3)
        done = len(prefix) >= len(product)
        return tok.eos_token_id if done else self.digit[product[len(prefix)]]

    def post(self, module, args, output):
        logits = torch.zeros_like(output.logits)
        for r in range(logits.shape[0]):
            logits[r, :, self.next_token(self.history[r])] = 20.0
        output.logits = logits
        return output

    def remove(self):
        for h in self.handles:
            h.remove()


@pytest.fixture()
def oracle_model():
    model = tiny("llama", split_digits=True, seed=5)
    yield model


def test_oracle_gets_everything_right(oracle_model):
    stub = Oracle(oracle_model)
    try:
        config = MultiplicationDigits.Config(cells=["1x2", "3x3", "5x5"], n_per_cell=12, probe=False)
        result = MultiplicationDigits().run(oracle_model, config, ctx_for(oracle_model))
    finally:
        stub.remove()
    m = result.metrics
    assert result.details["digit_scoring"] == "teacher_forced"
    for suffix in ("", "@1x2", "@3x3", "@5x5"):
        for key in ("first_digit_acc", "last_digit_acc", "last_digit_acc_lenient", "last_digit_acc_given_prefix"):
            assert m[key + suffix].value == 1.0, key + suffix
        for key in ("first_digit_conf", "last_digit_conf", "last_digit_conf_given_prefix"):
            assert m[key + suffix].value > 0.99, key + suffix
        assert abs(m["conditioning_gain" + suffix].value) < 1e-3


def test_always_zero_scores_the_share_of_products_ending_in_zero(oracle_model):
    stub = Oracle(oracle_model, always="0")
    ctx = ctx_for(oracle_model, log_samples=True)
    try:
        config = MultiplicationDigits.Config(cells=["2x2", "3x2"], n_per_cell=40, probe=False)
        result = MultiplicationDigits().run(oracle_model, config, ctx)
    finally:
        stub.remove()
    products = [s["product"] for s in ctx.samples]
    share = np.mean([P.endswith("0") for P in products])
    assert 0 < share < 1
    assert result.metrics["last_digit_acc_given_prefix"].value == pytest.approx(share)
    assert result.metrics["first_digit_acc"].value == 0.0  # no product starts with 0
    assert result.metrics["last_digit_acc"].value == 0.0  # "0000..." is too long
    assert result.metrics["last_digit_acc_lenient"].value == pytest.approx(share)


# 7. Unparseable generations count as wrong.
def test_unparseable_generations_are_wrong_not_errors(oracle_model):
    assert parse_digits("no digits here", False) == "" and parse_digits(" x 4 0 8 =", True) == "408"
    assert parse_digits("=408.12", False) == "408"
    stub = Oracle(oracle_model, always="*")
    try:
        config = MultiplicationDigits.Config(cells=["2x2"], n_per_cell=10, probe=False)
        result = MultiplicationDigits().run(oracle_model, config, ctx_for(oracle_model))
    finally:
        stub.remove()
    m = result.metrics
    assert m["last_digit_acc"].value == 0 and m["last_digit_acc_lenient"].value == 0 and m["last_digit_conf"].value == 0
    assert "conditioning_gain" not in m  # own confidence 0: the ratio is undefined
    # Both fallbacks are counted in the results' notes, not only in a docstring.
    assert "10 of 10 generations contain no digit" in " ".join(result.notes)
    assert "last_digit_conf: 10 of 10 own answers stop before the units digit; their confidence is 0" in result.notes
    assert result.details["own_conf_zero"] == {"short": 10, "untokenisable": 0}


def test_an_untokenisable_own_answer_is_counted_in_the_notes(oracle_model, monkeypatch):
    import tasks.multiplication.task as mult

    real = mult.forced_context

    def refuse_own(tok, prompt, digits, k, spaced, ids):
        a, b = re.fullmatch(r"(\d+)\*(\d+)=", prompt).groups()
        if digits != str(int(a) * int(b)):  # the model's own digits, not the true product
            raise DigitTokenError("merged")
        return real(tok, prompt, digits, k, spaced, ids)

    stub = Oracle(oracle_model, always="9")  # own answers 99..9, which this tokenizer stub refuses to split
    monkeypatch.setattr(mult, "forced_context", refuse_own)
    try:
        config = MultiplicationDigits.Config(cells=["2x2"], n_per_cell=10, probe=False)
        result = MultiplicationDigits().run(oracle_model, config, ctx_for(oracle_model))
    finally:
        stub.remove()
    assert result.details["own_conf_zero"] == {"short": 0, "untokenisable": 10}
    assert result.metrics["last_digit_conf"].value == 0
    assert any(n.startswith("last_digit_conf: 10 of 10 own answers cannot be tokenised") for n in result.notes)


def test_every_probe_control_is_reported_at_its_own_best_layer(llama, monkeypatch):
    """The shuffled control peaks at layer 2 and the real probe at layer 0: each is read at its own peak."""
    import probes.linear as linear
    from probes.linear import ProbeCV

    accuracy = {  # (layer, label) -> held-out accuracy of the fake probe
        (0, "last_digit"): 0.9,
        (2, "last_digit"): 0.5,
        (0, "a_last_digit"): 0.2,
        (2, "a_last_digit"): 0.7,
        (0, "b_last_digit"): 0.6,
        (2, "b_last_digit"): 0.6,
        (0, "first_digit"): 0.4,
        (2, "first_digit"): 0.8,
        (0, "shuffled"): 0.1,
        (2, "shuffled"): 0.3,
    }
    calls = iter(
        [(L, name) for L in (0, 2) for name in ("last_digit", "a_last_digit", "b_last_digit", "first_digit", "shuffled")]
    )

    def fake_cv(X, y, n_folds=5, seed=0):
        n_right = int(round(accuracy[next(calls)] * len(y)))
        correct = np.arange(len(y)) < n_right
        return ProbeCV(pred=np.asarray(y), correct=correct, fold=np.zeros(len(y), int), fold_accuracy=[correct.mean()])

    monkeypatch.setattr(linear, "cross_validate_many", lambda problems, n_folds=5, seed=0: [fake_cv(X, y) for X, y in problems])
    config = MultiplicationDigits.Config(cells=["2x2"], n_per_cell=4, probe_n=20, probe_layers=[0, 2])
    result = MultiplicationDigits().run(llama, config, ctx_for(llama))
    m, best = result.metrics, result.details["probe"]["best_layer"]
    assert best == {"last_digit": 0, "a_last_digit": 2, "b_last_digit": 0, "first_digit": 2, "shuffled": 2}
    assert m["probe_last_digit_acc"].value == 0.9 and m["probe_shuffled_acc"].value == pytest.approx(0.3)
    assert m["probe_a_last_digit_acc"].value == pytest.approx(0.7) and m["probe_first_digit_acc"].value == pytest.approx(0.8)
    assert any("maximum over 2 layers" in n for n in result.notes)


# 5. End to end on tiny random models.
@pytest.mark.parametrize(
    "model_type,split", [("llama", True), ("mistral", True), ("qwen2", True), ("gpt2", False), ("gpt_neox", False)]
)
def test_end_to_end_on_tiny_models(model_type, split, tmp_path):
    model = tiny(model_type, split)
    ctx = ctx_for(model, tmp_path)
    layers = [2]  # one layer keeps the file fast; every layer ("all") runs in the results-file test
    config = MultiplicationDigits.Config(n_per_cell=8, probe_n=60, probe_layers=layers)
    result = MultiplicationDigits().run(model, config, ctx)
    m = result.metrics
    assert result.details["digit_scoring"] == ("teacher_forced" if split else "generate")
    assert m["last_digit_acc@5x5"].n == 8 and m["last_digit_acc"].n == 32 and m["probe_last_digit_acc"].n == 60
    assert m["probe_best_layer"].value == 2
    assert m["rep_behaviour_gap"].value == pytest.approx(
        m["probe_last_digit_acc"].value - m["probe_cell_last_digit_acc_given_prefix"].value
    )
    if split:
        assert "last_digit_conf_given_prefix@5x5" in m and "conditioning_gain" in m or m["last_digit_conf"].value == 0
    else:
        assert "first_digit_conf" not in m and "first_digit_conf" in result.details["null_metrics"]
    probe = result.details["probe"]
    requested = [2]
    assert probe["layers"] == requested and len(probe["probe_last_digit_acc_by_layer"]) == len(requested)
    assert all(len(probe[f"{k}_acc_by_layer"]) == len(requested) for k in ("a_last_digit", "shuffled"))
    assert set(result.details["per_cell"]) == {"2x2", "3x3", "4x4", "5x5"}
    assert {"heatmap.png", "probe_layers.png", "probe_layers.json"} <= set(ctx.artifacts)
    assert json.loads((tmp_path / "probe_layers.json").read_text())["layers"] == requested


def test_spaced_mode_runs_with_confidences_on_gpt2(gpt2):
    config = MultiplicationDigits.Config(cells=["2x3"], n_per_cell=6, probe=False, digit_scoring="spaced")
    result = MultiplicationDigits().run(gpt2, config, ctx_for(gpt2))
    assert result.details["digit_scoring"] == "spaced"
    assert 0 <= result.metrics["last_digit_conf_given_prefix@2x3"].value <= 1
    assert result.details["examples"][0]["prompt"].endswith(" =")


def test_probe_layers_subset_and_depth_check(llama):
    config = MultiplicationDigits.Config(cells=["2x2"], n_per_cell=4, probe_n=20, probe_layers=[0, 2])
    result = MultiplicationDigits().run(llama, config, ctx_for(llama))
    assert result.details["probe"]["layers"] == [0, 2]
    assert len(result.details["probe"]["probe_last_digit_acc_by_layer"]) == 2
    assert result.metrics["probe_best_layer"].value in (0, 2)
    with pytest.raises(UsageError, match="past the model's depth"):
        MultiplicationDigits().run(llama, MultiplicationDigits.Config(probe_layers=[0, 3]), ctx_for(llama))


def test_mc_dropout_changes_confidences_and_is_undone(llama):
    ctx = ctx_for(llama)
    prompts = ["12*34=", "56*78=4", "3*9="]
    ids = resolve_mode(llama.tokenizer, "teacher_forced")[1]
    clean = ctx.score(prompts, ids).logprobs
    with ctx.dropout(0.5) as sites:
        assert sites >= llama.n_layers
        torch.manual_seed(0)
        noisy = ctx.score(prompts, ids).logprobs
    assert not torch.allclose(clean, noisy)
    assert torch.equal(ctx.score(prompts, ids).logprobs, clean)
    assert not any(m.training for m in llama.hf.modules())
    config = MultiplicationDigits.Config(cells=["2x2"], n_per_cell=5, probe=False, mc_dropout_samples=3)
    a = MultiplicationDigits().run(llama, config, ctx_for(llama)).metrics
    b = MultiplicationDigits().run(llama, config, ctx_for(llama)).metrics
    plain = (
        MultiplicationDigits()
        .run(llama, MultiplicationDigits.Config(cells=["2x2"], n_per_cell=5, probe=False), ctx_for(llama))
        .metrics
    )
    assert a == b  # seeded
    assert a["first_digit_conf"].value != plain["first_digit_conf"].value
    assert a["first_digit_acc"] == plain["first_digit_acc"]  # accuracies stay deterministic


# 8. Results file.
def test_results_file_validates_and_carries_the_reference(llama, tmp_path):
    config = MultiplicationDigits.Config(cells=["2x2", "5x5"], n_per_cell=6, probe_n=30)
    path = tmp_path / "multiplication_digits.json"
    run_task(llama, MultiplicationDigits, config, path, RunSpec(models=["tiny"], tasks=["multiplication_digits"]))
    data = json.loads(path.read_text())
    jsonschema.validate(data, json.loads(SCHEMA_PATH.read_text()))
    ref = data["reference"]["metrics"]
    assert ref["meta-llama/Llama-2-13b-hf"]["last_digit_conf@5x5"] == 0.13
    assert ref["meta-llama/Llama-2-13b-hf"]["last_digit_conf_given_prefix@5x5"] == 0.43
    assert ref["mistralai/Mistral-7B-v0.1"]["last_digit_conf@5x5"] == 0.22
    assert ref["mistralai/Mistral-7B-v0.1"]["last_digit_conf_given_prefix@5x5"] == 0.55
    for key in ("last_digit_conf@5x5", "last_digit_conf_given_prefix@5x5"):  # our number beside the paper's
        assert key in data["metrics"] and key in data["reference"]["notes"]
    assert ("conditioning_gain@5x5" in data["metrics"]) == (data["metrics"]["last_digit_conf@5x5"]["value"] > 0)
    assert data["details"]["digit_scoring"] == "teacher_forced" and data["details"]["headline_cell"] == "5x5"
    assert data["details"]["probe"]["layers"] == list(range(llama.n_layers))  # probe_layers=all
    assert len(data["details"]["probe"]["probe_last_digit_acc_by_layer"]) == llama.n_layers
    assert (tmp_path / "multiplication_digits" / "heatmap.png").exists()


def test_the_paired_gap_skips_own_answers_that_were_never_scored():
    """A random-weight model's answers stop short: their own confidence is a 0 put in, not measured, and pairing
    it with the given-prefix probability (1/vocab) would hand the null model a 'holds' (as it once did)."""
    from dataclasses import asdict

    from harness.api.context import RunContext
    from harness.report.findings import HOLDS, TOO_FEW, parse_finding, verdict
    from tasks.multiplication.problems import Problem
    from tasks.multiplication.task import MultiplicationDigits

    rng = np.random.default_rng(0)
    problems = [Problem(5, 5, int(rng.integers(10_000, 99_999)), int(rng.integers(10_000, 99_999))) for _ in range(60)]
    given = rng.random(60) * 1e-3 + 2e-5
    values = {
        "last_digit_conf_given_prefix": given,
        "last_digit_conf": np.zeros(60),
        "own_conf_status": np.array(["short"] * 50 + ["scored"] * 10, dtype=object),
    }
    values["last_digit_conf"][50:] = given[50:][::-1]  # the scored ones: no better or worse given the prefix
    for key in ("first_digit_acc", "first_digit_conf", "last_digit_acc", "last_digit_acc_lenient", "last_digit_acc_given_prefix"):
        values[key] = np.zeros(60)
    unmeasured: dict[str, str] = {}
    metrics = MultiplicationDigits.behaviour_metrics(
        RunContext(model=None, show_progress=False, bootstrap=200),
        values,
        problems,
        "forced",
        suffix="@5x5",
        unmeasured=unmeasured,
    )
    gap = metrics["last_digit_conf_prefix_minus_own@5x5"]
    assert gap.n == 10 and gap.value == pytest.approx(0.0, abs=1e-12) and not unmeasured
    assert verdict(parse_finding(asdict(MultiplicationDigits.finding)), metrics).verdict != HOLDS
    values["own_conf_status"][:] = "short"  # no answer scored: the gap has no unit, and says so
    metrics = MultiplicationDigits.behaviour_metrics(
        RunContext(model=None, show_progress=False, bootstrap=200),
        values,
        problems,
        "forced",
        suffix="@5x5",
        unmeasured=unmeasured,
    )
    assert (
        "last_digit_conf_prefix_minus_own@5x5" not in metrics
        and "units digit" in unmeasured["last_digit_conf_prefix_minus_own@5x5"]
    )
    assert verdict(parse_finding(asdict(MultiplicationDigits.finding)), metrics, unmeasured).verdict == TOO_FEW
