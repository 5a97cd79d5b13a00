"""The benchmarks' own helpers: the prompts they time, the padding bound they print, the random-weight copies."""

from __future__ import annotations

import torch
from safetensors.torch import load_file

from benchmarks.common import _first_end_reaching, mixed_prompts, padded_batches, padding_bound
from benchmarks.random_model import build
from harness.engine.batching import encode, make_batches
from harness.engine.models import load_model
from tests.tiny_models import save_tiny_model, tiny_tokenizer


def test_mixed_prompts_reach_their_lengths_with_the_fewest_words():
    tok = tiny_tokenizer()
    prompts = mixed_prompts(tok, n=12, shortest=5, longest=40)
    lengths = sorted(len(ids) for ids in tok(prompts)["input_ids"])
    targets = [5 + round(i * 35 / 11) for i in range(12)]
    assert all(n >= t for n, t in zip(lengths, targets))
    words = "one two three four five six seven eight nine ten eleven twelve".split()
    for target in (1, 4, 9):
        end = _first_end_reaching(tok, words, 2, target)
        linear = next(e for e in range(3, len(words) + 1) if len(tok(" ".join(words[2:e]))["input_ids"]) >= target)
        assert end == linear


def test_padding_bound_is_the_ratio_of_padded_tokens():
    tok = tiny_tokenizer()
    prompts = mixed_prompts(tok, n=16, shortest=4, longest=40)
    plain = sum(b["input_ids"].numel() for b in padded_batches(tok, prompts, 4))
    ours = sum(b.input_ids.numel() for b in make_batches(encode(tok, prompts), 4, tok.pad_token_id))
    assert padding_bound(tok, prompts, 4) == plain / ours > 1.0
    same = [prompts[0]] * 8  # one length: nothing for sorting to gain
    assert padding_bound(tok, same, 4) == 1.0


def test_random_model_copies_the_architecture_not_the_weights(tmp_path):
    source = save_tiny_model("llama", tmp_path / "source", seed=0)
    a = build(source, tmp_path / "a", seed=1)
    b = build(source, tmp_path / "b", seed=1)
    model = load_model(str(a))
    assert model.n_layers == load_model(str(source)).n_layers
    wa, wb, w0 = (load_file(str(f / "model.safetensors")) for f in (a, b, source))
    assert wa.keys() == w0.keys()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)  # seeded: the same copy twice
    assert any(not torch.equal(wa[k], w0[k]) for k in wa)  # but not the source's weights
