"""Every layout in harness/engine/layout.py is checked against the real model it describes.

Hooks here are plain torch hooks, so the table is tested independently of the
site-collection code that relies on it.
"""

from __future__ import annotations

import types

import pytest
import torch

from harness.engine.layout import LAYOUTS, Layout, layout_for, resolve
from harness.errors import UsageError
from tests.tiny_models import TINY_CONFIGS, save_tiny_model, tiny_model, tiny_tokenizer

ARCHS = sorted(LAYOUTS)
PROMPTS = ["Let's do some day of the week math. Two days from Monday is", "Three months from May is"]


def _first(x):
    return x[0] if isinstance(x, tuple) else x


def _inputs():
    return tiny_tokenizer()(PROMPTS, padding=True, return_tensors="pt")


def _run_with_sites(model, layout: Layout):
    """One forward; per block: input, output, attn_out, mlp_out and mlp_act, as (batch, seq, width)."""
    blocks = resolve(model, layout.blocks)
    sites = [dict() for _ in blocks]
    handles = []

    def save(store, key, value, shape_like=None):
        value = value.detach().clone()
        if layout.mlp_flat and shape_like is not None:
            value = value.view(*shape_like.shape[:-1], -1)
        store[key] = value

    for store, block in zip(sites, blocks):

        def block_pre(mod, args, kwargs, store=store):
            save(store, "resid_pre", args[0] if args else kwargs["hidden_states"])

        def block_post(mod, args, kwargs, out, store=store):
            save(store, "resid_post", _first(out))

        handles += [
            block.register_forward_pre_hook(block_pre, with_kwargs=True),
            block.register_forward_hook(block_post, with_kwargs=True),
            resolve(block, layout.attn_out).register_forward_hook(
                lambda m, a, out, store=store: save(store, "attn_out", _first(out))
            ),
            resolve(block, layout.mlp_out).register_forward_hook(
                lambda m, a, out, store=store: save(store, "mlp_out", _first(out), store["resid_pre"])
            ),
            resolve(block, layout.mlp_down).register_forward_pre_hook(
                lambda m, args, store=store: save(store, "mlp_act", args[0], store["resid_pre"])
            ),
        ]
    try:
        with torch.no_grad():
            out = model(**_inputs(), output_hidden_states=True)
    finally:
        for h in handles:
            h.remove()
    return sites, out


# Config variants a layout must also describe, beside each architecture's default.
VARIANTS = [(a, {}) for a in ARCHS] + [("gpt_neox", {"use_parallel_residual": False})]


@pytest.fixture(params=VARIANTS, ids=lambda v: v[0] + "".join(f"-{k}={x}" for k, x in v[1].items()))
def arch(request):
    model_type, overrides = request.param
    model = tiny_model(model_type, **overrides)
    return model_type, model, layout_for(model)


def test_every_layout_has_a_tiny_model():
    assert set(LAYOUTS) == set(TINY_CONFIGS)


def test_paths_resolve(arch):
    _, model, layout = arch
    vocab = len(tiny_tokenizer())
    blocks = resolve(model, layout.blocks)
    assert isinstance(blocks, torch.nn.ModuleList) and len(blocks) == model.config.get_text_config().num_hidden_layers
    for path in (layout.attn_out, layout.mlp_out, layout.mlp_down):
        resolve(blocks[0], path)
    embed = resolve(model, layout.embed)
    assert isinstance(embed, torch.nn.Embedding) and embed.num_embeddings == vocab
    resolve(model, layout.final_norm)
    unembed = resolve(model, layout.unembed)
    assert isinstance(unembed, torch.nn.Linear) and unembed.out_features == vocab
    assert isinstance(layout.parallel, bool)
    assert layout.logit_softcap is None or isinstance(layout.logit_softcap, float)


def test_resid_post_is_resid_pre_plus_attn_plus_mlp(arch):
    _, model, layout = arch
    sites, out = _run_with_sites(model, layout)
    for L, s in enumerate(sites):
        assert s["attn_out"].shape == s["mlp_out"].shape == s["resid_pre"].shape
        torch.testing.assert_close(
            s["resid_post"], s["resid_pre"] + s["attn_out"] + s["mlp_out"], atol=1e-5, rtol=0, msg=lambda m: f"block {L}: {m}"
        )
    # The library's own hidden states: embeddings output, then every block but the last
    # (its last entry is after the final norm).
    hidden = out.hidden_states
    assert len(hidden) == len(sites) + 1
    torch.testing.assert_close(hidden[0], sites[0]["resid_pre"], atol=0, rtol=0)
    for L in range(len(sites) - 1):
        torch.testing.assert_close(hidden[L + 1], sites[L]["resid_post"], atol=0, rtol=0)


def test_mlp_act_has_the_mlp_width(arch):
    _, model, layout = arch
    config = model.config.get_text_config()
    width = (
        getattr(config, "intermediate_size", None)
        or getattr(config, "ffn_dim", None)
        or getattr(config, "n_inner", None)
        or 4 * config.hidden_size
    )
    sites, _ = _run_with_sites(model, layout)
    for s in sites:
        assert s["mlp_act"].shape == (*s["resid_pre"].shape[:-1], width)


def test_final_norm_then_unembed_gives_the_logits(arch):
    _, model, layout = arch
    sites, out = _run_with_sites(model, layout)
    with torch.no_grad():
        resid = sites[-1]["resid_post"]
        torch.testing.assert_close(resolve(model, layout.final_norm)(resid), out.hidden_states[-1])
        logits = resolve(model, layout.unembed)(resolve(model, layout.final_norm)(resid))
        if layout.logit_softcap is not None:
            logits = layout.logit_softcap * torch.tanh(logits / layout.logit_softcap)
    torch.testing.assert_close(logits, out.logits, atol=1e-5, rtol=1e-5)


def test_parallel_flag(arch):
    """Zeroing attention in block 0 changes that block's MLP output exactly when the block is sequential."""
    _, model, layout = arch
    block = resolve(model, layout.blocks)[0]
    clean, _ = _run_with_sites(model, layout)

    def zero(mod, args, out):
        return (torch.zeros_like(out[0]), *out[1:]) if isinstance(out, tuple) else torch.zeros_like(out)

    handle = resolve(block, layout.attn_out).register_forward_hook(zero)
    try:
        ablated, _ = _run_with_sites(model, layout)
    finally:
        handle.remove()
    assert torch.equal(ablated[0]["attn_out"], torch.zeros_like(ablated[0]["attn_out"]))
    mlp_unchanged = torch.allclose(clean[0]["mlp_out"], ablated[0]["mlp_out"], atol=1e-6)
    assert mlp_unchanged == layout.parallel


def test_softcap_is_resolved_from_the_config():
    assert layout_for(tiny_model("gemma2")).logit_softcap == 30.0
    assert layout_for(tiny_model("gemma3_text")).logit_softcap is None
    assert layout_for(tiny_model("llama")).logit_softcap is None


def test_unknown_architecture_is_a_usage_error():
    class FooForCausalLM(torch.nn.Module):
        config = types.SimpleNamespace(model_type="foo")

    with pytest.raises(UsageError) as err:
        layout_for(FooForCausalLM())
    assert str(err.value) == (
        "no layout for architecture FooForCausalLM (model_type 'foo'): add an entry to harness/engine/layout.py"
    )


def test_unknown_architecture_is_named_from_a_config_only_stand_in():
    stand_in = types.SimpleNamespace(config=types.SimpleNamespace(model_type="foo", architectures=["FooForCausalLM"]))
    with pytest.raises(UsageError, match=r"^no layout for architecture FooForCausalLM \(model_type 'foo'\)"):
        layout_for(stand_in)


def test_config_the_layout_does_not_describe_is_a_usage_error():
    model = tiny_model("opt")
    model.config.do_layer_norm_before = False  # OPT-350m's post-norm blocks
    with pytest.raises(UsageError, match="do_layer_norm_before"):
        layout_for(model)


def test_tokenizer_offsets_and_special_tokens():
    tok = tiny_tokenizer()
    assert tok.padding_side == "left"
    assert None not in (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id, tok.unk_token_id)
    enc = tok(PROMPTS, padding=True, return_offsets_mapping=True)
    ids, offsets = enc["input_ids"][0], enc["offset_mapping"][0]
    assert ids[0] == tok.bos_token_id
    pieces = [PROMPTS[0][a:b] for a, b in offsets]
    assert pieces[-2:] == ["Monday", "is"]
    assert enc["input_ids"][1][0] == tok.pad_token_id and enc["attention_mask"][1][0] == 0


def test_saved_tiny_model_loads_as_a_local_folder(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = save_tiny_model("llama", tmp_path / "llama")
    model, tok = AutoModelForCausalLM.from_pretrained(folder), AutoTokenizer.from_pretrained(folder)
    assert tok.padding_side == "left" and len(tok) == len(tiny_tokenizer())
    inputs = tok(PROMPTS, padding=True, return_tensors="pt")
    assert inputs["input_ids"][0, 0] == tok.bos_token_id
    with torch.no_grad():
        torch.testing.assert_close(model(**inputs).logits, tiny_model("llama")(**inputs).logits)
