"""The run context's primitives on tiny random models: each against a plain, unbatched reference."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from harness import Edit, RunContext, UsageError
from harness.engine.generation import cut_at_stop
from harness.engine.models import from_hf
from tests.tiny_models import tiny_model, tiny_tokenizer

TEXTS = [
    "Mary went to the kitchen.",
    "The apple",
    "If all cats are animals and Tom is a cat, then Tom is an animal.",
    "Paris is the capital of France. Berlin is the capital of Germany.",
    "It is true.",
]


def context(kind: str = "llama", batch_size: int | str = 2, **kw) -> RunContext:
    model = from_hf(tiny_model(kind), tiny_tokenizer(), spec=f"tiny-{kind}")
    return RunContext(model=model, batch_size=batch_size, show_progress=False, **kw)


@pytest.mark.parametrize("kind", ["llama", "gpt2", "gemma3_text"])
def test_loglikelihood_equals_the_sum_of_token_logprobs_of_an_unbatched_forward(kind):
    ctx = context(kind, batch_size=3)
    tok = ctx.model.tokenizer
    contexts = ["Mary went to the", "The", "If all cats are animals and Tom is a cat, then", "Paris is", "It"]
    continuations = [" kitchen.", " apple is in the kitchen", " Tom is an animal.", " the capital", " is true."]
    got = ctx.loglikelihood(contexts, continuations)
    for i, (c, x) in enumerate(zip(contexts, continuations)):
        ctx_ids = tok(c)["input_ids"]
        ids = tok(c + x)["input_ids"]
        assert ids[: len(ctx_ids)] == ctx_ids
        with torch.no_grad():
            lp = ctx.model.hf(torch.tensor([ids])).logits[0].float().log_softmax(-1)
        cont = range(len(ctx_ids), len(ids))
        want = sum(float(lp[t - 1, ids[t]]) for t in cont)
        greedy = all(int(lp[t - 1].argmax()) == ids[t] for t in cont)
        assert got.logprob[i] == pytest.approx(want, abs=1e-4)
        assert got.is_greedy[i] == greedy and got.n_tokens[i] == len(cont)


@pytest.mark.parametrize("kind", ["llama", "gpt2", "gemma3_text", "bloom", "opt"])
def test_shared_contexts_are_run_once_and_give_the_whole_rows_numbers(kind):
    """Few-shot multiple choice: one shared demonstration prefix, several candidates per question."""
    from harness.engine.scoring import loglikelihood, request_tokens, shared_context_plan

    ctx = context(kind, batch_size=4)
    model = ctx.model
    shots = "Q: Is a cat an animal? A: yes\nQ: Is a rock alive? A: no\nQ: Is Paris in France? A: yes\n"
    questions = [f"Q: Is {x} a number? A:" for x in ("seven", "blue", "the moon", "twelve", "ten and two")]
    candidates = [" yes", " no", " maybe not"]
    contexts = [shots + q for q in questions for _ in candidates]
    continuations = candidates * len(questions)
    sequences, cont_len = request_tokens(model.tokenizer, contexts, continuations)
    plan = shared_context_plan(sequences, cont_len)
    assert plan is not None and len(set(plan)) == 1  # the demonstrations, shared by all 15 rows
    processed = model.tokens_processed
    reused = loglikelihood(model, contexts, continuations, batch_size=4)
    reused_tokens, processed = model.tokens_processed - processed, model.tokens_processed
    whole = loglikelihood(model, contexts, continuations, batch_size=4, reuse=False)
    whole_tokens = model.tokens_processed - processed
    if kind == "gemma3_text":  # its 4-token sliding window: padding inside a row would change what it sees
        assert reused_tokens == whole_tokens
    else:
        assert reused_tokens < 0.6 * whole_tokens
    np.testing.assert_allclose(reused.logprob, whole.logprob, atol=1e-4, rtol=1e-5)
    assert np.array_equal(reused.is_greedy, whole.is_greedy)
    # Per-context sharing (no common demonstrations, many candidates each) gives the same numbers too.
    many = [f" {w}" for w in ("yes", "no", "maybe", "never", "always", "perhaps", "surely", "rarely")]
    contexts = [q for q in ("Mary went to the kitchen and then to the", "The apple is on the table in the") for _ in many]
    sequences, cont_len = request_tokens(model.tokenizer, contexts, many * 2)
    plan = shared_context_plan(sequences, cont_len)
    assert plan is not None and len(set(plan)) == 2
    np.testing.assert_allclose(
        loglikelihood(model, contexts, many * 2, batch_size=3).logprob,
        loglikelihood(model, contexts, many * 2, batch_size=3, reuse=False).logprob,
        atol=1e-4,
    )


def test_shared_context_plan_declines_where_reuse_does_not_pay():
    from harness.engine.scoring import shared_context_plan

    distinct = [[1, 2 + i, 3 + i, 4, 9] for i in range(20)]  # short, different contexts, one candidate each
    assert shared_context_plan(distinct, [1] * 20) is None
    assert shared_context_plan([[1, 2, 3]], [1]) is None


def test_loglikelihood_of_token_ids_and_its_greedy_flag():
    ctx = context()
    bos = ctx.model.tokenizer.bos_token_id
    prompt = ctx.model.tokenizer("Mary went to the", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logits = ctx.model.hf(torch.tensor([[bos] + prompt])).logits[0]
    best = int(logits[-1].argmax())
    worst = int(logits[-1].argmin())
    out = ctx.loglikelihood([[bos] + prompt] * 2, [[best], [worst]])
    assert out.is_greedy.tolist() == [True, False]
    from harness.engine.scoring import loglikelihood

    beside_longer = loglikelihood(ctx.model, [[bos] + prompt] * 2, [[best], [worst, best, best]], batch_size=2, reuse=False)
    assert beside_longer.is_greedy.tolist() == [True, False]  # the longer row's positions are not the short row's
    assert beside_longer.logprob[0] == pytest.approx(out.logprob[0], abs=1e-5)
    assert out.logprob[0] == pytest.approx(float(logits[-1].log_softmax(-1)[best]), abs=1e-5)
    with pytest.raises(ValueError, match="non-empty"):
        ctx.loglikelihood(["x"], [[]])


def test_loglikelihood_respects_edits_in_force():
    ctx = context()
    plain = ctx.loglikelihood(TEXTS[:2], [" a", " b"]).logprob
    with ctx.intervene([Edit("resid_post.1", "scale", 0.0, position="all")]):
        edited = ctx.loglikelihood(TEXTS[:2], [" a", " b"]).logprob
    assert not np.allclose(plain, edited)
    assert np.array_equal(ctx.loglikelihood(TEXTS[:2], [" a", " b"]).logprob, plain)


def test_greedy_generate_matches_an_argmax_loop():
    ctx = context(batch_size=3)
    tok = ctx.model.tokenizer
    got = ctx.generate(TEXTS, max_new_tokens=5)
    for text, out in zip(TEXTS, got):
        ids = tok(text)["input_ids"]
        for _ in range(5):
            with torch.no_grad():
                ids.append(int(ctx.model.hf(torch.tensor([ids])).logits[0, -1].argmax()))
        assert out == tok.decode(ids[-5:], skip_special_tokens=True)


def test_sampling_is_reproducible_for_a_seed_and_leaves_the_global_rng_alone():
    ctx = context()
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a = ctx.generate(TEXTS, max_new_tokens=8, temperature=1.5, seed=7)
    assert torch.equal(torch.get_rng_state(), state)
    b = ctx.generate(TEXTS, max_new_tokens=8, temperature=1.5, seed=7)
    c = ctx.generate(TEXTS, max_new_tokens=8, temperature=1.5, seed=8)
    greedy = ctx.generate(TEXTS, max_new_tokens=8)
    assert a == b and a != c and a != greedy


def test_stop_strings_cut_the_continuation():
    ctx = context()
    full = ctx.generate(TEXTS, max_new_tokens=12, temperature=2.0, seed=1)
    stop = next(ch for ch in "e a o i".split() if any(ch in t for t in full))
    cut = ctx.generate(TEXTS, max_new_tokens=12, temperature=2.0, seed=1, stop=[stop])
    for f, c in zip(full, cut):
        assert stop not in c
        assert c == (f[: f.index(stop)] if stop in f else f)
    assert cut_at_stop("one\ntwo", ["\n"]) == "one" and cut_at_stop("abc", ["x", "b"]) == "a"


def test_generate_rejects_a_nan_temperature():
    ctx = context()
    with pytest.raises(ValueError, match="temperature"):
        ctx.generate(TEXTS[:1], temperature=float("nan"))


def test_generate_from_token_ids():
    ctx = context()
    bos = ctx.model.tokenizer.bos_token_id
    assert ctx.generate([[bos]], max_new_tokens=3) == ctx.generate([[bos]], max_new_tokens=3)
    assert len(ctx.generate([[bos], "Mary went"], max_new_tokens=3)) == 2


@pytest.mark.parametrize("kind", ["llama", "opt"])
def test_reduce_mean_equals_the_mean_of_all_positions(kind):
    ctx = context(kind, batch_size=2)
    sites = ["mlp_act.1", "resid_post.2"]
    every = ctx.collect(TEXTS, sites, positions="all")
    means = ctx.collect(TEXTS, sites, positions="all", reduce="mean")
    for s in sites:
        assert means[s].shape == (len(TEXTS), every[s][0].shape[-1])
        for i in range(len(TEXTS)):
            torch.testing.assert_close(means[s][i], every[s][i].mean(0), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="positions='all'"):
        ctx.collect(TEXTS, sites, reduce="mean")


@pytest.mark.parametrize("site", ["resid_post.1", "mlp_act.0"])
def test_stream_yields_exactly_the_real_tokens_of_the_corpus(site):
    ctx = context(batch_size=2)
    tok = ctx.model.tokenizer
    corpus = TEXTS * 3
    batches = list(ctx.stream(iter(corpus), site, max_tokens=6))
    streamed = torch.cat(batches)
    every = ctx.collect(corpus, [site], positions="all")[site]
    # Collected without truncation: the first tokens of each text, special tokens and the first position
    # (BOS, or the attention sink where there is none) dropped, are what stream yields.
    rows = []
    for text, acts in zip(corpus, every):
        ids = tok(text, truncation=True, max_length=6)["input_ids"]
        rows.append(acts[: len(ids)][[j for j, t in enumerate(ids) if t not in tok.all_special_ids and j > 0]])
    expected = torch.cat(rows)
    assert streamed.shape == expected.shape
    # Batches come longest first within a chunk: compare as sets of rows.
    assert torch.allclose(streamed[torch.argsort(streamed[:, 0])], expected[torch.argsort(expected[:, 0])], atol=1e-5)


def test_stream_stops_the_forward_at_the_site():
    ctx = context()
    ran = []
    handle = ctx.model.blocks[2].register_forward_hook(lambda *a: ran.append(1))
    try:
        assert sum(len(b) for b in ctx.stream(TEXTS, "resid_post.0")) > 0
    finally:
        handle.remove()
    assert not ran


def test_dropout_is_on_inside_and_off_again_after_the_block_also_on_an_exception():
    ctx = context("gpt2")
    prompts, ids = TEXTS[:3], [5, 6, 7]
    clean = ctx.score(prompts, ids).logprobs
    with ctx.dropout(0.5) as sites:
        assert sites > 0
        assert not torch.allclose(ctx.score(prompts, ids).logprobs, clean)
    assert torch.equal(ctx.score(prompts, ids).logprobs, clean)
    assert not any(m.training for m in ctx.model.hf.modules())
    with pytest.raises(RuntimeError):
        with ctx.dropout(0.5):
            raise RuntimeError("boom")
    assert not any(m.training for m in ctx.model.hf.modules())
    assert torch.equal(ctx.score(prompts, ids).logprobs, clean)


def test_logits_site_cannot_be_edited():
    ctx = context()
    with pytest.raises(UsageError, match="logits"):
        with ctx.intervene([Edit("logits", "add", 1.0)]):
            pass


def test_figures_and_json_artifacts(tmp_path):
    ctx = context(artifacts_dir=tmp_path)
    fig = ctx.figure(figsize=(2, 2))
    fig.subplots().plot([0, 1], [1, 0])
    ctx.save_figure(fig, "line.png")
    ctx.save_json("numbers.json", {"a": np.float32(0.5), "b": np.arange(3)})
    assert (tmp_path / "line.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((tmp_path / "numbers.json").read_text()) == {"a": 0.5, "b": [0, 1, 2]}
    assert ctx.artifacts == ["line.png", "numbers.json"]
    with pytest.raises(ValueError, match="plain file name"):
        ctx.save_json("../escape.json", {})


def test_metric_resamples_units_and_counts_them():
    ctx = context(bootstrap=500)
    rng = np.random.default_rng(0)
    units = np.repeat(np.arange(10), 20)
    values = rng.normal(size=10)[units] + rng.normal(scale=0.01, size=200)
    by_row = ctx.metric(values)
    by_unit = ctx.metric(values, unit=units)
    assert by_row.n == 200 and by_unit.n == 10
    assert (by_unit.ci_high - by_unit.ci_low) > 3 * (by_row.ci_high - by_row.ci_low)
    assert by_unit.value == by_row.value
