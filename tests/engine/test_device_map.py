"""Hooks and edits on a model whose blocks accelerate has placed on several devices.

No GPU here, so the split is the one accelerate makes on any machine: some blocks on the CPU,
the others offloaded to disk and brought in by accelerate's own hooks at each forward. The
harness's hooks must see the same activations, apply the same edits, and return tensors on
the CPU, as on the undivided model.
"""

from __future__ import annotations

import torch
from accelerate import dispatch_model

from harness import Edit, RunContext
from harness.engine.models import from_hf
from tests.tiny_models import tiny_model, tiny_tokenizer

PROMPTS = ["Mary went to the kitchen.", "Two days from Monday is", "The apple"]


def contexts(tmp_path):
    whole = from_hf(tiny_model("llama"), tiny_tokenizer(), spec="whole")
    split_hf = tiny_model("llama")
    device_map = {
        "model.embed_tokens": "cpu",
        "model.layers.0": "cpu",
        "model.layers.1": "disk",
        "model.layers.2": "disk",
        "model.norm": "cpu",
        "model.rotary_emb": "cpu",
        "lm_head": "cpu",
    }
    split_hf = dispatch_model(split_hf, device_map=device_map, offload_dir=str(tmp_path / "offload"))
    assert next(split_hf.model.layers[1].parameters()).device.type == "meta"  # really offloaded: loaded per forward
    split = from_hf(split_hf, tiny_tokenizer(), spec="split")
    return RunContext(model=whole, batch_size=2, show_progress=False), RunContext(model=split, batch_size=2, show_progress=False)


def test_collect_score_and_edits_match_the_undivided_model(tmp_path):
    whole, split = contexts(tmp_path)
    sites = ["resid_post.0", "resid_post.2", "mlp_act.1", "attn_out.2"]
    a, b = whole.collect(PROMPTS, sites), split.collect(PROMPTS, sites)
    for s in sites:
        assert b[s].device.type == "cpu"
        torch.testing.assert_close(b[s], a[s], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(split.score(PROMPTS, [5, 6]).logits, whole.score(PROMPTS, [5, 6]).logits, atol=1e-5, rtol=1e-5)
    edits = [
        Edit("resid_post.1", "add", torch.ones(64)),
        Edit("mlp_act.2", "set", torch.tensor(3.0), dims=[1, 4], position="all"),
    ]
    with whole.intervene(edits), split.intervene(edits):
        torch.testing.assert_close(split.score(PROMPTS, [5, 6]).logits, whole.score(PROMPTS, [5, 6]).logits, atol=1e-5, rtol=1e-5)
        assert split.generate(PROMPTS, 3) == whole.generate(PROMPTS, 3)
    torch.testing.assert_close(split.score(PROMPTS, [5, 6]).logits, whole.score(PROMPTS, [5, 6]).logits, atol=1e-5, rtol=1e-5)
    lens_a, lens_b = whole.logit_lens(PROMPTS, [5, 6]), split.logit_lens(PROMPTS, [5, 6])
    torch.testing.assert_close(lens_b.logprobs, lens_a.logprobs, atol=1e-5, rtol=1e-5)
