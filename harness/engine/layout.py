"""Where things are inside a Hugging Face causal LM, per architecture.

One `Layout` per `config.model_type`: module paths only, no code paths. Paths are
dotted names for `torch.nn.Module.get_submodule`; `blocks`, `embed`, `final_norm` and
`unembed` start at the *ForCausalLM model, the others at one block.

Site conventions the table encodes (checked per architecture in tests/engine/test_layout.py):
  resid_post.L = output of block L (first element if the block returns a tuple)
               = input of block L + output of attn_out + output of mlp_out
  mlp_act.L    = input of mlp_down (after the nonlinearity, and after gating)
  logits       = unembed(final_norm(resid_post.last)), then softcapped when
                 `logit_softcap` is set: c * tanh(logits / c)

Notes for hook writers (transformers 5):
  - Blocks receive the residual stream as their first positional argument.
  - BLOOM blocks return a tuple (hidden_states, attention weights); the others a tensor.
  - Attention modules return (output, weights); hook attn_out, which is a tensor
    wherever the attention module itself is not the site (Gemma 2/3, BLOOM, OPT...).
  - `mlp_flat` (OPT): the MLP runs on a (batch * seq, width) view, so mlp_act and
    mlp_out arrive flattened; reshape to (batch, seq, width).
  - BLOOM's residual stream starts after `word_embeddings_layernorm`, and Gemma's and
    XGLM's embedding modules already include the sqrt(d_model) scaling, so the input of
    block 0 is the place to read resid_pre.0, not the output of `embed`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch

from harness.errors import UsageError


@dataclass(frozen=True)
class Layout:
    blocks: str  # from the CausalLM to the ModuleList of transformer blocks
    embed: str  # token embedding module, from the CausalLM
    attn_out: str  # in a block: its OUTPUT is exactly what attention adds to the residual
    mlp_out: str  # in a block: its OUTPUT is exactly what the MLP adds to the residual
    mlp_down: str  # in a block: MLP down projection; its INPUT is mlp_act
    final_norm: str  # from the CausalLM
    unembed: str  # from the CausalLM
    # Attention and MLP read the same block input. In LAYOUTS this may be the name of
    # a boolean config attribute; layout_for() returns it resolved to a bool.
    parallel: bool | str = False
    # Final logit softcapping c (logits = c * tanh(logits / c)), or None. In LAYOUTS
    # this may be the name of a config attribute; layout_for() resolves it.
    logit_softcap: float | str | None = None
    # mlp_act / mlp_out are computed on a (batch * seq, width) view (OPT).
    mlp_flat: bool = False
    # (config attribute, value) pairs the paths above assume; layout_for() refuses a
    # model whose config differs (e.g. OPT-350m's post-norm blocks).
    requires: tuple[tuple[str, object], ...] = ()


def _llama_like(**overrides) -> Layout:
    """Pre-norm blocks at model.layers with self_attn / mlp.down_proj (Llama family)."""
    fields: dict[str, Any] = dict(
        blocks="model.layers",
        embed="model.embed_tokens",
        attn_out="self_attn",
        mlp_out="mlp",
        mlp_down="mlp.down_proj",
        final_norm="model.norm",
        unembed="lm_head",
    )
    fields.update(overrides)
    return Layout(**fields)


# Gemma 2 / Gemma 3 / OLMo 2 norm each sublayer's output before adding it back.
_SANDWICH = dict(attn_out="post_attention_layernorm", mlp_out="post_feedforward_layernorm")

LAYOUTS: dict[str, Layout] = {
    "llama": _llama_like(),
    "mistral": _llama_like(),
    "qwen2": _llama_like(),
    "qwen3": _llama_like(),
    "olmo": _llama_like(),
    "gemma": _llama_like(),
    "phi3": _llama_like(),  # fused gate_up_proj; mlp_act is still the input of down_proj
    "gemma2": _llama_like(**_SANDWICH, logit_softcap="final_logit_softcapping"),
    "gemma3_text": _llama_like(**_SANDWICH, logit_softcap="final_logit_softcapping"),
    # Multimodal Gemma 3 checkpoint, run on text. Gemma3ForConditionalGeneration does
    # not apply final_logit_softcapping (it is None in released configs anyway).
    "gemma3": _llama_like(
        **_SANDWICH,
        blocks="model.language_model.layers",
        embed="model.language_model.embed_tokens",
        final_norm="model.language_model.norm",
    ),
    "olmo2": _llama_like(**_SANDWICH),
    "starcoder2": _llama_like(mlp_down="mlp.c_proj"),
    "phi": _llama_like(mlp_down="mlp.fc2", final_norm="model.final_layernorm", parallel=True),
    "gpt2": Layout(
        blocks="transformer.h",
        embed="transformer.wte",
        attn_out="attn",
        mlp_out="mlp",
        mlp_down="mlp.c_proj",  # Conv1D
        final_norm="transformer.ln_f",
        unembed="lm_head",
        requires=(("add_cross_attention", False),),
    ),
    "gptj": Layout(
        blocks="transformer.h",
        embed="transformer.wte",
        attn_out="attn",
        mlp_out="mlp",
        mlp_down="mlp.fc_out",
        final_norm="transformer.ln_f",
        unembed="lm_head",
        parallel=True,
    ),
    "gpt_neox": Layout(
        blocks="gpt_neox.layers",
        embed="gpt_neox.embed_in",
        attn_out="attention",
        mlp_out="mlp",
        mlp_down="mlp.dense_4h_to_h",
        final_norm="gpt_neox.final_layer_norm",
        unembed="lm_head",
        parallel="use_parallel_residual",
    ),
    # BLOOM's attention and MLP modules add the residual themselves (dropout_add), so
    # the sites are their output projections.
    "bloom": Layout(
        blocks="transformer.h",
        embed="transformer.word_embeddings",
        attn_out="self_attention.dense",
        mlp_out="mlp.dense_4h_to_h",
        mlp_down="mlp.dense_4h_to_h",
        final_norm="transformer.ln_f",
        unembed="lm_head",
        requires=(("apply_residual_connection_post_layernorm", False), ("slow_but_exact", False)),
    ),
    # OPT and XGLM keep the MLP on the block: fc1 -> act -> fc2.
    "opt": Layout(
        blocks="model.decoder.layers",
        embed="model.decoder.embed_tokens",
        attn_out="self_attn",
        mlp_out="fc2",
        mlp_down="fc2",
        final_norm="model.decoder.final_layer_norm",
        unembed="lm_head",
        mlp_flat=True,
        requires=(("do_layer_norm_before", True), ("_remove_final_layer_norm", False)),
    ),
    "xglm": Layout(
        blocks="model.layers",
        embed="model.embed_tokens",
        attn_out="self_attn",
        mlp_out="fc2",
        mlp_down="fc2",
        final_norm="model.layer_norm",
        unembed="lm_head",
        requires=(("add_cross_attention", False),),
    ),
}


def layout_for(model) -> Layout:
    """The layout of `model`, with config-dependent fields resolved for its config."""
    config = model.config
    model_type = getattr(config, "model_type", None)
    layout = LAYOUTS.get(model_type) if isinstance(model_type, str) else None
    if layout is None:
        # A config-only stand-in (checked before loading weights) names its architecture in the config.
        arch = type(model).__name__
        if not isinstance(model, torch.nn.Module):
            arch = (getattr(config, "architectures", None) or [arch])[0]
        raise UsageError(
            f"no layout for architecture {arch} (model_type '{model_type}'): add an entry to harness/engine/layout.py"
        )
    for attr, expected in layout.requires:
        if getattr(config, attr, expected) != expected:
            raise UsageError(
                f"the {model_type} layout assumes config.{attr} == {expected!r}, but this model has "
                f"{getattr(config, attr)!r}: add a layout for it to harness/engine/layout.py"
            )
    resolved: dict[str, Any] = {}
    if isinstance(layout.parallel, str):
        resolved["parallel"] = bool(getattr(config, layout.parallel))
    if isinstance(layout.logit_softcap, str):
        resolved["logit_softcap"] = getattr(config, layout.logit_softcap, None)
    return dataclasses.replace(layout, **resolved) if resolved else layout


def resolve(module: torch.nn.Module, path: str) -> torch.nn.Module:
    """The submodule at dotted `path` under `module` ("" is the module itself)."""
    return module.get_submodule(path)
