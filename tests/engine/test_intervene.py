"""Interventions change the computation, touch only what they name, and leave nothing behind."""

from __future__ import annotations

import pytest
import torch

from harness.engine.intervene import Edit, intervene
from harness.engine.models import from_hf
from harness.engine.scoring import generate, score
from harness.engine.sites import collect
from tests.tiny_models import tiny_model, tiny_tokenizer

PROMPTS = ["Two days from Monday is", "Three months from May is", "Hello there", "One day from Sunday is"]
TARGETS = list(range(20))


@pytest.fixture(scope="module")
def model():
    return from_hf(tiny_model("llama"), tiny_tokenizer(), spec="tiny-llama")


def n_hooks(model) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.hf.modules())


def test_score_batched_equals_alone(model):
    batched = score(model, PROMPTS, TARGETS, batch_size=4)
    for i, p in enumerate(PROMPTS):
        alone = score(model, [p], TARGETS, batch_size=1)
        torch.testing.assert_close(batched.logits[i], alone.logits[0], atol=1e-4, rtol=1e-4)
    ids = model.tokenizer(PROMPTS[0], return_tensors="pt")
    with torch.no_grad():
        plain = model.hf(**ids).logits[0, -1, TARGETS]
    torch.testing.assert_close(batched.logits[0], plain, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(
    "op,value",
    [
        ("set", torch.ones(64)),
        ("add", 3 * torch.ones(64)),
        ("project_out", torch.randn(2, 64, generator=torch.Generator().manual_seed(0))),
        ("scale", 0.0),
    ],
)
def test_each_op_changes_logits_and_is_fully_undone(model, op, value):
    before = score(model, PROMPTS, TARGETS, batch_size=2).logits
    hooks_before = n_hooks(model)
    with intervene(model, [Edit("resid_post.1", op, value, position="last")]):
        during = score(model, PROMPTS, TARGETS, batch_size=2).logits
    after = score(model, PROMPTS, TARGETS, batch_size=2).logits
    assert (during - before).abs().max() > 1e-3
    assert torch.equal(before, after)  # bit-identical
    assert n_hooks(model) == hooks_before


def test_hooks_removed_on_exception(model):
    before = n_hooks(model)
    with pytest.raises(RuntimeError, match="boom"):
        with intervene(model, [Edit("mlp_act.0", "set", torch.zeros(96), position="all")]):
            raise RuntimeError("boom")
    assert n_hooks(model) == before


def test_edit_touches_only_the_named_position(model):
    clean = collect(model, PROMPTS, ["resid_post.0", "resid_post.2"], positions="all", batch_size=4)
    pos = [1, 2, 0, 3]
    with intervene(model, [Edit("resid_post.0", "set", torch.zeros(64), position=pos)]):
        edited = collect(model, PROMPTS, ["resid_post.0", "resid_post.2"], positions="all", batch_size=4)
    for i, p in enumerate(pos):
        e, c = edited["resid_post.0"][i], clean["resid_post.0"][i]
        assert torch.count_nonzero(e[p]) == 0
        others = [j for j in range(len(c)) if j != p]
        torch.testing.assert_close(e[others], c[others])
        # causal attention: tokens before the edit are unchanged downstream too, later ones change
        torch.testing.assert_close(edited["resid_post.2"][i][:p], clean["resid_post.2"][i][:p])
        assert (edited["resid_post.2"][i][p:] - clean["resid_post.2"][i][p:]).abs().max() > 1e-4


def test_per_prompt_values_follow_prompt_order_not_batch_order(model):
    values = torch.randn(len(PROMPTS), 64, generator=torch.Generator().manual_seed(1))
    with intervene(model, [Edit("resid_post.1", "set", values, position="last")]):
        got = collect(model, PROMPTS, ["resid_post.1"], batch_size=3)["resid_post.1"]
    torch.testing.assert_close(got, values)


def test_patch_from_cached_run_reproduces_the_clean_logits(model):
    clean_prompt, corrupt_prompt = "Two days from Monday is", "Two days from Friday is"
    tok = model.tokenizer
    assert len(tok(clean_prompt)["input_ids"]) == len(tok(corrupt_prompt)["input_ids"])
    cache = collect(model, [clean_prompt], ["resid_post.0"], positions="all")["resid_post.0"]
    clean = score(model, [clean_prompt], TARGETS).logits
    corrupt = score(model, [corrupt_prompt], TARGETS).logits
    with intervene(model, [Edit("resid_post.0", "patch", cache, position="all")]):
        patched = score(model, [corrupt_prompt], TARGETS).logits
    assert (clean - corrupt).abs().max() > 1e-3
    torch.testing.assert_close(patched, clean, atol=1e-5, rtol=1e-5)


def test_dims_restrict_the_edit_to_chosen_neurons(model):
    clean = collect(model, PROMPTS, ["mlp_act.1"], batch_size=4)["mlp_act.1"]
    with intervene(model, [Edit("mlp_act.1", "set", torch.tensor(5.0), position="last", dims=[3, 7])]):
        edited = collect(model, PROMPTS, ["mlp_act.1"], batch_size=4)["mlp_act.1"]
    assert torch.all(edited[:, [3, 7]] == 5.0)
    keep = [j for j in range(clean.shape[1]) if j not in (3, 7)]
    torch.testing.assert_close(edited[:, keep], clean[:, keep])


def test_generation_is_steered_on_every_new_token(model):
    plain = generate(model, PROMPTS, max_new_tokens=5, batch_size=2)
    alone = [generate(model, [p], max_new_tokens=5, batch_size=1)[0] for p in PROMPTS]
    assert plain == alone  # left padding does not change greedy generation
    steer = 8 * model.hf.get_input_embeddings().weight[42]
    with intervene(model, [Edit("resid_post.2", "add", steer, position="all")]):
        steered = generate(model, PROMPTS, max_new_tokens=5, batch_size=2)
    assert steered != plain
    assert generate(model, PROMPTS, max_new_tokens=5, batch_size=2) == plain


@pytest.fixture
def always_reuse(monkeypatch):
    """Reuse every prefix, however small the groups, so the reuse path itself is what runs."""
    import harness.engine.scoring

    monkeypatch.setattr(harness.engine.scoring, "MIN_ROWS_PER_PREFIX", 1)
    monkeypatch.setattr(harness.engine.scoring, "MAX_TOKEN_SHARE_WITH_REUSE", float("inf"))


@pytest.mark.parametrize("model_type", ["llama", "gemma3_text", "gpt2", "bloom", "opt", "gpt_neox", "qwen3", "phi3"])
def test_reused_prefix_scores_like_a_full_run(model_type, always_reuse):
    model = from_hf(tiny_model(model_type), tiny_tokenizer(), spec=f"tiny-{model_type}")
    tok = model.tokenizer
    prompts = [p for p in PROMPTS for _ in range(3)] + ["Two days from Friday is", "Two days from Tuesday is"]
    lengths = [len(tok(p)["input_ids"]) for p in prompts]
    edit_at = [n - 2 for n in lengths]  # the second-to-last token, as a patch of a name before " is"
    values = torch.randn(len(prompts), 64, generator=torch.Generator().manual_seed(2))
    edits = [Edit("resid_post.1", "set", values, position=edit_at)]
    plain = score(model, prompts, TARGETS, batch_size=4)
    reused = score(model, prompts, TARGETS, batch_size=4, prefix_lengths=edit_at)
    torch.testing.assert_close(reused.logits, plain.logits, atol=1e-4, rtol=1e-4)
    with intervene(model, edits):
        plain = score(model, prompts, TARGETS, batch_size=4)
        reused = score(model, prompts, TARGETS, batch_size=4, prefix_lengths=edit_at)
        targets_only = score(model, prompts, TARGETS, batch_size=4, prefix_lengths=edit_at, full_vocab=False)
    torch.testing.assert_close(reused.logits, plain.logits, atol=1e-4, rtol=1e-4)
    assert torch.equal(reused.top_token, plain.top_token)
    torch.testing.assert_close(targets_only.logits, plain.logits, atol=1e-4, rtol=1e-4)
    assert targets_only.logprobs is None and targets_only.top_token is None


@pytest.mark.parametrize("model_type", ["llama", "gemma2", "gemma3_text", "gpt2", "bloom", "opt", "phi"])
@pytest.mark.parametrize("deferred", [False, True])
def test_target_only_logits_equal_the_full_logits(model_type, deferred, monkeypatch):
    """Gemma's final softcap and biased unembeddings included; the full vocabulary unembedded per batch
    (small unembeddings) or after all batches, many rows at a time (large ones)."""
    import harness.engine.scoring

    monkeypatch.setattr(harness.engine.scoring, "DEFERRED_HEAD_MIN_BYTES", 0 if deferred else 2**62)
    monkeypatch.setattr(harness.engine.scoring, "HEAD_ROWS", 3)
    model = from_hf(tiny_model(model_type), tiny_tokenizer(), spec=f"tiny-{model_type}")
    full = score(model, PROMPTS, TARGETS, batch_size=2)
    targets_only = score(model, PROMPTS, TARGETS, batch_size=2, full_vocab=False)
    torch.testing.assert_close(targets_only.logits, full.logits, atol=1e-5, rtol=1e-5)
    for i, prompt in enumerate(PROMPTS):  # the deferred full-vocabulary unembedding is the model's own
        with torch.no_grad():
            own = model.hf(**model.tokenizer(prompt, return_tensors="pt")).logits[0, -1].float()
        torch.testing.assert_close(full.logits[i], own[TARGETS], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(full.logprobs[i], own.log_softmax(-1)[TARGETS], atol=1e-5, rtol=1e-5)
        assert full.top_token[i] == own.argmax()


def test_prefix_reuse_is_used_only_where_it_pays():
    from harness.engine.scoring import reuse_pays

    distinct = [[1, 2, 3, 4 + i, 9] for i in range(90)]  # 90 short prompts, each its own prefix
    assert not reuse_pays(distinct, [4] * 90)
    patching = [[1] + [2] * 20 + [30 + a, 7] for _ in range(7) for a in range(6)]  # long shared prefix, 42 rows
    assert reuse_pays(patching, [21] * len(patching))
    assert not reuse_pays(patching, [1] * len(patching))  # saves almost nothing


def test_scores_are_the_same_whether_or_not_reuse_pays(model):
    prompts = [p for p in PROMPTS for _ in range(3)]
    at = [len(model.tokenizer(p)["input_ids"]) - 1 for p in prompts]
    plain = score(model, prompts, TARGETS, batch_size=4)
    decided = score(model, prompts, TARGETS, batch_size=4, prefix_lengths=at)
    torch.testing.assert_close(decided.logits, plain.logits, atol=1e-4, rtol=1e-4)


def test_an_edit_inside_the_reused_prefix_is_refused(model, always_reuse):
    with intervene(model, [Edit("resid_post.0", "set", torch.zeros(64), position=0)]):
        with pytest.raises(ValueError, match="inside a reused prefix"):
            score(model, PROMPTS, TARGETS, prefix_lengths=[2] * len(PROMPTS))


def test_an_edit_restricted_to_some_prompts_leaves_the_other_rows_as_they_were(model):
    """Two conditions in one request: each row sees exactly its own edit, in scoring and in generation."""
    plain = score(model, PROMPTS, TARGETS, batch_size=4).logits
    forced = [
        Edit("mlp_act.0", "set", torch.full((3,), 4.0), position="all", dims=[1, 5, 9], prompts=[1, 3]),
        Edit("resid_post.0", "scale", 0.0, position="all", prompts=[2]),
    ]
    with intervene(model, forced[:1]):
        alone_a = score(model, PROMPTS, TARGETS, batch_size=4).logits
    with intervene(model, [Edit("resid_post.0", "scale", 0.0, position="all")]):
        alone_b = score(model, PROMPTS, TARGETS, batch_size=4).logits
    with intervene(model, [Edit(e.site, e.op, e.value, e.position, e.dims) for e in forced[:1]]):
        everywhere = score(model, PROMPTS, TARGETS, batch_size=4).logits
    for size in (1, 4):
        with intervene(model, forced):
            mixed = score(model, PROMPTS, TARGETS, batch_size=size).logits
        torch.testing.assert_close(mixed[0], plain[0])
        torch.testing.assert_close(mixed[[1, 3]], everywhere[[1, 3]], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(mixed[2], alone_b[2], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(alone_a[1], plain[1]) and not torch.allclose(alone_b[2], plain[2])
    texts = generate(model, PROMPTS, 5, batch_size=4)
    with intervene(model, forced[:1]):
        edited = generate(model, PROMPTS, 5, batch_size=4)
    with intervene(model, [Edit(e.site, e.op, e.value, e.position, e.dims) for e in forced[:1]]):
        edited_all = generate(model, PROMPTS, 5, batch_size=4)
    assert [edited[i] for i in (0, 2)] == [texts[i] for i in (0, 2)]
    assert [edited[i] for i in (1, 3)] == [edited_all[i] for i in (1, 3)]
    assert n_hooks(model) == 0
