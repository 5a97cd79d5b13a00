"""Sites and collect: our resid_post.L is the library's own hidden state, batched or not, for every layout."""

from __future__ import annotations

import pytest
import torch

from harness.engine.models import from_hf
from harness.engine.sites import collect, parse_site
from harness.errors import UsageError
from tests.tiny_models import TINY_CONFIGS, tiny_model, tiny_tokenizer

PROMPTS = [
    "Let's do some day of the week math. Two days from Monday is",
    "Three months from May is",
    "Hello",
    "One day from Sunday is the day after Sunday, which is",
]


def wrap(model_type: str, **overrides):
    return from_hf(tiny_model(model_type, **overrides), tiny_tokenizer(), spec=f"tiny-{model_type}")


def reference_hidden_states(model, prompt: str) -> tuple[torch.Tensor, ...]:
    ids = model.tokenizer(prompt, return_tensors="pt")
    with torch.no_grad():
        return model.hf(**ids, output_hidden_states=True).hidden_states


@pytest.mark.parametrize("model_type", sorted(TINY_CONFIGS))
def test_resid_post_equals_output_hidden_states(model_type):
    """hidden_states[L + 1] is the output of block L (the last one is taken after the final norm)."""
    model = wrap(model_type)
    n = model.n_layers
    sites = [f"resid_post.{L}" for L in range(n)]
    for batch_size in (1, len(PROMPTS)):
        acts = collect(model, PROMPTS, sites, positions="all", batch_size=batch_size)
        for i, prompt in enumerate(PROMPTS):
            ref = reference_hidden_states(model, prompt)
            for L in range(n - 1):
                torch.testing.assert_close(acts[f"resid_post.{L}"][i], ref[L + 1][0], atol=1e-4, rtol=1e-4)
            final_norm = model.hf.get_submodule(model.layout.final_norm)
            with torch.no_grad():
                normed = final_norm(acts[f"resid_post.{n - 1}"][i][None])[0]
            torch.testing.assert_close(normed, ref[n][0], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("model_type", ["llama", "gemma3_text", "gpt2", "bloom", "opt", "gpt_neox"])
def test_every_site_kind_batched_equals_alone(model_type):
    model = wrap(model_type)
    sites = ["resid_pre.0", "resid_pre.1", "attn_out.1", "mlp_out.1", "mlp_act.2", "resid_post.2", "logits"]
    batched = collect(model, PROMPTS, sites, positions="last", batch_size=4)
    for i, prompt in enumerate(PROMPTS):
        alone = collect(model, [prompt], sites, positions="last", batch_size=1)
        for s in sites:
            torch.testing.assert_close(batched[s][i], alone[s][0], atol=1e-4, rtol=1e-4)
    assert batched["mlp_act.2"].shape[-1] != model.d_model or model_type == "bloom"


def test_positions_pick_exactly_the_tokens_asked():
    model = wrap("llama")
    full = collect(model, PROMPTS, ["resid_post.1"], positions="all", batch_size=3)["resid_post.1"]
    first = collect(model, PROMPTS, ["resid_post.1"], positions=0, batch_size=3)["resid_post.1"]
    per_prompt = [1, 2, 0, 3]
    chosen = collect(model, PROMPTS, ["resid_post.1"], positions=per_prompt, batch_size=3)["resid_post.1"]
    last = collect(model, PROMPTS, ["resid_post.1"], positions="last", batch_size=3)["resid_post.1"]
    for i in range(len(PROMPTS)):
        torch.testing.assert_close(first[i], full[i][0])
        torch.testing.assert_close(chosen[i], full[i][per_prompt[i]])
        torch.testing.assert_close(last[i], full[i][-1])
    assert first.shape == (len(PROMPTS), model.d_model)


def test_forward_stops_after_the_deepest_layer_asked():
    model = wrap("llama")
    ran: list[int] = []
    handles = [b.register_forward_pre_hook(lambda mod, args, L=L: ran.append(L)) for L, b in enumerate(model.blocks)]
    lm_head_calls: list[int] = []
    handles.append(model.hf.lm_head.register_forward_hook(lambda *a: lm_head_calls.append(1)))
    try:
        collect(model, PROMPTS[:2], ["resid_post.0"], batch_size=2)
        assert ran == [0] and not lm_head_calls
        ran.clear()
        collect(model, PROMPTS[:2], ["resid_pre.1"], batch_size=2)
        assert ran == [0, 1]
        ran.clear()
        collect(model, PROMPTS[:2], ["mlp_act.1", "resid_post.0"], batch_size=2)
        assert ran == [0, 1] and not lm_head_calls
    finally:
        for h in handles:
            h.remove()


def test_results_hold_no_batch_memory_beyond_their_own_rows():
    """Each prompt's token rows own their storage (no padded batch kept alive behind a view), and a
    fixed-width result is one table written in place, batch by batch, in prompt order."""
    model = wrap(sorted(TINY_CONFIGS)[0])
    ragged = collect(model, PROMPTS, ["resid_post.0"], positions="all", batch_size=len(PROMPTS))["resid_post.0"]
    for rows in ragged:
        assert rows.untyped_storage().nbytes() == rows.numel() * rows.element_size()
    means = collect(model, PROMPTS, ["mlp_act.0", "resid_post.1"], positions="all", reduce="mean", batch_size=2)
    alone = [collect(model, [p], ["mlp_act.0"], positions="all", reduce="mean")["mlp_act.0"][0] for p in PROMPTS]
    assert means["mlp_act.0"].is_contiguous() and means["mlp_act.0"].shape[0] == len(PROMPTS)
    torch.testing.assert_close(means["mlp_act.0"], torch.stack(alone), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="at least one prompt"):
        collect(model, [], ["resid_post.0"])


def test_no_hook_is_left_behind():
    model = wrap("gpt2")
    before = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.hf.modules())
    collect(model, PROMPTS, ["resid_post.2", "mlp_act.1", "attn_out.0"], batch_size=2)
    after = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.hf.modules())
    assert before == after


def test_bad_site_names_are_usage_errors():
    with pytest.raises(UsageError, match="past the model's depth"):
        parse_site("resid_post.3", n_layers=3)
    with pytest.raises(UsageError, match="unknown site"):
        parse_site("resid_mid.1", n_layers=3)
    assert parse_site("mlp_act.2", 3).name == "mlp_act.2"


@pytest.mark.parametrize("model_type", ["llama", "gpt2", "opt", "bloom"])
def test_linear_sites_are_every_linear_layer_and_read_its_output(model_type):
    """linear.L.PATH is the output of one linear layer (GPT-2's Conv1D too), batched or not, flattened MLPs unflattened."""
    from harness.engine.sites import is_linear, linear_sites, out_units

    model = wrap(model_type)
    names = linear_sites(model, 1)
    block = model.blocks[1]
    expected = [p for p, m in block.named_modules() if p and (isinstance(m, torch.nn.Linear) or type(m).__name__ == "Conv1D")]
    assert [n.split(".", 2)[2] for n in names] == expected and len(names) >= 4
    seen: dict[str, torch.Tensor] = {}
    handles = [
        block.get_submodule(p).register_forward_hook(lambda mod, args, out, p=p: seen.__setitem__(p, out.detach().clone()))
        for p in expected
    ]
    try:
        for i, prompt in enumerate(PROMPTS):
            acts = collect(model, PROMPTS, names, positions="last", batch_size=4)
            alone = collect(model, [prompt], names, positions="all", batch_size=1)
            for name, path in zip(names, expected):
                module = block.get_submodule(path)
                assert is_linear(module) and acts[name].shape == (len(PROMPTS), out_units(module))
                ref = seen[path].reshape(-1, out_units(module))  # the hook saw the lone prompt last
                torch.testing.assert_close(alone[name][0], ref, atol=1e-5, rtol=0)
                torch.testing.assert_close(acts[name][i], ref[-1], atol=1e-4, rtol=1e-4)
    finally:
        for h in handles:
            h.remove()


def test_linear_site_of_the_down_projection_is_the_mlp_output_and_can_be_edited():
    from harness.engine.intervene import Edit, intervene
    from harness.engine.scoring import score

    model = wrap("llama")
    both = collect(model, PROMPTS, ["linear.1.mlp.down_proj", "mlp_out.1"], positions="last", batch_size=2)
    torch.testing.assert_close(both["linear.1.mlp.down_proj"], both["mlp_out.1"])
    plain = score(model, PROMPTS, [5] * len(PROMPTS), batch_size=2)
    with intervene(model, [Edit("linear.0.self_attn.v_proj", "set", torch.tensor([4.0, -4.0]), position="all", dims=[0, 1])]):
        edited = collect(model, PROMPTS, ["linear.0.self_attn.v_proj"], positions="all", batch_size=2)
        forced = score(model, PROMPTS, [5] * len(PROMPTS), batch_size=2)
    for acts in edited["linear.0.self_attn.v_proj"]:
        assert torch.equal(acts[:, :2], torch.tensor([4.0, -4.0]).expand(len(acts), 2))
    assert not torch.allclose(plain.logits, forced.logits)


def test_bad_linear_sites_name_the_block_s_linear_layers():
    model = wrap("llama")
    with pytest.raises(UsageError, match=r"not a linear layer of block 0: use one of linear\.0\.self_attn\.q_proj"):
        collect(model, PROMPTS[:1], ["linear.0.mlp.act_fn"])
    with pytest.raises(UsageError, match="not a linear layer"):
        collect(model, PROMPTS[:1], ["linear.0.no_such.module"])
    with pytest.raises(UsageError, match="past the model's depth"):
        parse_site("linear.9.mlp.up_proj", n_layers=3)
    assert parse_site("linear.2.mlp.up_proj", 3).name == "linear.2.mlp.up_proj"
